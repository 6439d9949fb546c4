"""One `backup` run's life: lock storage → discover → plan → clean leftovers → orchestrate.

The CLI drives this and renders its events; signals arrive through `cancel()`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from db_backup.config.schema import BackupConfig, Config
from db_backup.lock import lock_storage, remove_stale_partials
from db_backup.model import JobResult, JobStatus, Plan, RunReport
from db_backup.orchestrator import Orchestrator, Subscriber
from db_backup.plan import build_plan, wildcard_job
from db_backup.preflight import discover

log = logging.getLogger(__name__)


async def prepare_plan(
    config: Config,
    selected: Sequence[BackupConfig],
    *,
    names: Sequence[str] = (),
    concurrency: int | None = None,
) -> tuple[Plan, list[JobResult]]:
    """Discover `database: "*"` databases, then plan; failed discoveries come back as results."""
    now = datetime.now(UTC)
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
    return plan, failures


def _names_taken(plan: Plan) -> bool:
    return any(job.target.final_path.exists() for job in plan.jobs)


class BackupRun:
    """Executes a plan under storage locks; `cancel()` stops it from a signal handler."""

    def __init__(self, subscribers: Sequence[Subscriber] = (), *, wait: float | None = None):
        self._subscribers = list(subscribers)
        self._wait = wait
        self._orchestrator: Orchestrator | None = None

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def cancel(self, reason: str) -> bool:
        """Cancel running and queued jobs; False when no job runs yet (cancel the caller)."""
        if self._orchestrator is None:
            return False
        self._orchestrator.cancel(reason)
        return True

    @staticmethod
    async def _plan_unused_names(
        config: Config,
        selected: Sequence[BackupConfig],
        names: Sequence[str],
        concurrency: int | None,
    ) -> tuple[Plan, list[JobResult]]:
        """Plan; if a file name is taken (a run that ended within this second, e.g. the one we
        waited for), plan again in the next second rather than fail. Under our lock nothing
        else can take a name meanwhile."""
        for _ in range(3):
            plan, failures = await prepare_plan(
                config, selected, names=names, concurrency=concurrency
            )
            if not await asyncio.to_thread(_names_taken, plan):
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
        folders = {Path(backup.storage.path) for backup in selected}
        locks = await lock_storage(folders, self._wait)
        try:
            plan, failures = await self._plan_unused_names(config, selected, names, concurrency)
            results = list(failures)
            for folder, error in locks.unusable.items():
                results += [
                    JobResult(job, JobStatus.FAILED, error=str(error))
                    for job in plan.jobs
                    if job.target.directory == folder
                ]
            runnable = tuple(job for job in plan.jobs if job.target.directory in locks.held)
            for folder in locks.held:
                prefixes = [job.file_prefix for job in runnable if job.target.directory == folder]
                for stale in await asyncio.to_thread(remove_stale_partials, folder, prefixes):
                    log.warning("removed %s, left behind by an interrupted run", stale)
            self._orchestrator = Orchestrator(
                dataclasses.replace(plan, jobs=runnable), self._subscribers
            )
            return await self._orchestrator.run(results)
        finally:
            locks.release()
