"""Sharding one run over N runners (issue 19, first step): which jobs are shard I's. Pure.

Every runner computes the same partition from the same inputs, with no communication: the
jobs with the size each had last time (raw bytes from the catalog; unknown sizes count as the
median of the known ones), assigned longest first — ties by job name — each to the shard with
the least work so far (ties: the lowest index). This greedy keeps the largest shard within
one job of the mean (and within 4/3 of the best possible), so the runners finish at about
the same time.

A database that `database: "*"` finds and the catalog does not know yet (it appeared since
the last backup) must not move anyone else's: runners that list the server a moment apart
may see it or not, and if its arrival reshuffled the greedy, one job could land in two
runners' shards and another in none. So such a newcomer is placed by a hash of its name
alone (`newcomer_shard`): the runner it falls to takes it if its listing saw it; otherwise
nobody does tonight, and the next night it is known. Jobs named in the config are the same
for every runner and take part in the greedy even without a size (as the median).
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_SHARD = re.compile(r"(\d+)/(\d+)")
# A shard's sizes come from backups taken before a moment every runner of one night agrees
# on (see sizes_anchor), so tonight's first commits, or a pod retried hours later, change
# no partition another runner already computed.
SIZES_AGE = timedelta(hours=12)
MAX_SHARDS = 1000
# Set by Kubernetes in each pod of an Indexed Job: the pod's index, 0 to completions - 1.
INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
COUNT_VARIABLE = "DB_BACKUP_SHARDS"


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`I/N` (0 ≤ I < N) → Shard; ValueError says what is wrong."""
    found = _SHARD.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r}: expected I/N, e.g. 0/4 (shards are numbered from 0)")
    index, count = int(found[1]), int(found[2])
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"{text!r}: the number of shards must be 1 to {MAX_SHARDS}")
    if index >= count:
        raise ValueError(f"{text!r}: the index must be 0 to {count - 1} of {count}")
    return Shard(index, count)


def sizes_anchor(now: datetime) -> datetime:
    """The moment a shard's sizes are read before: UTC midnight of the day SIZES_AGE ago.
    Every runner of one nightly run — and a pod retried within hours — gets the same one
    (it moves only at noon UTC), and none of tonight's backups is before it."""
    earlier = (now - SIZES_AGE).astimezone(UTC)
    return earlier.replace(hour=0, minute=0, second=0, microsecond=0)


def shard_from_environment(environ: Mapping[str, str], count: int | None) -> Shard:
    """`--shard auto`: the index from Kubernetes' JOB_COMPLETION_INDEX, the count from
    `count` (`--shards N`) or DB_BACKUP_SHARDS."""
    index = environ.get(INDEX_VARIABLE)
    if index is None:
        raise ValueError(f"--shard auto: {INDEX_VARIABLE} is not set (not an Indexed Job?)")
    if count is None:
        given = environ.get(COUNT_VARIABLE)
        if given is None:
            raise ValueError(f"--shard auto: give --shards N or set {COUNT_VARIABLE}")
        if not given.strip().isascii() or not given.strip().isdigit():
            raise ValueError(f"{COUNT_VARIABLE}={given!r}: expected a number of shards")
        count = int(given)
    return parse_shard(f"{index.strip()}/{count}")


@dataclass(frozen=True)
class Partition:
    """Each shard's jobs (sorted by name) and the bytes they are expected to dump."""

    shards: tuple[tuple[str, ...], ...]
    loads: tuple[int, ...]
    weights: Mapping[str, int]  # each job's expected bytes (a median stands in for unknown)
    unsized: frozenset[str]  # the jobs whose size was not known

    def of(self, shard: Shard) -> tuple[str, ...]:
        return self.shards[shard.index]


def partition(sizes: Mapping[str, int | None], count: int) -> Partition:
    """Assign every job to one of `count` shards by its expected size (None: unknown)."""
    if count < 1:
        raise ValueError("at least one shard")
    known = [size for size in sizes.values() if size is not None]
    stand_in = statistics.median_low(known) if known else 1
    weights = {job: stand_in if size is None else size for job, size in sizes.items()}
    loads = [0] * count
    members: list[list[str]] = [[] for _ in range(count)]
    for job in sorted(weights, key=lambda name: (-weights[name], name)):
        lightest = min(range(count), key=lambda i: (loads[i], i))
        members[lightest].append(job)
        loads[lightest] += weights[job]
    unsized = frozenset(job for job, size in sizes.items() if size is None)
    return Partition(tuple(tuple(sorted(m)) for m in members), tuple(loads), weights, unsized)


def newcomer_shard(job: str, count: int) -> int:
    """The shard of a job no size is known for that not every runner may see (a database
    found since the last backup): from its name alone, so it moves no other job."""
    digest = hashlib.sha256(job.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count
