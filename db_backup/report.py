"""The run report as JSON — `backup --json`, and the body a webhook notifier posts. Its schema
is documented (README, "The run report") and versioned by `report_version`."""

from __future__ import annotations

import resource
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from db_backup.model import JobResult, JobStatus, RunReport
from db_backup.notification import Delivery, Notice

REPORT_VERSION = 1


class _TargetReport(msgspec.Struct, kw_only=True):
    target: str
    stored: bool
    file: str | None
    manifest: str | None
    error: str | None


def _target_reports(result: JobResult) -> list[_TargetReport]:
    copies = {copy.target: copy for copy in result.copies}
    failures = dict(result.failed_targets)
    reports = []
    for target in result.job.targets:
        copy = copies.get(target.label)
        reports.append(
            _TargetReport(
                target=target.label,
                stored=copy is not None,
                file=copy.file if copy else None,
                manifest=copy.manifest if copy else None,
                error=failures.get(target.label),
            )
        )
    return reports


class _JobReport(msgspec.Struct, kw_only=True):
    job: str
    backup: str
    kind: str
    database: str
    server: str
    status: str
    error: str | None
    error_kind: str | None  # what kind of failure: connection, dump, storage, targets, ...
    note: str | None  # status "elsewhere": which runner has the job, or that it is done
    file: str | None  # on the first target that stored it
    manifest: str | None
    targets: list[_TargetReport]
    raw_bytes: int
    stored_bytes: int
    sha256: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float


class _Notification(msgspec.Struct, kw_only=True):
    notifier: str  # its kind and host; tokens masked
    ok: bool
    error: str | None
    attempts: int


class _RunReport(msgspec.Struct, kw_only=True):
    report_version: int  # raised when a field changes meaning or goes; new fields do not
    command: str
    host: str
    config: str
    started_at: datetime
    finished_at: datetime
    exit_code: int
    peak_rss_bytes: int  # of the runner process itself (children such as pg_dump excluded)
    interrupted_by: str | None
    succeeded: int
    failed: int
    cancelled: int
    elsewhere: int  # jobs another runner had (their leases): not failures
    shard: str | None  # "I/N" for a shard of a fleet run
    run_id: str  # shared by a fleet run's runners (--run-id), else this run's own
    jobs: list[_JobReport]
    warnings: list[str]  # what went wrong beside the backups: metrics, notifications
    notifications: list[_Notification]


def peak_rss_bytes() -> int:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: a program
    started by vfork (Python's subprocess does) inherits its parent's high-water mark in
    ru_maxrss — measured: 106 MiB reported for a 45 MiB run whose parent held 106 MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def json_report(
    report: RunReport,
    exit_code: int,
    *,
    config: str,
    warnings: Sequence[str] = (),
    deliveries: Sequence[Delivery] = (),
) -> bytes:
    """The run as JSON for programs (`backup --json`, webhooks): one object, every job with
    its outcome; the schema is in the README ("The run report")."""
    jobs = [
        _JobReport(
            job=r.job.name,
            backup=r.job.backup.name,
            kind=r.job.kind.value,
            database=r.job.database,
            server=str(r.job.server),
            status=r.status.value,
            error=r.error,
            error_kind=r.error_kind,
            note=r.note,
            file=r.copies[0].file if r.copies else None,
            manifest=r.copies[0].manifest if r.copies else None,
            targets=_target_reports(r),
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
        report_version=REPORT_VERSION,
        command="backup",
        host=socket.gethostname(),
        config=config,
        started_at=report.started_at,
        finished_at=report.finished_at,
        exit_code=exit_code,
        peak_rss_bytes=peak_rss_bytes(),
        interrupted_by=report.interrupted_by,
        succeeded=sum(1 for j in jobs if j.status == JobStatus.SUCCEEDED),
        failed=sum(1 for j in jobs if j.status == JobStatus.FAILED),
        cancelled=sum(1 for j in jobs if j.status == JobStatus.CANCELLED),
        elsewhere=sum(1 for j in jobs if j.status == JobStatus.ELSEWHERE),
        shard=report.shard,
        run_id=report.run_id or "",
        jobs=jobs,
        warnings=list(warnings),
        notifications=[
            _Notification(notifier=d.notifier, ok=d.ok, error=d.error, attempts=d.attempts)
            for d in deliveries
        ],
    )
    return msgspec.json.format(msgspec.json.encode(body), indent=2) + b"\n"


def problems_report(notice: Notice) -> bytes:
    """The JSON a webhook gets for a notice without a run report of its own: a failed
    `verify` or `prune`, a backup run stopped before its jobs, `notify-test`."""
    problems = notice.problems
    body: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "command": notice.command,
        "host": notice.host,
        "config": notice.config,
        "ok": notice.ok,
        "total": notice.total,
        "failed": notice.failed,
        "problems": [{"name": p.name, "where": p.where, "reason": p.reason} for p in problems],
    }
    return msgspec.json.format(msgspec.json.encode(body), indent=2) + b"\n"
