"""`db-backup serve`: the resident scheduler (scheduler.py) wired to the same runs as the
one-shot commands — a backup task is a `backup -n NAME` run, `verify:` is `verify --restore`,
`prune:` is `prune` — under one set of limits shared by everything that runs at once.

Signals: SIGHUP reloads the config (a broken one is reported and the running one kept);
SIGTERM or SIGINT stop scheduling and cancel the runs in progress, which stop their dumps
and remove their partial files as a cancelled `backup` does, then exit 143 / 130 (a second
signal, or a stop taking longer than interrupts.FORCED_EXIT_SECONDS, exits at once).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from db_backup.cli import exits, setup
from db_backup.errors import BackupError
from db_backup.redact import redact_known
from db_backup.schedule import parse_zone
from db_backup.threads import in_thread

log = logging.getLogger("db_backup.serve")
FAILURES_KEPT = 5  # per job, for the web UI's job page
FINISHED_KEPT = 20  # the last jobs to finish, for the web UI's runs page


class ServeError(BackupError):
    """`serve` cannot start (the address to listen on is taken, say)."""

    kind = "serve"


class Service:
    """The config in force, the limits every run shares, and the scheduler."""

    def __init__(self, path: Path, config: Any, *, json_lines: bool = False) -> None:
        from db_backup.cli.render import PlainRenderer
        from db_backup.scheduler import Scheduler

        self.path = path
        self.config = config
        self.limits = limits_of(config)
        self._reloading = asyncio.Lock()  # one SIGHUP at a time, applied in order
        self._reloads: set[asyncio.Task[None]] = set()
        self.renderer = PlainRenderer(sys.stderr, json_lines=json_lines)
        self.scheduler = Scheduler(self.fire, lambda: datetime.now(UTC))
        # For the endpoints: the jobs running now, each job's last attempt, and the catalog
        # as it was after the last run (listing targets per scrape would be slow and costly).
        self.running: dict[str, dict[str, Any]] = {}
        self.attempts: dict[str, Any] = {}
        self.archives: list[Any] = []
        # Each job's last failures with their error text (the web UI's job page), bounded.
        self.failures: dict[str, deque[tuple[datetime, str]]] = {}
        self.outcomes: dict[str, Any] = {}  # job → views.Attempted, the last of each
        self.queued: dict[str, None] = {}  # jobs waiting for a slot, in order
        self.finished: deque[dict[str, Any]] = deque(maxlen=FINISHED_KEPT)

    def say(self, text: str) -> None:
        self.renderer.note(text)

    def track(self, event: Any) -> None:
        """A job event of any run: the running jobs' progress, for /api/status."""
        from db_backup.model import JobFinished, JobProgress, JobQueued, JobStarted

        if isinstance(event, JobQueued):
            self.queued[event.job.name] = None
        elif isinstance(event, JobStarted):
            self.queued.pop(event.job.name, None)
            self.running[event.job.name] = {
                "job": event.job.name,
                "backup": event.job.backup.name,
                "database": event.job.database,
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "raw_bytes": 0,
                "stored_bytes": 0,
                "estimated_bytes": event.estimated_bytes,
            }
        elif isinstance(event, JobProgress) and event.job.name in self.running:
            entry = self.running[event.job.name]
            entry["raw_bytes"], entry["stored_bytes"] = event.raw_bytes, event.stored_bytes
        elif isinstance(event, JobFinished):
            self._finished(event.result)

    def _finished(self, result: Any) -> None:
        """A job's end: off the running and queued lists, onto the last finished; and, if it
        ran, its outcome with its error text (masked; the last few kept per job)."""
        from db_backup.model import JobStatus
        from db_backup.web.views import Attempted

        job = result.job.name
        self.running.pop(job, None)
        self.queued.pop(job, None)
        ok = result.status is JobStatus.SUCCEEDED
        error = redact_known(result.error) if result.error and not ok else None
        at = result.finished_at or result.started_at or datetime.now(UTC)
        self.finished.appendleft(
            {
                "job": job,
                "status": result.status.value,
                "finished_at": at.astimezone(UTC).isoformat(timespec="seconds"),
                "error": error,
            }
        )
        if result.status is JobStatus.CANCELLED or result.started_at is None:
            return
        said = None if ok else error or "failed"
        self.outcomes[job] = Attempted(at, ok, said)
        if said is not None:
            self.failures.setdefault(job, deque(maxlen=FAILURES_KEPT)).appendleft((at, said))

    async def refresh_catalog(self) -> None:
        from db_backup.catalog import list_backups

        self.archives = list((await list_backups(self.config)).archives)

    def metrics_text(self) -> str:
        from db_backup.metrics import TaskState, exposition, scheduler_exposition

        running = self.scheduler.in_progress
        tasks = [
            TaskState(s.task.kind, s.task.name, s.next_start.timestamp(), s in running, s.skipped)
            for s in self.scheduler.slots.values()
            if s.next_start is not None
        ]
        text: str = exposition(self.archives, self.attempts)
        return text + scheduler_exposition(tasks)

    def healthy(self) -> bool:
        from db_backup.scheduler import HEARTBEAT_SECONDS

        beat = self.scheduler.heartbeat
        if beat is None or self.scheduler.stopping:
            return False
        return (datetime.now(UTC) - beat).total_seconds() < 6 * HEARTBEAT_SECONDS

    def status(self) -> dict[str, Any]:
        def moment(value: datetime | None) -> str | None:
            return value.isoformat(timespec="seconds") if value is not None else None

        tasks = [
            {
                "task": slot.task.name,
                "kind": slot.task.kind,
                "schedule": slot.task.schedule.text,
                "next_run": moment(slot.next_start),
                "running": slot in self.scheduler.in_progress,
                "started_at": moment(slot.started_at),
                "last_finished_at": moment(slot.last_finished_at),
                "last_error": redact_known(slot.last_error) if slot.last_error else None,
                "runs": slot.runs,
                "skipped": slot.skipped,
            }
            for slot in self.scheduler.slots.values()
        ]
        return {
            "config": str(self.path),
            "timezone": str(parse_zone(self.config.timezone)),
            "tasks": tasks,
            "running_jobs": list(self.running.values()),
            "last_attempts": {
                job: {
                    "started_at": moment(datetime.fromtimestamp(a.at, UTC)),
                    "success": a.success,
                }
                for job, a in sorted(self.attempts.items())
            },
        }

    async def start(self) -> None:
        """The config's tasks, each due now if a run was missed while we were down."""
        self.apply(self.config, *await self._tasks_and_catalog(self.config))

    async def _tasks_and_catalog(self, config: Any) -> tuple[Any, Any]:
        from db_backup.catalog import list_backups
        from db_backup.schedule import tasks_of

        tasks = tasks_of(config)
        catalog = await list_backups(config)
        for label, error in catalog.errors.items():
            self.say(f"warning: target {label} could not be listed: {error}")
        return tasks, catalog

    def apply(self, config: Any, tasks: Any, catalog: Any) -> None:
        """Put `config` in force with its tasks, at once (no run fires in between)."""
        from db_backup.catalog import newest_per_backup

        if config is not self.config:
            self.config = config
            self.limits = limits_of(config)  # runs in progress keep theirs
        self.archives = list(catalog.archives)
        self.scheduler.set_tasks(tasks, newest_per_backup(catalog.archives))
        for slot in self.scheduler.slots.values():
            when = slot.starts_at.isoformat(timespec="seconds")
            self.say(f"scheduled {slot.key} ({slot.task.schedule.text}): next at {when}")
        if not tasks:
            self.say("nothing is scheduled: give backups a `schedule:` (see README)")

    def request_reload(self) -> None:
        """SIGHUP's handler: reload in the background, one after the other."""
        task = asyncio.ensure_future(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> None:
        """The config again; if it is broken, say so and keep the one in force."""
        async with self._reloading:
            try:
                config = await in_thread(setup.load_config, self.path)
                tasks, catalog = await self._tasks_and_catalog(config)
            except BackupError as exc:
                self.say(
                    f"SIGHUP: {self.path} not reloaded, still running the previous config: {exc}"
                )
                return
            if not self.scheduler.stopping:
                self.apply(config, tasks, catalog)
                self.say(f"SIGHUP: reloaded {self.path}")

    async def fire(self, task: Any) -> None:
        """Run one task with the config in force now."""
        config = self.config
        if task.kind == "backup":
            await self._backup(config, task.name)
        elif task.kind == "verify":  # `verify:` tests every job; "test now", one
            await self._verify(config, None if task.name == "verify" else task.name)
        else:
            await self._prune(config)

    async def _backup(self, config: Any, name: str) -> None:
        from db_backup.aftermath import after_run, notifications_for
        from db_backup.metrics import attempts_of
        from db_backup.plan import select_backups
        from db_backup.run import BackupRun

        selected = select_backups(config, (name,))
        notifications = notifications_for(config, selected)
        # Runs on one target take turns at its lock; the slots are the process's.
        run = BackupRun([self.renderer, self.track], wait=float("inf"), limits=self.limits)
        if notifications is not None:
            notifications.start()
        try:
            report = await run.execute(config, selected, names=(name,))
        except (Exception, asyncio.CancelledError) as exc:  # no job ran: a lock, a stop
            if notifications is not None:
                await setup.tell_of_a_stopped_run(
                    notifications, config, selected, exc, when="before the run finished"
                )
            raise
        self.attempts |= attempts_of(report)
        warnings, _ = await after_run(config, report, exits.for_run(report), notifications)
        await self.refresh_catalog()
        for warning in warnings:
            self.say(f"warning: {warning}")
        from db_backup.model import JobStatus

        stored = sum(1 for result in report.results if result.status is JobStatus.SUCCEEDED)
        self.say(f"backup {name}: {stored} stored, {len(report.failed)} failed")

    def web_state(self) -> Any:
        """What the web UI shows, now (web/__init__.py)."""
        from db_backup.web import WebState

        schedules = {
            slot.task.name: (slot.task.schedule, slot.next_start)
            for slot in self.scheduler.slots.values()
            if slot.task.kind == "backup" and slot.next_start is not None
        }
        return WebState(
            config=self.config,
            archives=self.archives,
            schedules=schedules,
            running=self.running,
            attempts=self.outcomes,
            failures=self.failures,
            tasks=self.status()["tasks"],
            zone=parse_zone(self.config.timezone),
            now=datetime.now(UTC),
            queued=list(self.queued),
            finished=list(self.finished),
        )

    def run_now(self, job: str) -> str:
        """The web UI's "run now": the job's backup, through the scheduler (never twice)."""
        from db_backup.schedule import MANUAL, Task
        from db_backup.web.views import backup_of

        backup = backup_of(self.config, job)
        if backup is None:
            return f"no backup is named {job}"
        slot = self.scheduler.slots.get(f"backup:{backup.name}")
        task = slot.task if slot is not None else Task("backup", backup.name, MANUAL)
        if not self.scheduler.start_now(task):
            return f"{backup.name} is running already"
        return f"{backup.name} started"

    def verify_now(self, job: str) -> str:
        """The web UI's "restore-test now": `job`'s newest backup, in a sandbox."""
        from db_backup.schedule import MANUAL, Task
        from db_backup.web.views import backup_of

        if backup_of(self.config, job) is None:
            return f"no backup is named {job}"
        if not self.scheduler.start_now(Task("verify", job, MANUAL)):
            return f"a restore test of {job} is running already"
        return f"restore test of {job} started"

    async def prune_preview(self) -> Any:
        """`prune --dry-run`: what retention would keep and delete now, and why."""
        from db_backup.prune import prune_config

        report = await prune_config(self.config, (), dry_run=True, now=datetime.now(UTC))
        return report.verdicts

    async def _verify(self, config: Any, job: str | None = None) -> None:
        from db_backup.catalog import list_backups
        from db_backup.cli.setup import reading_keys
        from db_backup.restore_proof import chosen, prove_restores

        catalog = await list_backups(config)
        keys = reading_keys(None, config.verify.identity_file)
        wanted = [a for a in catalog.archives if job is None or a.job == job]
        results = await prove_restores(
            config,
            chosen(wanted, every=False),
            catalog.archives,
            on_result=lambda r: self.say(f"restore test {r.archive.location}: {outcome(r)}"),
            keys=keys,
        )
        await self.refresh_catalog()  # the restore tests' records, for the pages
        failed = sum(1 for result in results if not result.ok)
        removed = sum(1 for result in results if result.removed)
        self.say(
            f"restore tests: {len(results) - failed - removed} OK, {failed} failed"
            + (f", {removed} removed by retention meanwhile" if removed else "")
        )

    async def _prune(self, config: Any) -> None:
        from db_backup.prune import prune_config

        # Waits for the backups running on a target: each holds its lock while it runs.
        report = await prune_config(
            config, (), dry_run=False, now=datetime.now(UTC), wait=float("inf")
        )
        if report.deleted:
            await self.refresh_catalog()
        for archive in report.deleted:
            self.say(f"prune: deleted {archive.location}")
        for label, error in report.errors.items():
            self.say(f"prune: target {label}: {error}")
        self.say(f"prune: {len(report.verdicts) - len(report.deleted)} kept, "
                 f"{len(report.deleted)} deleted")  # fmt: skip


DEFAULT_LISTEN = "127.0.0.1:9187"


def limits_of(config: Any) -> Any:
    """The limits every run of `config` shares: `concurrency`, and each server's smallest
    `max_per_host` over all its backups (not only those of the first run to start)."""
    from db_backup.orchestrator import Limits
    from db_backup.plan import default_concurrency, host_limits_of

    return Limits(config.concurrency or default_concurrency(), host_limits_of(config.backups))


def _web_app(service: Service, host: str) -> Any:
    """The endpoints plus the web UI, behind its guard (a login off loopback)."""
    from db_backup.endpoints import make_app
    from db_backup.web import guarded, web_routes
    from db_backup.web.security import guard_for

    guard = guard_for(service.config.web, host)
    return guarded(make_app(service, web_routes(service, guard)), guard)


def outcome(result: Any) -> str:
    """A restore test's outcome, in a word or a reason."""
    if result.removed:
        return "removed by retention while it was being tested"
    return "OK" if result.ok else f"FAILED: {'; '.join(result.problems)}"


def serve(path: Path, listen: str | None, log_format: str = "plain", web: bool = False) -> None:
    """Load the config and run the scheduler (and, with `listen`, the HTTP endpoints) until
    SIGTERM/SIGINT."""
    from db_backup.interrupts import run_interruptible

    setup.use_one_malloc_arena()
    if log_format == "json":
        setup.log_as_json()
    address = None
    if web and listen is None:
        listen = DEFAULT_LISTEN
    if web:
        from db_backup.web import MISSING_EXTRA, web_available

        if not web_available():
            exits.fail_usage(f"--web: {MISSING_EXTRA}")
    if listen is not None:
        from db_backup.endpoints import parse_listen

        try:
            address = parse_listen(listen)
        except ValueError as exc:
            exits.fail_usage(f"--listen: {exc}")
    with exits.errors_to_exit_codes():
        config = setup.load_config(path)
        service = Service(path, config, json_lines=log_format == "json")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, service.request_reload)
        listener = None
        try:
            if address is not None:
                from db_backup.endpoints import Listener

                listener = Listener(
                    service, *address, app=_web_app(service, address[0]) if web else None
                )
                try:
                    await listener.start()
                except OSError as exc:
                    raise ServeError(f"--listen {listen}: {exc.strerror or exc}") from None
                service.say(
                    f"listening on http://{listener.address} (/metrics, /healthz, /api/status)"
                )
            await service.start()
            service.say(f"serving {path}: {len(service.scheduler.slots)} scheduled")
            await service.scheduler.run()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            if listener is not None:
                await listener.stop()

    def on_signal(name: str) -> bool:
        service.say(f"{name} received: stopping; runs in progress are cancelled")
        service.scheduler.stop()
        return True

    with exits.errors_to_exit_codes():
        outcome = run_interruptible(main(), on_signal)
    stopped_by = outcome.received[0] if outcome.received else outcome.interrupted_by
    raise SystemExit(exits.for_signal(stopped_by) if stopped_by else exits.EXIT_OK)
