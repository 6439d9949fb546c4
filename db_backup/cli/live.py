"""The live view on a terminal: a bar per running job, a few waiting rows, an overall line."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from db_backup.cli.render import STATUS_STYLE, finish_line, retry_line
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
    Waiting,
)
from db_backup.units import format_bytes


class _DescriptionColumn(ProgressColumn):
    """The row's text, printed literally: names, paths and errors are the user's data, and
    `[bold]` in a database name is not markup. A row may carry styled `text` instead."""

    def render(self, task: Task) -> Text:
        styled = task.fields.get("text")
        return styled if isinstance(styled, Text) else Text(task.description)


class _SizeColumn(ProgressColumn):
    """Bytes for job rows; `done/total jobs` for the overall row."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn(binary_units=True)

    def render(self, task: Task) -> Text:
        if task.fields.get("overall"):
            return Text(f"{int(task.completed)}/{int(task.total or 0)} jobs")
        if task.fields.get("wait"):
            return Text("")
        if not task.started:
            return Text("waiting", style="dim")
        return self._bytes.render(task)


class _RateColumn(ProgressColumn):
    """Throughput in the same binary units as the sizes beside it."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{format_bytes(speed)}/s" if speed else "-", style="progress.data.speed")


class _JobOnlyColumn(ProgressColumn):
    """Shows the wrapped column for running job rows only (and, `with_waits`, for rows of
    waits that last: see notice.py)."""

    def __init__(self, inner: ProgressColumn, *, with_waits: bool = False) -> None:
        super().__init__()
        self._inner = inner
        self._with_waits = with_waits

    def render(self, task: Task) -> Any:
        if task.fields.get("overall") or not task.started:
            return Text("")
        if task.fields.get("wait") and not self._with_waits:
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
            _DescriptionColumn(),
            BarColumn(bar_width=30),
            _SizeColumn(),
            _JobOnlyColumn(_RateColumn()),
            _JobOnlyColumn(TimeElapsedColumn(), with_waits=True),
            _JobOnlyColumn(TimeRemainingColumn()),
            console=console,
            transient=True,
            refresh_per_second=8,
        )
        self._overall = self._progress.add_task("jobs", total=0, overall=True)
        self._queued: list[JobSpec] = []
        self._waiting_rows: dict[str, TaskID] = {}
        self._running_rows: dict[str, TaskID] = {}
        self._wait_rows: dict[str, TaskID] = {}
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
        elif isinstance(event, Waiting):
            self._waiting(event)
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
            line = Text(finish_line(result), style=STATUS_STYLE[result.status])
            self._progress.console.print(line, markup=False, highlight=False)

    def _waiting(self, event: Waiting) -> None:
        """A row per wait that lasts, its elapsed time ticking, gone when it is over."""
        row = self._wait_rows.get(event.what)
        if event.over:
            if row is not None:
                self._progress.remove_task(self._wait_rows.pop(event.what))
        elif row is None:
            self._wait_rows[event.what] = self._progress.add_task(
                f"waiting: {event.what}", total=None, wait=True
            )

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
        text = Text(" · ".join(parts))
        if self._counts[JobStatus.FAILED]:
            text.append(f" · {self._counts[JobStatus.FAILED]} failed", style="red")
        self._progress.update(self._overall, description=text.plain, text=text)

    def _done(self) -> int:
        return sum(self._counts.values())
