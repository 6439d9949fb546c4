"""What the web UI's pages show, as plain values: pure, from the catalog's archives, the
scheduler's tasks, the jobs running now and each job's last attempt. The templates only lay
these out (times in the configured zone, with UTC for the hover title)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from db_backup.catalog import Archive
from db_backup.config.schema import BackupConfig, Config
from db_backup.plan import server_of
from db_backup.schedule import Schedule, missed
from db_backup.units import format_bytes, format_duration

NOTHING = "\u2013"  # an en dash: the empty cell
# Status of a job, and what says it besides colour (the icon is text, for screen readers too).
STATUS_TEXT = {
    "failed": ("✗", "failed"),
    "overdue": ("⏰", "overdue"),
    "running": ("⟳", "running"),
    "ok": ("✓", "ok"),
    "none": (NOTHING, "no backup yet"),
}
# Failing first, then overdue, running, fine, never run.
_ORDER = {"failed": 0, "overdue": 1, "running": 2, "ok": 3, "none": 4}


@dataclass(frozen=True)
class Moment:
    """A time as shown: in the configured zone, and in UTC for the title."""

    local: str
    utc: str
    ago: str

    @classmethod
    def of(cls, when: datetime, zone: tzinfo, now: datetime) -> Moment:
        seconds = max(0.0, (now - when).total_seconds())
        return cls(
            when.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
            when.strftime("%Y-%m-%d %H:%M:%S UTC"),
            f"{format_duration(seconds)} ago",
        )


@dataclass(frozen=True)
class Attempted:
    """A job's last attempt, as serve saw it (success, or the error)."""

    at: datetime
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class JobRow:
    """One line of the dashboard."""

    job: str
    backup: str
    engine: str
    server: str
    database: str
    schedule: str
    next_run: Moment | None
    last: Moment | None
    size: str
    duration: str
    status: str  # a key of STATUS_TEXT
    error: str | None
    restore_test: str
    targets: tuple[str, ...]
    # for sorting by column
    last_at: datetime | None = None
    stored_bytes: int = 0
    seconds: float = 0.0

    @property
    def icon(self) -> str:
        return STATUS_TEXT[self.status][0]

    @property
    def status_text(self) -> str:
        return STATUS_TEXT[self.status][1]


@dataclass(frozen=True)
class Totals:
    jobs: int
    failing: int
    overdue: int
    running: int
    stored: str


@dataclass(frozen=True)
class BackupLine:
    """One backup of a job on one target, for its page."""

    taken: Moment
    target: str
    file: str
    raw: str
    stored: str
    duration: str
    checks: str
    restore_test: str


@dataclass(frozen=True)
class JobPage:
    row: JobRow
    backups: list[BackupLine] = field(default_factory=list)
    failures: list[tuple[Moment, str]] = field(default_factory=list)
    chart: str = ""  # an SVG of size and duration over time, or ""


def _restore_test(archive: Archive | None) -> str:
    tested = archive.restore_test if archive is not None else None
    if tested is None:
        return "never"
    return "OK" if tested.ok else f"FAILED: {'; '.join(tested.problems)}"


def backup_of(config: Config, job: str) -> BackupConfig | None:
    """The backup a job belongs to: the one of that name, else the `"*"` backup whose
    database it is (`<backup>.<database>`); None when neither is configured."""
    for backup in config.backups:
        if job == backup.name:
            return backup
    for backup in config.backups:
        if backup.is_wildcard and job.startswith(f"{backup.name}."):
            return backup
    return None


def job_rows(
    config: Config,
    archives: Sequence[Archive],
    schedules: Mapping[str, tuple[Schedule, datetime]],
    running: set[str],
    attempts: Mapping[str, Attempted],
    zone: tzinfo,
    now: datetime,
) -> list[JobRow]:
    """Every job: each configured backup (a `"*"` one: each database it has backed up), with
    its newest backup, schedule, next run (`schedules`: backup → (schedule, next start)),
    and state. Failing first, then overdue, running, fine, never backed up."""
    newest: dict[str, Archive] = {}
    held: dict[str, set[str]] = {}
    for stored in archives:
        if stored.record.kind != "database":
            continue
        held.setdefault(stored.job, set()).add(stored.target)
        if stored.job not in newest or stored.taken_at > newest[stored.job].taken_at:
            newest[stored.job] = stored
    names = set(newest) | {b.name for b in config.backups if not b.is_wildcard}
    rows = []
    for job in names:
        backup = backup_of(config, job)
        if backup is None:
            continue  # no longer configured
        archive = newest.get(job)
        scheduled = schedules.get(backup.name)
        attempt = attempts.get(job)
        if job in running:
            status = "running"
        elif attempt is not None and not attempt.ok:
            status = "failed"
        elif scheduled is not None and missed(
            scheduled[0], archive.taken_at if archive else None, now
        ):
            status = "overdue" if archive is not None else "none"
        else:
            status = "ok" if archive is not None else "none"
        record = archive.record if archive is not None else None
        rows.append(
            JobRow(
                job=job,
                backup=backup.name,
                engine=backup.engine,
                server=str(server_of(backup)),
                database=archive.database if archive else backup.database,
                schedule=scheduled[0].text if scheduled else "not scheduled",
                next_run=Moment.of(scheduled[1], zone, now) if scheduled else None,
                last=Moment.of(archive.taken_at, zone, now) if archive else None,
                size=format_bytes(archive.stored_bytes) if archive else "",
                duration=format_duration(record.duration_seconds) if record else "",
                status=status,
                error=attempt.error if attempt is not None and not attempt.ok else None,
                restore_test=_restore_test(archive),
                targets=tuple(sorted(held.get(job, ()))),
                last_at=archive.taken_at if archive else None,
                stored_bytes=archive.stored_bytes if archive else 0,
                seconds=record.duration_seconds if record else 0.0,
            )
        )
    return sorted(rows, key=lambda row: (_ORDER[row.status], row.job))


# The dashboard's sortable columns: name → (key, newest/largest first?).
SORTS: dict[str, tuple[Callable[[JobRow], Any], bool]] = {
    "status": (lambda r: (_ORDER[r.status], r.job), False),
    "job": (lambda r: r.job, False),
    "server": (lambda r: (r.server, r.job), False),
    "last": (lambda r: r.last_at or datetime.min.replace(tzinfo=UTC), True),
    "size": (lambda r: r.stored_bytes, True),
    "duration": (lambda r: r.seconds, True),
}


def sorted_by(rows: Sequence[JobRow], column: str) -> list[JobRow]:
    """The rows by one of SORTS (an unknown column: by status, failing first)."""
    key, reverse = SORTS.get(column, SORTS["status"])
    return sorted(rows, key=key, reverse=reverse)


def filtered(rows: Sequence[JobRow], query: str) -> list[JobRow]:
    """The rows whose job, database or server holds `query` (case-insensitive)."""
    wanted = query.strip().lower()
    if not wanted:
        return list(rows)
    return [r for r in rows if wanted in f"{r.job} {r.database} {r.server}".lower()]


def totals(rows: Sequence[JobRow], archives: Sequence[Archive]) -> Totals:
    return Totals(
        jobs=len(rows),
        failing=sum(row.status == "failed" for row in rows),
        overdue=sum(row.status == "overdue" for row in rows),
        running=sum(row.status == "running" for row in rows),
        stored=format_bytes(sum(archive.stored_bytes for archive in archives)),
    )


def job_page(
    row: JobRow,
    archives: Sequence[Archive],
    failures: Sequence[tuple[datetime, str]],
    zone: tzinfo,
    now: datetime,
) -> JobPage:
    """A job's page: every backup on every target, newest first; its last failures."""
    mine = sorted((a for a in archives if a.job == row.job), key=lambda a: a.taken_at, reverse=True)
    lines = [
        BackupLine(
            taken=Moment.of(a.taken_at, zone, now),
            target=a.target,
            file=a.name,
            raw=format_bytes(a.raw_bytes),
            stored=format_bytes(a.stored_bytes),
            duration=format_duration(a.record.duration_seconds),
            checks=", ".join(a.checks) or "none",
            restore_test=_restore_test(a),
        )
        for a in mine
    ]
    return JobPage(
        row,
        lines,
        [(Moment.of(at, zone, now), error) for at, error in failures],
        chart=size_chart(mine),
    )


def size_chart(archives: Sequence[Archive], width: int = 480, height: int = 120) -> str:
    """A small SVG: stored size (bars) and duration (line) of each backup, oldest to newest;
    "" with fewer than two backups. Every value is a number we computed: no text from the
    config or the dumps goes into it."""
    points = sorted({a.taken_at: a for a in archives}.values(), key=lambda a: a.taken_at)
    if len(points) < 2:
        return ""
    top_size = max(a.stored_bytes for a in points) or 1
    top_time = max(a.record.duration_seconds for a in points) or 1.0
    step = width / len(points)
    bars = []
    line = []
    for index, archive in enumerate(points):
        bar = (height - 10) * archive.stored_bytes / top_size
        x = index * step
        bars.append(
            f'<rect x="{x + 1:.1f}" y="{height - bar:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{bar:.1f}" class="size"/>'
        )
        y = height - (height - 10) * archive.record.duration_seconds / top_time
        line.append(f"{x + step / 2:.1f},{y:.1f}")
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="stored size (bars) and duration (line) of the last {len(points)} backups">'
        + "".join(bars)
        + f'<polyline points="{" ".join(line)}" class="duration"/></svg>'
    )
