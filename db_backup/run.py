"""One `backup` run's life: lock targets → discover → plan → clean leftovers → orchestrate.

The CLI drives this and renders its events; signals arrive through `cancel()`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from db_backup import runtime
from db_backup.catalog import list_backups
from db_backup.config.schema import BackupConfig, Config, S3Storage, StorageConfig
from db_backup.errors import BackupError, StorageError
from db_backup.leasing import (
    Leases,
    LeaseStore,
    agreed_partition,
    lease_target,
    new_run_id,
    remove_leftovers,
)
from db_backup.lock import lock_folder, lock_storage
from db_backup.model import (
    JobEvent,
    JobResult,
    JobSpec,
    JobStatus,
    Plan,
    RunReport,
    Target,
)
from db_backup.naming import globals_job_name
from db_backup.notice import Tell, waiting_notice
from db_backup.orchestrator import Limits, Orchestrator, Subscriber
from db_backup.plan import build_plan, server_of, wildcard_job
from db_backup.preflight import discover
from db_backup.shard import Partition, Shard, newcomer_shard, partition, sizes_anchor
from db_backup.threads import in_thread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sharding:
    """How a plan's jobs fall to N runners (shard.py): the greedy over jobs every runner
    knows, and the newcomers (databases found since the last backup) placed by name."""

    partition: Partition
    newcomers: Mapping[str, int]  # job → its shard
    anchor: datetime  # sizes come from backups taken before it
    # The fleet run's partition as its first runner stored it (leasing.agreed_partition):
    # followed instead of this runner's own; the jobs it does not name are newcomers.
    agreed: Mapping[str, int] | None = None

    def jobs_of(self, index: int) -> set[str]:
        placed = {job for job, shard in self.newcomers.items() if shard == index}
        if self.agreed is not None:
            return {job for job, shard in self.agreed.items() if shard == index} | placed
        return set(self.partition.shards[index]) | placed

    def assignment(self) -> dict[str, int]:
        """Every job this runner knows of, and its shard."""
        mine = {job: i for i, jobs in enumerate(self.partition.shards) for job in jobs}
        return mine | dict(self.newcomers)


async def sharding(config: Config, plan: Plan, count: int) -> Sharding:
    """Partition the config's jobs over `count` runners by each job's last raw size in the
    catalog, as every runner does alone: the greedy takes the jobs the config names (a
    median where no size is known) and the jobs of `database: "*"` backups the catalog
    knows — whether or not tonight's listing found them, so a dropped database or a failed
    listing on one runner changes no partition — from backups taken before the shared
    anchor (shard.sizes_anchor). Databases the catalog does not know are newcomers, placed
    by name. A target that cannot be listed stops a sharded run: without it, this runner's
    partition could differ from the others'."""
    catalog = await list_backups(config)
    if catalog.errors:
        label, error = next(iter(catalog.errors.items()))
        raise BackupError(
            f"cannot shard without every target's catalog: {label} could not be listed "
            f"({error}); another runner reading it would place the jobs differently"
        )
    anchor = sizes_anchor(runtime.current().now())
    wildcards = {backup.name for backup in config.backups if backup.is_wildcard}
    last: dict[str, int] = {}
    for archive in sorted(catalog.archives, key=lambda a: (a.taken_at, a.target)):
        if archive.taken_at < anchor:
            last[archive.job] = archive.raw_bytes
    sizes: dict[str, int | None] = {name: last.get(name) for name in configured_jobs(config)}
    sizes |= {
        job: size
        for job, size in last.items()
        if job.split(".", 1)[0] in wildcards and job not in sizes
    }
    return Sharding(partition(sizes, count), _newcomers(plan, sizes, count), anchor)


def _newcomers(plan: Plan, known: Mapping[str, object], count: int) -> dict[str, int]:
    """The plan's jobs that `known` does not name, each on the shard its name picks."""
    return {job.name: newcomer_shard(job.name, count) for job in plan.jobs if job.name not in known}


def configured_jobs(config: Config) -> list[str]:
    """The jobs the config names without asking a server: a backup's own, and one globals
    job per server that asks for it (`database: "*"` jobs come from discovery)."""
    named = [backup.name for backup in config.backups if not backup.is_wildcard]
    named += [globals_job_name(backup) for backup in config.backups if backup.globals]
    return sorted(set(named))


def only_shard(
    plan: Plan, failures: Sequence[JobResult], shares: Sharding, shard: Shard
) -> tuple[Plan, list[JobResult]]:
    """The plan and the failures that are `shard`'s: its jobs; each failure (a listing that
    failed, a refused job) on one shard only, by name, so N runners do not report it N times."""
    mine = shares.jobs_of(shard.index)
    jobs = tuple(job for job in plan.jobs if job.name in mine)
    kept = [r for r in failures if newcomer_shard(r.job.name, shard.count) == shard.index]
    return dataclasses.replace(plan, jobs=jobs), kept


async def prepare_plan(
    config: Config,
    selected: Sequence[BackupConfig],
    *,
    names: Sequence[str] = (),
    concurrency: int | None = None,
    tell: Tell | None = None,
    shard: Shard | None = None,
    run_id: str | None = None,
) -> tuple[Plan, list[JobResult]]:
    """Discover `database: "*"` databases, then plan (only `shard`'s jobs, when given: of
    fleet run `run_id`'s partition, when given, see `agree`); failed discoveries come back
    as results."""
    now = runtime.current().now()
    servers = sorted({str(server_of(b)) for b in selected if b.is_wildcard})
    async with waiting_notice(
        tell if servers else None, f"listing databases on {', '.join(servers)}"
    ):
        found = await discover(selected)
    plan = build_plan(config, now, names=names, discovered=found.databases, concurrency=concurrency)
    for backup in selected:
        if backup.name in found.databases and not any(j.backup is backup for j in plan.jobs):
            log.warning('backup %r: database "*" matched no databases on its server', backup.name)
    failures = [
        JobResult(
            wildcard_job(backup, now),
            JobStatus.FAILED,
            error=f"cannot list databases: {found.errors[backup.name]}",
        )
        for backup in selected
        if backup.name in found.errors
    ]
    failures += [JobResult(job, JobStatus.FAILED, error=why) for job, why in plan.refused]
    if shard is not None:
        shares = await sharding(config, plan, shard.count)
        if run_id is not None:
            shares = await agree(config, plan, shares, run_id, shard.count)
        plan, failures = only_shard(plan, failures, shares, shard)
    return plan, failures


async def agree(config: Config, plan: Plan, shares: Sharding, run_id: str, count: int) -> Sharding:
    """Follow fleet run `run_id`'s partition, as its first runner stored it in the first
    bucket with leases: a runner started later (a retried pod) may see another catalog —
    tonight's retention may have removed a backup it would read a size from — and place a
    job elsewhere, leaving it to no shard. Jobs the record does not name (found since) are
    newcomers, placed by name. Without such a bucket, each runner's own partition."""
    buckets = [t for b in config.backups for t in b.targets if isinstance(t, S3Storage)]
    store = runtime.current().store(buckets[0]) if buckets and buckets[0].leases else None
    if not isinstance(store, LeaseStore):
        return shares
    try:
        agreed = await agreed_partition(store, run_id, count, shares.assignment())
    except StorageError as exc:
        raise BackupError(f"cannot read or store run {run_id!r}'s partition: {exc}") from None
    return dataclasses.replace(shares, agreed=agreed, newcomers=_newcomers(plan, agreed, count))


def _names_taken(plan: Plan, unusable: Mapping[str, str]) -> bool:
    """Is a planned file name in use on a target? One that cannot be asked counts as free:
    its upload will report what is wrong with it, and refuses to overwrite in any case."""

    unreachable = set(unusable)  # asked once: a target that is down is not asked per job

    def taken(target: Target) -> bool:
        if target.label in unreachable:
            return False
        try:
            return runtime.current().store(target.storage).exists(target.filename)
        except StorageError:
            unreachable.add(target.label)
            return False

    return any(taken(target) for job in plan.jobs for target in job.targets)


def _with_unusable(job: JobSpec, unusable: Mapping[str, str]) -> JobSpec:
    mine = tuple((t.label, unusable[t.label]) for t in job.targets if t.label in unusable)
    return dataclasses.replace(job, unusable=mine) if mine else job


async def _clean_leftovers(
    jobs: Sequence[JobSpec], unusable: Mapping[str, str], tell: Tell | None
) -> dict[str, str]:
    """Under the locks: remove what killed runs of these jobs left in each folder or restic
    repository (partial files, snapshots without a manifest). This is also each target's
    first question of the run: one that does not answer is returned (label → why), and its
    jobs leave it out rather than each wait for it again. Other failures are only logged —
    an upload will report the real trouble."""
    prefixes: dict[StorageConfig, set[str]] = {}
    for job in jobs:
        leased = lease_target(job) is not None
        for target in job.targets:
            # A leased job's leftovers in a bucket may be another machine's upload in
            # progress: cleaned once its lease is held (leasing.clean_under_lease).
            bucket = isinstance(target.storage, S3Storage)
            if target.label not in unusable and not (leased and bucket):
                prefixes.setdefault(target.storage, set()).add(target.file_prefix)
    silent: dict[str, str] = {}

    async def one(storage: StorageConfig, wanted: set[str]) -> None:
        what = f"{storage.label}: looking for what interrupted runs left"
        async with waiting_notice(tell, what):
            why = await remove_leftovers(storage, sorted(wanted))
        if why is not None:
            silent[storage.label] = why

    await asyncio.gather(*(one(storage, wanted) for storage, wanted in prefixes.items()))
    return silent


class BackupRun:
    """Executes a plan under storage locks; `cancel()` stops it from a signal handler."""

    def __init__(
        self,
        subscribers: Sequence[Subscriber] = (),
        *,
        wait: float | None = None,
        limits: Limits | None = None,
        shard: Shard | None = None,
        run_id: str | None = None,
    ):
        """`wait`: how long to wait for a target's lock (None: not at all); `limits`: the
        slots to run in, when shared with other runs (serve); `shard`: run only its jobs;
        `run_id`: what a fleet run's shards and retried runners share (leasing.py), by
        default this run's own."""
        self._subscribers = list(subscribers)
        self._wait = wait
        self._limits = limits
        self._shard = shard
        self._fleet_run = run_id  # given: one run of several runners (see `agree`)
        self._leases = Leases(run_id or new_run_id(), str(shard) if shard else None)
        self._orchestrator: Orchestrator | None = None

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def _emit(self, event: JobEvent) -> None:
        for subscriber in self._subscribers:
            subscriber(event)

    def cancel(self, reason: str) -> bool:
        """Cancel running and queued jobs; False when no job runs yet (cancel the caller)."""
        if self._orchestrator is None:
            return False
        self._orchestrator.cancel(reason)
        return True

    async def _plan_unused_names(
        self,
        config: Config,
        selected: Sequence[BackupConfig],
        names: Sequence[str],
        concurrency: int | None,
        unusable: dict[str, str],
    ) -> tuple[Plan, list[JobResult]]:
        """Plan; clean up after interrupted runs; if a file name is taken (a run that ended
        within this second, e.g. the one we waited for), plan again in the next second
        rather than fail. Under our lock nothing else can take a name meanwhile.
        Targets that do not answer are added to `unusable`."""
        for attempt in range(3):
            plan, failures = await prepare_plan(
                config,
                selected,
                names=names,
                concurrency=concurrency,
                tell=self._emit,
                shard=self._shard,
                run_id=self._fleet_run,
            )
            if attempt == 0:
                unusable.update(await _clean_leftovers(plan.jobs, unusable, self._emit))
            labels = sorted({t.label for job in plan.jobs for t in job.targets})
            what = f"checking that the new file names are free on {', '.join(labels)}"
            async with waiting_notice(self._emit, what):
                if not await in_thread(_names_taken, plan, unusable):
                    break
            await asyncio.sleep(1.0 - plan.started_at.microsecond / 1e6)
        return plan, failures

    async def execute(
        self,
        config: Config,
        selected: Sequence[BackupConfig],
        *,
        names: Sequence[str] = (),
        concurrency: int | None = None,
    ) -> RunReport:
        """Lock the storage folders, then plan (file names carry the time the lock was won,
        so a run that waited never collides with the one it waited for) and run."""
        folders = {lock_folder(storage) for backup in selected for storage in backup.targets}
        locks = await lock_storage(folders, self._wait, self._emit)
        try:
            unusable = {
                storage.label: str(locks.unusable[lock_folder(storage)])
                for backup in selected
                for storage in backup.targets
                if lock_folder(storage) in locks.unusable
            }
            plan, failures = await self._plan_unused_names(
                config, selected, names, concurrency, unusable
            )
            runnable = tuple(_with_unusable(job, unusable) for job in plan.jobs)
            self._orchestrator = Orchestrator(
                dataclasses.replace(plan, jobs=runnable),
                self._subscribers,
                self._limits,
                self._leases,
            )
            report = await self._orchestrator.run(failures)
            return dataclasses.replace(report, shard=self._leases.shard, run_id=self._leases.run_id)
        finally:
            locks.release()
