"""JobEvents → what a person or a program reads: plain lines, and the JSON report.

The core never imports rich; neither does this module, so runs under cron or with `--json`
do not pay for it. The live view is in live.py, the tables in tables.py. Progress and
per-job lines go to stderr, results (summary table, JSON report) to stdout, so
`db-backup backup --json | jq` works and cron mails stay readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import IO, Protocol

import msgspec

from db_backup.catalog import Catalog
from db_backup.errors import ConnectionCheckError
from db_backup.fleet import FleetSummary
from db_backup.model import (
    JobEvent,
    JobFinished,
    JobResult,
    JobRetrying,
    JobSpec,
    JobStarted,
    JobStatus,
    Waiting,
)
from db_backup.preflight import CheckOutcome
from db_backup.units import format_bytes, format_duration

STATUS_STYLE = {  # rich styles, by status
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "bold red",
    JobStatus.CANCELLED: "yellow",
    JobStatus.ELSEWHERE: "cyan",
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
    server = outcome.server
    return f"{job.name}: reachable ({where}, {server.product} {server.version.split(' ')[0]})"


def retry_line(event: JobRetrying) -> str:
    return (
        f"retry    {event.job.name}: attempt {event.attempt} of {event.attempts} failed: "
        f"{event.error}; trying again in {format_duration(event.delay)}"
    )


def wait_line(event: Waiting) -> str:
    """A wait that lasts (see notice.py), as plain text."""
    if event.over:
        return f"waited   {event.what}: {format_duration(event.elapsed)}"
    return f"waiting  {event.what} ({format_duration(event.elapsed)} so far)"


def finish_line(result: JobResult) -> str:
    """One line saying how a job ended, as plain text."""
    job = result.job
    if result.status is JobStatus.SUCCEEDED:
        return (
            f"done     {job.name}: {format_bytes(result.stored_bytes)} "
            f"({format_bytes(result.raw_bytes)} raw) in {format_duration(result.duration)} "
            f"→ {', '.join(copy.file for copy in result.copies)}"
        )
    if result.status is JobStatus.CANCELLED:
        return f"cancelled {job.name}: {result.error}"
    if result.status is JobStatus.ELSEWHERE:
        return f"elsewhere {job.name}: {result.note}"
    return f"FAILED   {job.name} ({describe_job(job)}): {result.error}"


class Renderer(Protocol):
    """What the CLI needs of a renderer: events in, notes in, close at the end."""

    def __call__(self, event: JobEvent) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainRenderer:
    """One line per job start, finish and failure; no escape codes. For cron and pipes."""

    def __init__(self, stream: IO[str], *, quiet: bool = False, json_lines: bool = False) -> None:
        """`json_lines`: each line a JSON object {"time", "message"} (serve --log-format json)."""
        self._stream = stream
        self._quiet = quiet
        self._json_lines = json_lines

    def __call__(self, event: JobEvent) -> None:
        if isinstance(event, JobStarted) and not self._quiet:
            self._line(f"start    {event.job.name} ({describe_job(event.job)})")
        elif isinstance(event, JobRetrying) and not self._quiet:
            self._line(retry_line(event))
        elif isinstance(event, Waiting) and not self._quiet:
            self._line(wait_line(event))
        elif isinstance(event, JobFinished) and (
            not self._quiet or event.result.status is JobStatus.FAILED
        ):
            self._line(finish_line(event.result))

    def note(self, text: str) -> None:
        self._line(text)

    def close(self) -> None:
        self._stream.flush()

    def _line(self, text: str) -> None:
        if self._json_lines:
            import json

            line = json.dumps({"time": _clock(), "message": text}, ensure_ascii=False)
        else:
            line = f"{_clock()} {text}"
        self._stream.write(f"{line}\n")
        self._stream.flush()


def fleet_json(summary: FleetSummary, errors: Mapping[str, str]) -> bytes:
    """`db-backup report --json`: each expected job since the moment, and the targets that
    could not be read (whose backups the summary could not see)."""
    document = {
        "since": summary.since,
        "expected": len(summary.jobs),
        "backed_up": len(summary.jobs) - len(summary.missing),
        "missing": [job.job for job in summary.missing],
        "stored_bytes": summary.stored_bytes,
        "jobs": [
            {
                "job": job.job,
                "status": "backed up" if job.backed_up else "missing",
                "taken_at": job.taken_at,
                "raw_bytes": job.raw_bytes,
                "stored_bytes": job.stored_bytes,
                "files": job.locations,
            }
            for job in summary.jobs
        ],
        "errors": errors,
    }
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"


def catalog_json(catalog: Catalog) -> bytes:
    """`db-backup list --json`: every finished backup, and the targets that could not be read."""
    entries = [
        {
            "job": e.job,
            "backup": e.backup,
            "database": e.database,
            "taken_at": e.taken_at,
            "stored_bytes": e.stored_bytes,
            "raw_bytes": e.raw_bytes,
            "target": e.target,
            "file": e.location,
            "sha256": e.sha256,
            "verified": bool(e.checks),
            "checks": e.checks,
            "restore_test": e.restore_test,  # manifest.RestoreTest, or null: never tested
        }
        for e in catalog.archives
    ]
    return msgspec.json.encode({"backups": entries, "errors": catalog.errors}) + b"\n"
