"""What a fleet run stored, from the catalog alone: every job the config expects, and whether
a backup of it was committed since a moment — whichever runner (shard) committed it.

Pure: the catalog's archives and the config's jobs in, a summary out (`db-backup report`).
The shards of a fleet run share nothing but the bucket, so this is where their work adds up:
one summary, and one notification, instead of one per shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from db_backup.catalog import Archive

# A `database: "*"` job counts as expected when the catalog has a backup of it this recent
# before `since`: a database dropped a week ago stops being reported missing.
WILDCARD_MEMORY = timedelta(days=7)


@dataclass(frozen=True)
class JobSummary:
    """One expected job: its newest backup since the moment, on every target that has it."""

    job: str
    backed_up: bool
    taken_at: datetime | None = None
    raw_bytes: int = 0
    stored_bytes: int = 0  # on every target together
    locations: tuple[str, ...] = ()


@dataclass(frozen=True)
class FleetSummary:
    since: datetime
    jobs: tuple[JobSummary, ...]  # by name

    @property
    def missing(self) -> tuple[JobSummary, ...]:
        return tuple(job for job in self.jobs if not job.backed_up)

    @property
    def stored_bytes(self) -> int:
        return sum(job.stored_bytes for job in self.jobs)


def expected_jobs(
    configured: Iterable[str],
    wildcards: Iterable[str],
    archives: Sequence[Archive],
    since: datetime,
) -> list[str]:
    """The jobs the config names, and the jobs of its `database: "*"` backups (their names
    start with the backup's) that have a backup since WILDCARD_MEMORY before `since`."""
    prefixes = tuple(f"{name}." for name in wildcards)
    recent = since - WILDCARD_MEMORY
    found = {a.job for a in archives if a.job.startswith(prefixes) and a.taken_at >= recent}
    return sorted(set(configured) | found)


def summarize(
    expected: Iterable[str], archives: Sequence[Archive], since: datetime
) -> FleetSummary:
    """For each expected job, its newest backup taken at or after `since` (the same backup on
    several targets counts once, its locations listed), or that there is none."""
    newest: dict[str, list[Archive]] = {}
    for archive in archives:
        if archive.taken_at < since:
            continue
        kept = newest.get(archive.job)
        if kept is None or archive.taken_at > kept[0].taken_at:
            newest[archive.job] = [archive]
        elif archive.taken_at == kept[0].taken_at:
            kept.append(archive)
    jobs = []
    for job in sorted(set(expected)):
        copies = newest.get(job)
        if not copies:
            jobs.append(JobSummary(job, backed_up=False))
            continue
        jobs.append(
            JobSummary(
                job,
                backed_up=True,
                taken_at=copies[0].taken_at,
                raw_bytes=copies[0].raw_bytes,
                stored_bytes=sum(copy.stored_bytes for copy in copies),
                locations=tuple(copy.location for copy in copies),
            )
        )
    return FleetSummary(since, tuple(jobs))
