"""A job's lease: which runner may dump it now, decided in a bucket that every runner reaches.

Runners on different machines (the shards of a fleet, a retried pod beside its predecessor, a
deployment made twice) share no lock but the S3 bucket they write to. Each job's lease is one
small object there, `.db-backup-leases/<job>.json` under the job's first S3 target, created
only if absent (`If-None-Match: *`, atomic on S3 and SeaweedFS) and then rewritten by its
holder every third of its duration, only if unchanged since its own last write (`If-Match`).
A live holder's lease therefore keeps changing; a dead one's stops. Its age is measured by the
server's clock alone (the response's Date minus the object's Last-Modified), so runners whose
clocks disagree still agree on which lease expired.

This module is the rules, pure: the record, and what a runner seeing one should do. The
requests are in leasing.py.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

import msgspec

from db_backup.units import format_duration

LEASE_FOLDER = ".db-backup-leases"  # a deeper "folder": the catalog's listings never see it
# A date on the wire has one-second resolution, twice (Date and Last-Modified).
CLOCK_SLACK_SECONDS = 2.0
# How long a run's backups count as done for a retry of the same run (a night's Job lasts
# hours; a run id seen again after this is a new night that reused the id).
RUN_MEMORY_SECONDS = 20 * 3600.0


class LeaseRecord(msgspec.Struct, kw_only=True, frozen=True):
    """What a lease object holds: who holds it, for how long, and how their job ended."""

    job: str
    run: str  # the run's id (--run-id): one per fleet run, shared by its shards and retries
    host: str
    pid: int
    shard: str | None  # "I/N" when sharded
    seconds: float  # how long it holds without a renewal
    state: str  # "held" | "released"
    taken_at: datetime  # the holder's clock: for people, never compared
    renewals: int = 0
    manifest: str  # the manifest this holder's backup will have on the lease's target
    outcome: str | None = None  # when released: the job's status
    # Which kernel and PID namespace `pid` lives in (see leasing.this_machine): a runner on
    # the same one can see that the holder is gone without waiting for the lease to expire.
    machine: str = ""


class PartitionRecord(msgspec.Struct, kw_only=True, frozen=True):
    """How the first runner of a fleet run shared the jobs out: every later runner of the
    run (another shard, a retried pod hours later) follows it, even if the catalog has
    changed since (tonight's retention may have removed a backup it read a size from)."""

    run: str
    shards: int
    assignment: dict[str, int]  # job → shard
    host: str
    taken_at: datetime


def partition_name(run: str) -> str:
    """Where a fleet run's partition is kept, beside the leases."""
    return f"{LEASE_FOLDER}/runs/{safe_name(run)}.json"


def safe_name(text: str) -> str:
    """A run id as one key component: nothing but [A-Za-z0-9._-], and a hash when changed."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".")[:80]
    if cleaned == text:
        return cleaned
    return f"{cleaned}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def lease_name(job: str) -> str:
    """The lease object's name inside the target's folder."""
    return f"{LEASE_FOLDER}/{job}.json"


def encode(record: LeaseRecord) -> bytes:
    return msgspec.json.encode(record)


def decode(data: bytes) -> LeaseRecord | None:
    """The record, or None for an object that is not one (then it is judged by its age)."""
    try:
        return msgspec.json.decode(data, type=LeaseRecord)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


@dataclass(frozen=True)
class Seen:
    """A lease as read: its record (None: unreadable), its ETag, when it was last written
    and how long ago, both by the server's clock."""

    record: LeaseRecord | None
    etag: str
    written_at: datetime
    age: float  # seconds


class Verdict(enum.Enum):
    FREE = "free"  # released, or never readable and old: take it
    EXPIRED = "expired"  # its holder stopped renewing: take it over
    HELD = "held"  # a holder renewed it within its duration: watch for a sign of life
    DONE = "done"  # released after a successful backup by this run (an earlier attempt)


def judge(seen: Seen, *, run: str, fallback_seconds: float) -> Verdict:
    """What a runner that could not create the lease does with the one it found (`run`: this
    run's id). A lease another run released is free: a later run backs up again, as any run
    does. (A runner that saw it held, then released, knows more: leasing.py.)"""
    record = seen.record
    if record is None:
        return Verdict.FREE if seen.age > fallback_seconds + CLOCK_SLACK_SECONDS else Verdict.HELD
    if record.state == "released":
        return Verdict.DONE if is_this_runs_backup(seen, run) else Verdict.FREE
    if seen.age > record.seconds + CLOCK_SLACK_SECONDS:
        return Verdict.EXPIRED
    return Verdict.HELD


def is_this_runs_backup(seen: Seen, run: str, *, committed: bool = False) -> bool:
    """Did this run (an earlier attempt of it) back the job up? Its record says so, or
    `committed` (its backup was found). Only within RUN_MEMORY: a run id reused days later
    (a fixed DB_BACKUP_RUN_ID) must not skip every job for ever."""
    record = seen.record
    if record is None or record.run != run or seen.age > RUN_MEMORY_SECONDS:
        return False
    return committed or (record.state == "released" and record.outcome == "succeeded")


def describe_holder(record: LeaseRecord | None, age: float) -> str:
    """Who holds a lease, for a person: "PID 12 on pod-3 (shard 1/4, run 5f2…), 4s ago"."""
    if record is None:
        return f"an unreadable lease object, written {format_duration(age)} ago"
    shard = f"shard {record.shard}, " if record.shard else ""
    return (
        f"PID {record.pid} on {record.host} ({shard}run {record.run}), "
        f"last renewed {format_duration(age)} ago"
    )


def describe_done(record: LeaseRecord, age: float, *, run: str) -> str:
    """Why a released (or expired, but committed) lease means the job needs no dump here:
    this run backed it up, or another runner did while this one watched its lease."""
    by = "an earlier attempt of this run" if record.run == run else "another runner meanwhile"
    return (
        f"already backed up by {by} (PID {record.pid} on {record.host}, {format_duration(age)} ago)"
    )
