"""Taking, keeping and giving back jobs' leases in their bucket (the rules: lease.py).

Every job with an S3 target takes its lease before it waits for a slot, so a queued job is
already this runner's, and a runner started twice splits the jobs instead of dumping each
twice. A lease held by another runner is watched until it shows a sign of life (a renewal: the
job is "running elsewhere") or expires (its runner died: taken over). While the job runs its
lease is renewed; a lease that cannot be renewed in time, or that another runner took over,
stops the job — nothing is kept — because someone else may now be dumping it.

What killed runs left of a leased job in its buckets (incomplete uploads, dumps without a
manifest) is removed only once the lease is ours: before, it may be another runner's upload
in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import msgspec

from db_backup import runtime, threads
from db_backup.config.schema import LocalStorage, S3Storage, StorageConfig
from db_backup.errors import BackupError, StorageError, TargetUnreachableError
from db_backup.lease import (
    RUN_MEMORY_SECONDS,
    LeaseRecord,
    PartitionRecord,
    Seen,
    Verdict,
    decode,
    describe_done,
    describe_holder,
    encode,
    is_this_runs_backup,
    judge,
    lease_name,
    partition_name,
)
from db_backup.model import JobEvent, JobSpec, Target
from db_backup.notice import waiting_notice
from db_backup.threads import in_thread

log = logging.getLogger(__name__)

RENEWALS_PER_DURATION = 3
# Stop a job whose lease could not be renewed this long before others may take it over.
GIVE_UP_FRACTION = 5 / 6
RETRY_SECONDS = 1.0
TAKE_ATTEMPTS = 5
# A lease not given back in time expires by itself; a cancelled run must stop quickly.
RELEASE_WAIT_SECONDS = 5.0
RELEASE_WAIT_CANCELLED_SECONDS = 1.0

Emit = Callable[[JobEvent], None]


@runtime_checkable
class LeaseStore(Protocol):
    """What a target must do to hold leases: conditional writes (S3Store)."""

    def create_if_absent(self, name: str, data: bytes) -> str | None: ...

    def replace_if(self, name: str, data: bytes, etag: str) -> str | None: ...

    def delete_if(self, name: str, etag: str) -> bool: ...

    def read_versioned(self, name: str) -> tuple[bytes, str, datetime, float] | None: ...

    def exists(self, name: str) -> bool: ...

    def location(self, name: str) -> str: ...

    def clean_incomplete(self, file_prefixes: list[str]) -> list[str]: ...


@dataclass(frozen=True)
class Elsewhere:
    """Not this runner's job now, and not a failure: why."""

    reason: str


class JobLease:
    """A lease this runner holds: `kept()` renews it while the job runs, `release()` gives it
    back saying how the job ended. `lost` says why it was lost, if it was."""

    def __init__(
        self, store: LeaseStore, name: str, record: LeaseRecord, etag: str, taken: float
    ) -> None:
        self._store, self._name = store, name
        self._record, self._etag = record, etag
        self._renewed = taken  # monotonic time the last successful write was sent
        # A write given up on that may still land (its record, its request): see `_settle`.
        self._in_flight: tuple[LeaseRecord, Future[str | None]] | None = None
        self.lost: str | None = None
        self.where = store.location(name)

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Renew the lease while the block runs; if another runner takes it over, cancel
        the block's task."""
        task = asyncio.current_task()
        assert task is not None
        keeper = asyncio.create_task(self._keep(task))
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep(self, job_task: asyncio.Task[object]) -> None:
        """Renew every third of the duration. Refused: another runner took the lease over
        (it judged this one dead): stop the job. An unreachable bucket stops nothing — this
        job's copy there fails by itself, its other copies are this machine's own — and is
        asked again; other errors stop the job once the lease may have expired."""
        seconds = self._record.seconds
        give_up = seconds * GIVE_UP_FRACTION
        pause = seconds / RENEWALS_PER_DURATION
        told = False
        while True:
            await asyncio.sleep(max(0.0, self._renewed + pause - time.monotonic()))
            sent = time.monotonic()
            record = msgspec.structs.replace(self._record, renewals=self._record.renewals + 1)
            try:
                written = await self._write(record, request_bound(seconds))
            except (TargetUnreachableError, TimeoutError) as exc:  # no answer
                if not told:
                    why = str(exc) or "no answer"
                    log.warning("cannot renew %s, still trying: %s", self.where, why)
                    told = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except StorageError as exc:
                if time.monotonic() - self._renewed >= give_up:
                    return self._lose(job_task, f"it could not be renewed in time ({exc})")
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except Exception as exc:  # a bug: renewals would stop unseen, the lease expire
                log.exception("renewing %s", self.where)
                return self._lose(job_task, f"internal error renewing it: {exc!r}")
            if not written:
                return self._lose(job_task, "another runner took it over")
            self._renewed, told = sent, False

    async def _write(self, record: LeaseRecord, within: float) -> bool:
        """Write `record` over this runner's last version. False: refused, and the lease is
        not what this runner last sent (a write whose answer was lost, then refused when
        retried, is this runner's own: adopted)."""
        await self._settle(within)
        request = threads.submit(self._store.replace_if, self._name, encode(record), self._etag)
        self._in_flight = (record, request)
        async with asyncio.timeout(within):
            etag = await asyncio.shield(asyncio.wrap_future(request))
        self._in_flight = None
        if etag is None:  # a write of ours whose answer was lost may have landed
            found = await self._ours(record)
            if found is None:
                return False
            current, etag = found
            if current != record:  # an older write of ours is there: this one once more
                etag = await in_thread(self._store.replace_if, self._name, encode(record), etag)
            if etag is None:
                return False
        self._record, self._etag = record, etag
        return True

    async def _settle(self, within: float) -> None:
        """Wait (at most `within` seconds) for a write given up on to land, and take its version:
        the next write, sent with the older ETag, would be refused as if another runner had
        taken the lease."""
        if self._in_flight is None:
            return
        record, request = self._in_flight
        with contextlib.suppress(StorageError, TimeoutError):
            async with asyncio.timeout(within):
                etag = await asyncio.shield(asyncio.wrap_future(request))
            if etag is not None:
                self._record, self._etag = record, etag
        self._in_flight = None

    async def _ours(self, record: LeaseRecord) -> tuple[LeaseRecord, str] | None:
        """The lease as it is and its ETag, if it is still this runner's (a write of ours:
        same run, host, PID, machine and taking), else None."""
        seen = await _look(self._store, self._name)
        current = seen.record if seen is not None else None
        same = ("run", "host", "pid", "machine", "taken_at")
        if current is None or any(getattr(current, f) != getattr(record, f) for f in same):
            return None
        assert seen is not None
        return current, seen.etag

    def _lose(self, job_task: asyncio.Task[object], why: str) -> None:
        self.lost = f"lost its lease {self.where}: {why}"
        log.warning("%s; stopping the job", self.lost)
        job_task.cancel()

    async def release(self, outcome: str) -> None:
        """Mark the lease released with the job's outcome (kept, not deleted: a runner of
        the same run learns the job is done)."""
        if self.lost is not None:
            return
        record = msgspec.structs.replace(self._record, state="released", outcome=outcome)
        wait = RELEASE_WAIT_CANCELLED_SECONDS if outcome == "cancelled" else RELEASE_WAIT_SECONDS
        try:
            written = await self._write(record, wait)
        except (StorageError, TimeoutError) as exc:
            log.warning("could not release %s (it expires by itself): %s", self.where, exc)
            return
        if not written:
            log.warning("could not release %s: another runner had taken it over", self.where)


async def agreed_partition(
    store: LeaseStore, run_id: str, shards: int, assignment: dict[str, int]
) -> dict[str, int]:
    """The partition of fleet run `run_id`: the one its first runner stored, else
    `assignment`, stored now as the run's. A run id seen again after RUN_MEMORY_SECONDS is
    a new run (its old record is replaced). Raises BackupError when the run's first runner
    shared the jobs out among a different number of shards."""
    name = partition_name(run_id)
    ours = PartitionRecord(
        run=run_id,
        shards=shards,
        assignment=assignment,
        host=socket.gethostname(),
        taken_at=datetime.now(UTC),
    )
    data = msgspec.json.encode(ours)
    for _ in range(TAKE_ATTEMPTS):
        if await in_thread(store.create_if_absent, name, data) is not None:
            return assignment
        found = await in_thread(store.read_versioned, name)
        if found is None:
            continue
        content, etag, _, age = found
        try:
            theirs = msgspec.json.decode(content, type=PartitionRecord)
        except (msgspec.DecodeError, msgspec.ValidationError):
            theirs = None
        if theirs is None or age > RUN_MEMORY_SECONDS:
            if await in_thread(store.replace_if, name, data, etag) is not None:
                return assignment
            continue
        if theirs.shards != shards:
            raise BackupError(
                f"run {run_id!r} was shared out among {theirs.shards} shards by its first "
                f"runner (on {theirs.host}), this runner says {shards}: give every runner "
                "of one run the same --shards / DB_BACKUP_SHARDS"
            )
        return theirs.assignment
    raise BackupError(f"could not agree on run {run_id!r}'s partition: it kept changing")


async def clean_under_lease(job: JobSpec) -> JobSpec:
    """Under the job's lease: remove what interrupted runs of it left in its buckets
    (incomplete uploads, dumps without a manifest) — before, they may be another
    runner's uploads in progress. A bucket that does not answer is left out of the job.
    (restic repositories are cleaned once per run, run.py: each clean is a `restic
    snapshots` call opening the repository's key; a snapshot another machine made a
    moment before its manifest's could go — restic's own leftovers are its to guard.)"""
    for target in job.targets:
        if not isinstance(target.storage, S3Storage) or target.label in dict(job.unusable):
            continue
        silent = await remove_leftovers(target.storage, [target.file_prefix])
        if silent is not None:
            job = _unusable(job, [target], silent)
    return job


async def remove_leftovers(storage: StorageConfig, file_prefixes: Sequence[str]) -> str | None:
    """Remove what interrupted runs of these jobs left on a target, logging each; returns
    why the target did not answer (other failures are only logged: an upload will report
    the real trouble)."""
    store = runtime.current().store(storage)
    try:
        removed = await in_thread(store.clean_incomplete, sorted(file_prefixes))
    except TargetUnreachableError as exc:
        return str(exc)
    except StorageError as exc:
        log.warning("could not look for leftovers on %s: %s", storage.label, exc)
        return None
    for leftover in removed:
        log.warning("removed %s, left behind by an interrupted run", leftover)
    return None


def request_bound(seconds: float) -> float:
    """How long one lease request may take, its tries included (s3._make_client's lease
    client: 3 tries, each phase bounded by seconds / 18, at least 1 s; plus backoff)."""
    return 3 * 2 * max(1.0, seconds / 18) + 3.0


def new_run_id() -> str:
    """A run's own id, when it is not one of a fleet run's shards."""
    return secrets.token_hex(6)


class Leases:
    """The leases of one run: its id (shared by a fleet run's shards and retries) and shard."""

    def __init__(self, run_id: str, shard: str | None = None) -> None:
        self.run_id = run_id
        self.shard = shard

    async def claim(self, job: JobSpec, emit: Emit) -> tuple[JobSpec, JobLease | Elsewhere | None]:
        """Take `job`'s lease. Returns the job and the lease; Elsewhere when another runner
        has the job; None when it takes no lease (no S3 target, or `leases: false`). A lease
        that cannot be asked leaves the job to this machine's own folders: its shared
        targets (buckets, restic repositories) fail, for another runner may hold it."""
        target = lease_target(job)
        if target is None:
            return job, None
        store = runtime.current().store(target.storage)
        if not isinstance(store, LeaseStore):
            return job, None
        try:
            return job, await self._take(job, target, store, emit)
        except StorageError as exc:
            why = f"cannot take the job's lease: {exc}"
            shared = [t for t in job.targets if is_shared(t.storage)]
            return _unusable(job, shared, why), None

    async def _take(
        self, job: JobSpec, target: Target, store: LeaseStore, emit: Emit
    ) -> JobLease | Elsewhere:
        assert isinstance(target.storage, S3Storage)
        name = lease_name(job.name)
        record = LeaseRecord(
            job=job.name,
            run=self.run_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            shard=self.shard,
            seconds=float(target.storage.lease_duration),
            state="held",
            taken_at=datetime.now(UTC),
            manifest=target.manifest_name,
            machine=this_machine(),
        )
        for _ in range(TAKE_ATTEMPTS):
            sent = time.monotonic()
            async with waiting_notice(emit, f"{target.label}: taking job {job.name}'s lease", job):
                etag = await in_thread(store.create_if_absent, name, encode(record))
            if etag is not None:
                return JobLease(store, name, record, etag, sent)
            seen = await _look(store, name)
            if seen is None:
                continue  # gone meanwhile: try again
            if seen.record == record:  # our own create, answered late and retried: ours
                return JobLease(store, name, record, seen.etag, sent)
            verdict = self._judge(seen, record.seconds)
            if verdict is Verdict.HELD and _holder_is_gone(seen.record):
                verdict = Verdict.EXPIRED  # a killed run on this machine: no need to wait
            if verdict is Verdict.HELD:
                what = f"{job.name}: its lease is held by {describe_holder(seen.record, seen.age)}"
                async with waiting_notice(
                    emit, f"{what}; waiting for a renewal or its expiry", job
                ):
                    changed = await self._watch(store, name, seen, record.seconds)
                if changed is None:
                    continue
                moved, seen = changed.etag != seen.etag, changed
                verdict = self._judge(seen, record.seconds)
                if moved and seen.record is not None and seen.record.outcome == "succeeded":
                    # given back after a backup: it ran beside this runner
                    return Elsewhere(describe_done(seen.record, seen.age, run=self.run_id))
                if verdict is Verdict.HELD:  # renewed, or taken by another: someone's alive
                    holder = describe_holder(seen.record, seen.age)
                    return Elsewhere(f"running elsewhere: lease held by {holder}")
            if verdict is Verdict.EXPIRED and await self._committed_by_this_run(store, seen):
                verdict = Verdict.DONE
            if verdict is Verdict.DONE:
                assert seen.record is not None
                return Elsewhere(describe_done(seen.record, seen.age, run=self.run_id))
            if verdict is Verdict.EXPIRED:
                log.warning(
                    "%s: taking over its lease from %s, which stopped renewing it",
                    job.name,
                    describe_holder(seen.record, seen.age),
                )
            await in_thread(store.delete_if, name, seen.etag)  # only if still that version
        return Elsewhere(f"its lease changed hands {TAKE_ATTEMPTS} times while this runner tried")

    def _judge(self, seen: Seen, seconds: float) -> Verdict:
        return judge(seen, run=self.run_id, fallback_seconds=seconds)

    async def _watch(self, store: LeaseStore, name: str, seen: Seen, seconds: float) -> Seen | None:
        """Poll a held lease until it changes (renewed, released, taken) or is no longer
        held by its verdict (expired); None when it went away."""
        pause = max(0.5, min(5.0, seconds / (2 * RENEWALS_PER_DURATION)))
        since = time.monotonic()
        while True:
            await asyncio.sleep(pause)
            now = await _look(store, name)
            if now is None or now.etag != seen.etag:
                return now
            # Unchanged while watched: at least that old, whatever the server's dates say
            # (a server without a Date header reports every lease as just written).
            unchanged = seen.age + time.monotonic() - since
            now = dataclasses.replace(now, age=max(now.age, unchanged))
            if self._judge(now, seconds) is not Verdict.HELD:
                return now

    async def _committed_by_this_run(self, store: LeaseStore, seen: Seen) -> bool:
        """Did an earlier attempt of this run (a pod killed after its commit) store the
        backup whose lease expired? Then it is done, not to be dumped again."""
        if not is_this_runs_backup(seen, self.run_id, committed=True):
            return False
        assert seen.record is not None
        return await in_thread(store.exists, seen.record.manifest)


async def _look(store: LeaseStore, name: str) -> Seen | None:
    found = await in_thread(store.read_versioned, name)
    if found is None:
        return None
    data, etag, written_at, age = found
    return Seen(decode(data), etag, written_at, age)


def this_machine() -> str:
    """This kernel's boot and this process's PID namespace: two runners that share both see
    the same processes under the same PIDs (unlike two containers, or two hosts, even of
    one name)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""  # not Linux: never judged from here


def _holder_is_gone(record: LeaseRecord | None) -> bool:
    """Is the lease's holder a process of this machine (this_machine) that no longer runs?"""
    if record is None or not record.machine or record.machine != this_machine():
        return False
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone's process: alive
    return False


def is_shared(storage: StorageConfig) -> bool:
    """Can runners on other machines write there (a bucket, a restic repository), unlike a
    folder of this machine's own?"""
    return not isinstance(storage, LocalStorage)


def lease_target(job: JobSpec) -> Target | None:
    """Where a job's lease lives: its first S3 target (config order, the same for every
    runner, whatever this machine found wrong with it), unless it says `leases: false`."""
    for target in job.targets:
        if isinstance(target.storage, S3Storage):
            return target if target.storage.leases else None
    return None


def _unusable(job: JobSpec, targets: Sequence[Target], why: str) -> JobSpec:
    known = dict(job.unusable)
    added = tuple((t.label, why) for t in targets if t.label not in known)
    return dataclasses.replace(job, unusable=(*job.unusable, *added))
