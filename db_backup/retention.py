"""Which backups a retention policy keeps. Pure: (backups, policy, now) → decisions.

Semantics follow restic's and borg's (grandfather-father-son): `keep_last N` keeps the N
newest; `keep_hourly N` (daily, weekly, monthly, yearly alike) keeps the newest backup of each
of the N most recent hours that have backups; `max_age` keeps everything younger. A backup
kept by any rule stays, and every rule that kept it is named. The newest backup is always
kept, whatever the policy says, and a policy with no rule keeps everything: deleting needs a
rule that says so. A backup dated in the future is kept and not counted (see `decide`).
Periods are UTC calendar periods; weeks are ISO weeks.

Applying it is prune.py's job: per job and per target, only to that job's own backups.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from db_backup.config.schema import RetentionConfig

Period = Callable[[datetime], tuple[int, ...]]

# How far ahead of this machine's clock a backup may be dated and still count as taken now
# (clocks of machines sharing a bucket differ a little); beyond it, it is "in the future".
CLOCK_SKEW = timedelta(minutes=10)
FUTURE = "dated in the future"

PERIODS: dict[str, Period] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


@dataclass(frozen=True)
class ArchiveDate:
    """What retention needs to know of an archive (a stored backup): which one, and when it
    was taken."""

    id: str  # a file name or object key
    taken_at: datetime  # timezone-aware


@dataclass(frozen=True)
class Decision:
    archive: ArchiveDate
    keep: bool
    reasons: tuple[str, ...] = field(default=())  # the rules that kept it; empty when deleted


def is_future(taken_at: datetime, now: datetime) -> bool:
    """Is a backup dated after `now`, by more than clocks may differ?"""
    return taken_at > now + CLOCK_SKEW


def decide(
    archives: Sequence[ArchiveDate],
    policy: RetentionConfig,
    now: datetime,
    *,
    keep: Collection[str] = (),
) -> list[Decision]:
    """A decision for every archive, newest first. `keep`: ids kept whatever the policy says
    (the archive the run just made).

    An archive dated after `now` (by more than CLOCK_SKEW: a clock that jumped, another
    machine's clock) is kept and left out of the counting: otherwise two archives dated 2031
    would hold `keep_last 2` and make every new archive deletable the moment it commits."""
    future = [b for b in archives if is_future(b.taken_at, now)]
    present = [b for b in archives if not is_future(b.taken_at, now)]
    ordered = sorted(present, key=lambda b: (b.taken_at, b.id), reverse=True)
    reasons: dict[str, list[str]] = {b.id: [] for b in archives}
    for archive in future:
        reasons[archive.id].append(FUTURE)
    for archive in archives:
        if archive.id in keep:
            reasons[archive.id].append("just made")
    if ordered:
        reasons[ordered[0].id].append("newest")
    if policy.is_empty:
        for archive in ordered:
            reasons[archive.id].append("no retention policy")
    for archive in ordered[: policy.keep_last]:
        reasons[archive.id].append(f"keep_last {policy.keep_last}")
    for name, period in PERIODS.items():
        count = getattr(policy, f"keep_{name}")
        seen: set[tuple[int, ...]] = set()
        for archive in ordered:  # newest first: the first one met in a period is its newest
            if len(seen) >= count:
                break
            bucket = period(archive.taken_at.astimezone(UTC))
            if bucket not in seen:
                seen.add(bucket)
                reasons[archive.id].append(f"keep_{name} {count}")
    if policy.max_age is not None:
        for archive in ordered:
            if (now - archive.taken_at).total_seconds() < policy.max_age:
                reasons[archive.id].append("max_age")
    newest_first = sorted(archives, key=lambda b: (b.taken_at, b.id), reverse=True)
    return [Decision(b, bool(reasons[b.id]), tuple(reasons[b.id])) for b in newest_first]
