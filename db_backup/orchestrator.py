"""Runs a plan: every job under the global semaphore and its server's limit, concurrently.

Errors become values here: each job ends as a JobResult (succeeded / failed / cancelled), and
one job's failure never touches its siblings. `cancel()` stops the run: queued jobs never start,
running ones stop their child and remove their partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from db_backup import runtime
from db_backup.errors import BackupError, TargetsFailedError
from db_backup.job import Committed, run_job
from db_backup.leasing import Elsewhere, JobLease, Leases, clean_under_lease
from db_backup.model import (
    JobEvent,
    JobFinished,
    JobQueued,
    JobResult,
    JobRetrying,
    JobSpec,
    JobStatus,
    Plan,
    RunReport,
    Server,
)
from db_backup.retry import backoff_delay
from db_backup.stages.compress import available_cores

log = logging.getLogger(__name__)

Subscriber = Callable[[JobEvent], None]


class Limits:
    """How many jobs run at once, overall and per server. A `backup` run has its own; a
    `serve` process shares one among all its runs, so `concurrency` and `max_per_host` hold
    across everything that runs at once, whatever fired it."""

    def __init__(self, concurrency: int, servers: Mapping[Server, int] | None = None) -> None:
        """`servers`: every server's limit, fixed for all runs (serve: from the whole
        config); None: each server's limit comes with the first plan that has one."""
        self.slots = asyncio.Semaphore(concurrency)
        self._fixed = servers is not None
        self._servers = {s: asyncio.Semaphore(n) for s, n in (servers or {}).items()}

    def server(self, server: Server, limit: int | None) -> AbstractAsyncContextManager[Any]:
        """The server's slot; none without a limit."""
        if server in self._servers:
            return self._servers[server]
        if limit is None or self._fixed:
            return contextlib.nullcontext()
        return self._servers.setdefault(server, asyncio.Semaphore(limit))


class Orchestrator:
    """One run of one plan. Subscribers see every JobEvent, in order, on the event loop."""

    def __init__(
        self,
        plan: Plan,
        subscribers: Sequence[Subscriber] = (),
        limits: Limits | None = None,
        leases: Leases | None = None,
    ) -> None:
        """`leases`: take each job's lease in its bucket first (leasing.py)."""
        self.plan = plan
        self._leases = leases
        self._subscribers = list(subscribers)
        self._limits = limits or Limits(plan.concurrency)
        self._tasks: list[asyncio.Task[JobResult]] = []
        self.interrupted_by: str | None = None
        # Jobs running at once share the cores for compression (more threads than cores
        # only cost memory).
        at_once = max(1, min(plan.concurrency, len(plan.jobs)))
        self._cores_per_job = max(1, available_cores() // at_once)

    def emit(self, event: JobEvent) -> None:
        for subscriber in self._subscribers:
            subscriber(event)

    def cancel(self, reason: str) -> None:
        """Stop the run (a signal arrived): every job not yet finished ends as cancelled."""
        self.interrupted_by = reason
        for task in self._tasks:
            task.cancel()

    async def run(self, failures: Sequence[JobResult] = ()) -> RunReport:
        """Run every job; `failures` are jobs that failed before they could be planned."""
        started = runtime.current().now()
        for result in failures:
            self.emit(JobFinished(result))
        for job in self.plan.jobs:
            self.emit(JobQueued(job))
        self._tasks = [asyncio.create_task(self._run_one(job)) for job in self.plan.jobs]
        outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
        results = list(failures)
        for job, outcome in zip(self.plan.jobs, outcomes, strict=True):
            if isinstance(outcome, JobResult):
                results.append(outcome)
            else:  # cancelled before its task began running
                results.append(JobResult(job, JobStatus.CANCELLED, error="cancelled"))
        return RunReport(started, runtime.current().now(), tuple(results), self.interrupted_by)

    async def _attempts(self, job: JobSpec, tries: list[datetime]) -> Committed:
        """Run the job, again after a transient failure while `retries` allow; each attempt's
        start is appended to `tries`. Between attempts the job holds no slot."""
        server_slot = self._limits.server(job.server, self.plan.host_limits.get(job.server))
        allowed = job.backup.retries + 1
        while True:
            try:
                # The server's limit first: a job waiting for its busy server must not hold
                # one of the global slots that jobs for other servers could use.
                async with server_slot, self._limits.slots:
                    tries.append(runtime.current().now())
                    return await run_job(job, self.emit, cores=self._cores_per_job)
            except BackupError as exc:
                source = runtime.current().source(job.backup)
                if len(tries) >= allowed or not source.is_transient(exc):
                    raise
                delay = backoff_delay(len(tries), job.backup.retry_delay)
                self.emit(JobRetrying(job, len(tries), allowed, delay, str(exc)))
            await asyncio.sleep(delay)

    async def _run_one(self, job: JobSpec) -> JobResult:
        """The job's lease (if it has one, before it waits for a slot), its attempts, and
        its lease given back with the outcome."""
        lease: JobLease | None = None
        if self._leases is not None:
            try:
                job, claim = await self._leases.claim(job, self.emit)
            except asyncio.CancelledError:
                if self.interrupted_by is None:
                    raise
                return self._finished(self._cancelled(job, []))
            except Exception as exc:  # a bug must not pass for a cancellation
                log.exception("internal error taking the lease of job %s", job.name)
                error = f"internal error taking its lease: {type(exc).__name__}: {exc}"
                return self._finished(self._failed(job, [], error, "internal"))
            if isinstance(claim, Elsewhere):
                return self._finished(JobResult(job, JobStatus.ELSEWHERE, note=claim.reason))
            lease = claim
        try:
            result = await self._attempted(job, lease)
        except BaseException:
            if lease is not None:
                await asyncio.shield(lease.release(JobStatus.CANCELLED.value))
            raise
        if lease is not None:
            try:
                await asyncio.shield(lease.release(result.status.value))
            except asyncio.CancelledError:
                if self.interrupted_by is None:
                    raise
                # a signal while the lease is given back: the job ended as it did
        return result

    def _finished(self, result: JobResult) -> JobResult:
        self.emit(JobFinished(result))
        return result

    async def _attempted(self, job: JobSpec, lease: JobLease | None) -> JobResult:
        tries: list[datetime] = []
        try:
            async with lease.kept() if lease is not None else contextlib.nullcontext():
                if lease is not None:
                    job = await clean_under_lease(job)
                committed = await self._attempts(job, tries)
        except asyncio.CancelledError:
            if lease is not None and lease.lost is not None:
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()  # the lease's keeper cancelled the job, not the run's caller
                error = f"{lease.lost}; the job was stopped"
                return self._finished(self._failed(job, tries, error, "lease"))
            result = self._finished(self._cancelled(job, tries))
            if self.interrupted_by is None:
                raise  # cancelled from outside the orchestrator: let it propagate
            return result
        except BackupError as exc:
            gave_up = f" (gave up after {len(tries)} attempts)" if len(tries) > 1 else ""
            result = self._failed(job, tries, f"{exc}{gave_up}", exc.kind)
            if isinstance(exc, TargetsFailedError):  # no target took it: say why, per target
                result = dataclasses.replace(result, failed_targets=tuple(exc.failures.items()))
        except Exception as exc:  # a bug in one job must not take the others down
            log.exception("internal error in job %s", job.name)
            error = f"internal error: {type(exc).__name__}: {exc}"
            result = self._failed(job, tries, error, "internal")
        else:
            result = self._stored(job, tries, committed)
        self.emit(JobFinished(result))
        return result

    def _cancelled(self, job: JobSpec, tries: list[datetime]) -> JobResult:
        started = tries[0] if tries else None
        return JobResult(
            job,
            JobStatus.CANCELLED,
            started_at=started,
            finished_at=runtime.current().now() if started else None,
            error=f"cancelled ({self.interrupted_by})" if self.interrupted_by else "cancelled",
        )

    @staticmethod
    def _failed(job: JobSpec, tries: list[datetime], error: str, kind: str) -> JobResult:
        started = tries[0] if tries else None
        return JobResult(
            job,
            JobStatus.FAILED,
            started_at=started,
            finished_at=runtime.current().now(),
            error=error,
            error_kind=kind,
        )

    @staticmethod
    def _stored(job: JobSpec, tries: list[datetime], committed: Committed) -> JobResult:
        """Stored on every target: succeeded. Stored on some only: failed (the commit rule),
        saying which targets failed and where the backup is nonetheless."""
        record, failed = committed.manifest, dict(committed.failed_targets)
        stored = [copy.file for copy in committed.copies]
        return JobResult(
            job,
            JobStatus.FAILED if failed else JobStatus.SUCCEEDED,
            started_at=tries[0],
            finished_at=runtime.current().now(),
            raw_bytes=record.raw_bytes,
            stored_bytes=record.stored_bytes,
            error=TargetsFailedError.describe(failed, stored) if failed else None,
            error_kind=TargetsFailedError.kind if failed else None,
            copies=committed.copies,
            failed_targets=committed.failed_targets,
            sha256=record.sha256,
            dump_started_at=record.started_at,
            dump_finished_at=record.finished_at,
        )
