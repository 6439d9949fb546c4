"""The summary table at the end of a run, and the plan a dry run prints (rich tables).

Every cell is a Text, never a str: rich reads markup in a str, and names, paths and error
messages are the user's data (`[/]` in a database name crashed the table, `[bold red]`
restyled it). Only our own styles are styles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

from rich import box
from rich.table import Table
from rich.text import Text

from db_backup import runtime
from db_backup.catalog import Archive
from db_backup.cli.render import STATUS_STYLE
from db_backup.model import JobResult, JobStatus, Plan, RunReport
from db_backup.schedule import Task, missed
from db_backup.shard import Shard
from db_backup.units import format_bytes, format_duration, format_rate

if TYPE_CHECKING:
    from db_backup.fleet import FleetSummary
    from db_backup.run import Sharding


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
            Text(result.job.name),
            Text(result.status.value, style=STATUS_STYLE[result.status]),
            Text(format_bytes(result.stored_bytes) if succeeded else "-"),
            Text(format_duration(result.duration) if result.started_at else "-"),
            Text(format_rate(result.raw_bytes, result.duration) if succeeded else "-"),
            Text(
                "\n".join(c.file for c in result.copies)
                if succeeded
                else (result.error or result.note or "")
            ),
        )
    counts = {status: 0 for status in JobStatus}
    for result in report.results:
        counts[result.status] += 1
    elapsed = (report.finished_at - report.started_at).total_seconds()
    table.caption = (
        f"{counts[JobStatus.SUCCEEDED]} succeeded, {counts[JobStatus.FAILED]} failed, "
        f"{counts[JobStatus.CANCELLED]} cancelled"
        + (f", {counts[JobStatus.ELSEWHERE]} elsewhere" if counts[JobStatus.ELSEWHERE] else "")
        + f" in {format_duration(elapsed)}"
        + (f" (shard {report.shard})" if report.shard else "")
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
        stores = runtime.current()
        where = "\n".join(stores.store(t.storage).location(t.filename) for t in job.targets)
        table.add_row(*map(Text, (job.name, job.database, str(job.server), fmt, where)))
    for result in failures:
        job = result.job
        cells = map(Text, (job.name, job.database, str(job.server), "-"))
        table.add_row(*cells, Text(result.error or "", style="red"))
    limits = ", ".join(f"{server}: {limit}" for server, limit in plan.host_limits.items())
    table.caption = Text(
        f"{len(plan.jobs)} jobs, at most {plan.concurrency} at once"
        + (f"; per server: {limits}" if limits else "")
    )
    table.caption_justify = "left"
    return table


def restore_test_cell(archive: Archive) -> str:
    """`restore-tested <time> OK`, `restore test FAILED: <reason>`, or "-" (never tested)."""
    tested = archive.restore_test
    if tested is None:
        return "-"
    if tested.ok:
        return f"restore-tested {tested.tested_at:%Y-%m-%d %H:%M} OK"
    return f"restore test FAILED: {'; '.join(tested.problems)}"


def catalog_table(archives: Sequence[Archive]) -> Table:
    """`db-backup list`: every finished backup, newest first."""
    table = Table(box=box.SIMPLE_HEAD, title="db-backup backups", title_justify="left")
    for column in ("taken (UTC)", "job", "database", "size", "verified"):
        table.add_column(column, no_wrap=True, justify="right" if column == "size" else "left")
    table.add_column("restore test", overflow="fold")
    table.add_column("target", overflow="fold")
    table.add_column("file", overflow="fold")
    for archive in archives:
        cells = (
            archive.taken_at.strftime("%Y-%m-%d %H:%M:%S"),
            archive.job,
            archive.database,
            format_bytes(archive.stored_bytes),
            ", ".join(archive.checks) or "no",
            restore_test_cell(archive),
            archive.target,
            archive.name,
        )
        table.add_row(*map(Text, cells))
    table.caption = f"{len(archives)} backups"
    table.caption_justify = "left"
    return table


def schedule_table(
    tasks: Sequence[Task], last: Mapping[str, datetime], now: datetime, zone: tzinfo, count: int
) -> Table:
    """`db-backup schedule`: each scheduled task's next runs, in the schedules' zone and in
    UTC, and each backup's newest finished backup from the catalog."""
    table = Table(box=box.SIMPLE_HEAD, title=f"db-backup schedule ({zone})", title_justify="left")
    for column in ("task", "schedule", "next runs (local, UTC)", "last backup"):
        table.add_column(column, overflow="fold")
    for task in tasks:
        runs, moment = [], now
        for _ in range(count):
            moment = task.schedule.next_after(moment)
            start = task.start(moment)
            runs.append(f"{start.astimezone(zone):%Y-%m-%d %H:%M %Z}  ({start:%H:%M} UTC)")
        newest = last.get(task.name) if task.kind == "backup" else None
        if task.kind != "backup":
            newest_text = "-"
        elif newest is None:
            newest_text = "none yet: runs when serve starts"
        else:
            stale = missed(task.schedule, newest, now)
            newest_text = f"{newest.astimezone(zone):%Y-%m-%d %H:%M %Z}" + (
                "  (a run was missed: serve runs it at start)" if stale else ""
            )
        jitter = f" + up to {format_duration(task.jitter)}" if task.jitter else ""
        label = task.name if task.kind == "backup" else f"{task.kind} (every job)"
        table.add_row(
            Text(label), Text(task.schedule.text + jitter), Text("\n".join(runs)), Text(newest_text)
        )
    table.caption = f"{len(tasks)} scheduled; times include each run's jitter"
    table.caption_justify = "left"
    return table


def partition_table(shares: Sharding, count: int, only: Shard | None = None) -> Table:
    """How the jobs fall to `count` runners (or to shard `only`): each shard's jobs and the
    bytes they dumped last time (a median stands in where none is known; a database found
    since the last backup is placed by its name, its size unknown)."""
    table = Table(box=box.SIMPLE_HEAD, title=f"{count} shards", title_justify="left")
    for column in ("shard", "jobs", "expected"):
        table.add_column(column, no_wrap=column != "jobs")
    weights = shares.partition.weights
    for index in range(count) if only is None else (only.index,):
        jobs = sorted(shares.jobs_of(index))
        named = ", ".join(f"{job} (new)" if job in shares.newcomers else job for job in jobs)
        expected = format_bytes(shares.partition.loads[index])
        table.add_row(f"{index}/{count}", Text(named or "-"), expected)
    unsized = len(shares.partition.unsized)
    table.caption = Text(
        f"{len(weights) + len(shares.newcomers)} jobs; sizes from backups taken before "
        f"{shares.anchor:%Y-%m-%d %H:%M} UTC"
        + (f"; {unsized} without one count as the median" if unsized else "")
        + ("; (new): found since, placed by name, size unknown" if shares.newcomers else "")
    )
    table.caption_justify = "left"
    return table


def fleet_table(summary: FleetSummary) -> Table:
    """`db-backup report`: each expected job, backed up since the moment or missing."""
    since = summary.since.strftime("%Y-%m-%d %H:%M:%S")
    table = Table(box=box.SIMPLE_HEAD, title=f"backups since {since} UTC", title_justify="left")
    for column in ("job", "status", "taken (UTC)", "raw size"):
        table.add_column(column, no_wrap=True, justify="right" if column == "raw size" else "left")
    table.add_column("where", overflow="fold")
    for job in summary.jobs:
        status = Text("backed up", style="green") if job.backed_up else Text("MISSING", "bold red")
        taken = job.taken_at.strftime("%Y-%m-%d %H:%M:%S") if job.taken_at else "-"
        size = format_bytes(job.raw_bytes) if job.backed_up else "-"
        table.add_row(
            Text(job.job), status, Text(taken), Text(size), Text("\n".join(job.locations))
        )
    missing = len(summary.missing)
    table.caption = (
        f"{len(summary.jobs) - missing} of {len(summary.jobs)} jobs backed up, {missing} missing; "
        f"{format_bytes(summary.stored_bytes)} stored"
    )
    table.caption_justify = "left"
    return table
