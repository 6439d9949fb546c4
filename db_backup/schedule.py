"""When scheduled work is due: cron expressions in a time zone, intervals, jitter, catch-up.
Pure: every function takes the moment it reasons about; times in and out are aware UTC.

Cron expressions are evaluated by cronsim in the configured zone, which gets daylight-saving
nights right where croniter does not (measured here: for `30 2 * * *` in Europe/Berlin on
the fall-back night croniter fires at 02:30 CEST and again at 02:30 CET; cronsim once; on the
spring-forward night cronsim fires at 03:00, as cron implementations that handle DST do).

`@every <duration>` (e.g. `@every 6h`, `@every 90s`) runs at fixed intervals counted from the
Unix epoch in UTC, so every process agrees on the slots whatever the zone; it is also how the
tests express schedules of a few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from db_backup.units import parse_duration

if TYPE_CHECKING:
    from db_backup.config.schema import Config

EVERY = "@every"
# A fall-back hour, and a bound on cronsim's steps (a schedule of every minute needs ~120).
_REPEATED_HOUR = timedelta(hours=2, seconds=1)
_MAX_STEPS = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# cronsim's own shorthands, named for the messages.
_NAMED = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


class Schedule(Protocol):
    """A sequence of due times."""

    @property
    def text(self) -> str:
        """As configured, for people."""
        ...

    def next_after(self, moment: datetime) -> datetime:
        """The first due time strictly after `moment`."""
        ...

    def last_due(self, moment: datetime) -> datetime | None:
        """The latest due time at or before `moment` (None: never yet)."""
        ...


@dataclass(frozen=True)
class CronSchedule:
    """A standard 5-field cron expression (or @daily, @hourly…) in `zone`."""

    text: str
    zone: ZoneInfo

    def next_after(self, moment: datetime) -> datetime:
        from cronsim import CronSim

        # cronsim walks wall-clock time: inside a repeated (fall-back) hour it can answer
        # the first pass of a time that is already over. Skip to one truly after `moment`.
        times = CronSim(self.text, moment.astimezone(self.zone))
        for found in itertools.islice(times, _MAX_STEPS):
            if found.astimezone(UTC) > moment:
                return found.astimezone(UTC)
        raise ValueError(f"{self.text!r}: no time after {moment.isoformat()}")

    def last_due(self, moment: datetime) -> datetime | None:
        from cronsim import CronSim

        # Walk back from a little later (a repeated hour may hold earlier instants with later
        # wall-clock times), taking the first due time at or before `moment`.
        start = (moment + _REPEATED_HOUR).astimezone(self.zone).replace(microsecond=0)
        for found in itertools.islice(CronSim(self.text, start, reverse=True), _MAX_STEPS):
            if found.astimezone(UTC) <= moment:
                return found.astimezone(UTC)
        return None


@dataclass(frozen=True)
class IntervalSchedule:
    """`@every <duration>`: every `seconds`, on slots counted from the Unix epoch (in whole
    microseconds, so a fractional interval has no off-by-one at its slots)."""

    text: str
    seconds: float

    @property
    def _step(self) -> int:
        return round(self.seconds * 1_000_000)

    def next_after(self, moment: datetime) -> datetime:
        elapsed = (moment - _EPOCH) // timedelta(microseconds=1)
        return _EPOCH + timedelta(microseconds=(elapsed // self._step + 1) * self._step)

    def last_due(self, moment: datetime) -> datetime | None:
        elapsed = (moment - _EPOCH) // timedelta(microseconds=1)
        return _EPOCH + timedelta(microseconds=elapsed // self._step * self._step)


@dataclass(frozen=True)
class ManualSchedule:
    """Never due: a task that runs only when asked (the web UI's "run now")."""

    text: str = "not scheduled"

    def next_after(self, moment: datetime) -> datetime:
        return datetime.max.replace(tzinfo=UTC)

    def last_due(self, moment: datetime) -> datetime | None:
        return None


MANUAL = ManualSchedule()


def parse_schedule(text: str, zone: ZoneInfo) -> Schedule:
    """A schedule from its config text; ValueError saying what is wrong."""
    stripped = " ".join(text.split())
    if stripped.startswith(EVERY):
        rest = stripped[len(EVERY) :].strip()
        try:
            seconds = parse_duration(rest)
        except ValueError:
            raise ValueError(f"{EVERY} takes a duration, like '{EVERY} 6h': got {rest!r}") from None
        if seconds < 1:
            raise ValueError(f"{EVERY}: at least 1s, got {rest!r}")
        return IntervalSchedule(stripped, seconds)
    from cronsim import CronSim, CronSimError

    try:
        CronSim(stripped, datetime.now(zone))
    except CronSimError as exc:
        raise ValueError(
            f"not a cron expression ({exc}): expected 5 fields 'minute hour day month "
            f"weekday' like '0 2 * * *', one of {', '.join(_NAMED)}, or '{EVERY} 6h'"
        ) from None
    return CronSchedule(stripped, zone)


def parse_zone(name: str | None) -> ZoneInfo:
    """The configured zone (None: the machine's own); ValueError naming a bad one."""
    if name is None:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (e.g. Europe/Berlin, UTC)") from None


def local_zone() -> ZoneInfo:
    """The machine's zone: TZ, else what /etc/localtime links to, else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        target = os.path.realpath("/etc/localtime")
        candidates.append(target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "")
    for name in candidates:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            if name:
                return ZoneInfo(name)
    return ZoneInfo("UTC")


def jitter_offset(key: str, due: datetime, jitter: float) -> timedelta:
    """A start delay in [0, jitter) seconds for the run of `key` due at `due`: spread out,
    but the same for the same slot, so a restart neither moves nor repeats it."""
    if jitter <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{key}\0{due.isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(seconds=fraction * jitter)


def missed(schedule: Schedule, last_success: datetime | None, now: datetime) -> bool:
    """After downtime: is the latest due time at or before `now` later than the last
    successful run (so the work runs once now, however many slots were missed)?"""
    due = schedule.last_due(now)
    if due is None:
        return False
    return last_success is None or last_success < due


@dataclass(frozen=True)
class Task:
    """Work `serve` fires on a schedule: one backup (all of its jobs), the restore tests of
    every job's newest backup (`verify:`), or every retention policy (`prune:`)."""

    kind: str  # "backup" | "verify" | "prune"
    name: str  # the backup's name; "verify" or "prune"
    schedule: Schedule
    jitter: float = 0.0

    def start(self, due: datetime) -> datetime:
        """When the run due at `due` starts: `due` plus this task's jitter for that slot."""
        return due + jitter_offset(f"{self.kind}:{self.name}", due, self.jitter)


def tasks_of(config: Config) -> list[Task]:
    """Everything the config schedules, in config order (backups, then verify, then prune)."""
    zone = parse_zone(config.timezone)
    tasks = [
        Task("backup", backup.name, parse_schedule(backup.schedule, zone), backup.jitter or 0.0)
        for backup in config.backups
        if backup.schedule is not None
    ]
    for kind, text in (("verify", config.verify.schedule), ("prune", config.prune.schedule)):
        if text is not None:
            tasks.append(Task(kind, kind, parse_schedule(text, zone)))
    return tasks
