"""JobEvents → what a person (or a program) sees: live bars, plain lines, a summary, JSON.

The core never imports rich; these subscribers turn its events into output. Progress and
per-job lines go to stderr, results (summary table, JSON report) to stdout, so
`db-backup backup --json | jq` works and cron mails stay readable.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

import msgspec
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from db_backup.errors import ConnectionCheckError
from db_backup.model import (
    JobEvent,
    JobFinished,
    JobProgress,
    JobQueued,
    JobResult,
    JobRetrying,
    JobSpec,
    JobStarted,
    JobStatus,
    Plan,
    RunReport,
)
from db_backup.preflight import CheckOutcome
from db_backup.units import format_bytes, format_duration, format_rate

_STATUS_STYLE = {
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "bold red",
    JobStatus.CANCELLED: "yellow",
}


def _clock(moment: datetime | None = None) -> str:
    return (moment or datetime.now().astimezone()).strftime("%Y-%m-%dT%H:%M:%S%z")


def describe_job(job: JobSpec) -> str:
    what = "globals" if job.kind == "globals" else f"database {job.database!r}"
    return f"{what} on {job.server}"


def check_line(outcome: CheckOutcome) -> str:
    """`validate --connect`: how one job's connection check went."""
    job, error = outcome.job, outcome.error
    where = f"{job.database!r} on {job.server}"
    if isinstance(error, ConnectionCheckError):
        return f"{job.name}: {error.kind} ({where}): {error.detail}"
    if error is not None:
        return f"{job.name}: error ({where}): {error}"
    assert outcome.server is not None
    return f"{job.name}: reachable ({where}, PostgreSQL {outcome.server.version.split(' ')[0]})"


def retry_line(event: JobRetrying) -> str:
    return (
        f"retry    {event.job.name}: attempt {event.attempt} of {event.attempts} failed: "
        f"{event.error}; trying again in {format_duration(event.delay)}"
    )


def finish_line(result: JobResult) -> str:
    """One line saying how a job ended, as plain text."""
    job = result.job
    if result.status is JobStatus.SUCCEEDED:
        return (
            f"done     {job.name}: {format_bytes(result.stored_bytes)} "
            f"({format_bytes(result.raw_bytes)} raw) in {format_duration(result.duration)} "
            f"→ {result.file}"
        )
    if result.status is JobStatus.CANCELLED:
        return f"cancelled {job.name}: {result.error}"
    return f"FAILED   {job.name} ({describe_job(job)}): {result.error}"


class PlainRenderer:
    """One line per job start, finish and failure; no escape codes. For cron and pipes."""

    def __init__(self, stream: IO[str], *, quiet: bool = False) -> None:
        self._stream = stream
        self._quiet = quiet

    def __call__(self, event: JobEvent) -> None:
        if isinstance(event, JobStarted) and not self._quiet:
            self._line(f"start    {event.job.name} ({describe_job(event.job)})")
        elif isinstance(event, JobRetrying) and not self._quiet:
            self._line(retry_line(event))
        elif isinstance(event, JobFinished) and (
            not self._quiet or event.result.status is JobStatus.FAILED
        ):
            self._line(finish_line(event.result))

    def note(self, text: str) -> None:
        self._line(text)

    def close(self) -> None:
        self._stream.flush()

    def _line(self, text: str) -> None:
        self._stream.write(f"{_clock()} {text}\n")
        self._stream.flush()


class _SizeColumn(ProgressColumn):
    """Bytes for job rows; `done/total jobs` for the overall row."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn(binary_units=True)

    def render(self, task: Task) -> Text:
        if task.fields.get("overall"):
            return Text(f"{int(task.completed)}/{int(task.total or 0)} jobs")
        if not task.started:
            return Text("waiting", style="dim")
        return self._bytes.render(task)


class _RateColumn(ProgressColumn):
    """Throughput in the same binary units as the sizes beside it."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{format_bytes(speed)}/s" if speed else "-", style="progress.data.speed")


class _JobOnlyColumn(ProgressColumn):
    """Shows the wrapped column for running job rows only."""

    def __init__(self, inner: ProgressColumn) -> None:
        super().__init__()
        self._inner = inner

    def render(self, task: Task) -> Any:
        if task.fields.get("overall") or not task.started:
            return Text("")
        return self._inner.render(task)


class LiveRenderer:
    """Rich progress on a terminal: a bar per running job, a few waiting rows, an overall bar.

    With hundreds of jobs the screen shows only what runs (at most `concurrency` rows), the
    next few queued jobs, and counts; finished jobs scroll by above as one line each.
    """

    WAITING_ROWS = 3

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self._console = console
        self._quiet = quiet
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            _SizeColumn(),
            _JobOnlyColumn(_RateColumn()),
            _JobOnlyColumn(TimeElapsedColumn()),
            _JobOnlyColumn(TimeRemainingColumn()),
            console=console,
            transient=True,
            refresh_per_second=8,
        )
        self._overall = self._progress.add_task("jobs", total=0, overall=True)
        self._queued: list[JobSpec] = []
        self._waiting_rows: dict[str, TaskID] = {}
        self._running_rows: dict[str, TaskID] = {}
        self._counts = {status: 0 for status in JobStatus}
        self._progress.start()

    def __call__(self, event: JobEvent) -> None:
        if isinstance(event, JobQueued):
            self._queued.append(event.job)
            self._progress.update(self._overall, total=len(self._queued) + self._done())
        elif isinstance(event, JobStarted):
            self._dequeue(event.job)
            self._running_rows[event.job.name] = self._progress.add_task(
                event.job.name, total=event.estimated_bytes
            )
        elif isinstance(event, JobProgress):
            row = self._running_rows.get(event.job.name)
            if row is not None:
                self._progress.update(row, completed=event.raw_bytes)
        elif isinstance(event, JobRetrying):
            row = self._running_rows.pop(event.job.name, None)
            if row is not None:
                self._progress.remove_task(row)
            if not self._quiet:
                self._progress.console.print(
                    Text(retry_line(event), style="yellow"), markup=False, highlight=False
                )
        elif isinstance(event, JobFinished):
            self._finish(event.result)
        self._refresh_summary()

    def note(self, text: str) -> None:
        self._progress.console.print(text, style="yellow", markup=False, highlight=False)

    @property
    def rows(self) -> list[str]:
        """The descriptions of the rows on screen now (the overall row first)."""
        return [str(task.description) for task in self._progress.tasks]

    def close(self) -> None:
        self._progress.stop()

    def _finish(self, result: JobResult) -> None:
        name = result.job.name
        self._dequeue(result.job)
        row = self._running_rows.pop(name, None)
        if row is not None:
            self._progress.remove_task(row)
        self._counts[result.status] += 1
        self._progress.update(self._overall, completed=self._done())
        if not self._quiet or result.status is JobStatus.FAILED:
            line = Text(finish_line(result), style=_STATUS_STYLE[result.status])
            self._progress.console.print(line, markup=False, highlight=False)

    def _dequeue(self, job: JobSpec) -> None:
        if job in self._queued:
            self._queued.remove(job)
        row = self._waiting_rows.pop(job.name, None)
        if row is not None:
            self._progress.remove_task(row)

    def _refresh_summary(self) -> None:
        for job in self._queued[: self.WAITING_ROWS]:
            if job.name not in self._waiting_rows:
                self._waiting_rows[job.name] = self._progress.add_task(
                    job.name, start=False, total=None
                )
        parts = [
            f"{self._done()}/{self._done() + len(self._queued) + len(self._running_rows)} done",
            f"{len(self._running_rows)} running",
            f"{len(self._queued)} queued",
        ]
        if self._counts[JobStatus.FAILED]:
            parts.append(f"[red]{self._counts[JobStatus.FAILED]} failed[/red]")
        self._progress.update(self._overall, description=" · ".join(parts))

    def _done(self) -> int:
        return sum(self._counts.values())


def summary_table(report: RunReport) -> Table:
    """Job, status, size, duration, rate and file (or the error) for every job."""
    table = Table(box=box.SIMPLE_HEAD, title="db-backup run", title_justify="left")
    table.add_column("job", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("size", "duration", "rate"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("file / error", overflow="fold")
    for result in report.results:
        succeeded = result.status is JobStatus.SUCCEEDED
        table.add_row(
            result.job.name,
            Text(result.status.value, style=_STATUS_STYLE[result.status]),
            format_bytes(result.stored_bytes) if succeeded else "-",
            format_duration(result.duration) if result.started_at else "-",
            format_rate(result.raw_bytes, result.duration) if succeeded else "-",
            str(result.file) if succeeded else (result.error or ""),
        )
    counts = {status: 0 for status in JobStatus}
    for result in report.results:
        counts[result.status] += 1
    elapsed = (report.finished_at - report.started_at).total_seconds()
    table.caption = (
        f"{counts[JobStatus.SUCCEEDED]} succeeded, {counts[JobStatus.FAILED]} failed, "
        f"{counts[JobStatus.CANCELLED]} cancelled in {format_duration(elapsed)}"
        + (f" (interrupted by {report.interrupted_by})" if report.interrupted_by else "")
    )
    table.caption_justify = "left"
    return table


def plan_table(plan: Plan, failures: Sequence[JobResult] = ()) -> Table:
    """What a run would do: jobs, servers, target files."""
    table = Table(box=box.SIMPLE_HEAD, title="db-backup plan (dry run)", title_justify="left")
    for column in ("job", "database", "server", "format"):
        table.add_column(column, no_wrap=True)
    table.add_column("target file", overflow="fold")
    for job in plan.jobs:
        fmt = "globals" if job.kind == "globals" else job.backup.format
        table.add_row(job.name, job.database, str(job.server), fmt, str(job.target.final_path))
    for result in failures:
        table.add_row(
            result.job.name,
            result.job.database,
            str(result.job.server),
            "-",
            Text(f"cannot list databases: {result.error}", style="red"),
        )
    limits = ", ".join(f"{server}: {limit}" for server, limit in plan.host_limits.items())
    table.caption = f"{len(plan.jobs)} jobs, at most {plan.concurrency} at once" + (
        f"; per server: {limits}" if limits else ""
    )
    table.caption_justify = "left"
    return table


class _JobReport(msgspec.Struct, kw_only=True):
    job: str
    backup: str
    kind: str
    database: str
    server: str
    status: str
    error: str | None
    file: str | None
    manifest: str | None
    raw_bytes: int
    stored_bytes: int
    sha256: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float


class _RunReport(msgspec.Struct, kw_only=True):
    started_at: datetime
    finished_at: datetime
    exit_code: int
    peak_rss_bytes: int  # of the runner process itself (children such as pg_dump excluded)
    interrupted_by: str | None
    succeeded: int
    failed: int
    cancelled: int
    jobs: list[_JobReport]


def json_report(report: RunReport, exit_code: int) -> bytes:
    """The run as JSON for programs: one object, every job with its outcome."""
    jobs = [
        _JobReport(
            job=r.job.name,
            backup=r.job.backup.name,
            kind=r.job.kind.value,
            database=r.job.database,
            server=str(r.job.server),
            status=r.status.value,
            error=r.error,
            file=str(r.file) if r.file else None,
            manifest=str(r.manifest) if r.manifest else None,
            raw_bytes=r.raw_bytes,
            stored_bytes=r.stored_bytes,
            sha256=r.sha256,
            started_at=r.started_at,
            finished_at=r.finished_at,
            duration_seconds=round(r.duration, 3),
        )
        for r in report.results
    ]
    body = _RunReport(
        started_at=report.started_at,
        finished_at=report.finished_at,
        exit_code=exit_code,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        interrupted_by=report.interrupted_by,
        succeeded=sum(1 for j in jobs if j.status == JobStatus.SUCCEEDED),
        failed=sum(1 for j in jobs if j.status == JobStatus.FAILED),
        cancelled=sum(1 for j in jobs if j.status == JobStatus.CANCELLED),
        jobs=jobs,
    )
    return msgspec.json.format(msgspec.json.encode(body), indent=2) + b"\n"
