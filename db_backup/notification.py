"""What a notification says: one `Notice` per run of a command, worded for each kind of
notifier — an email's subject and plain text, a Slack message, a healthchecks body. Pure: the
sending is notify.py's.

One message per run, never one per job: a night with 19 failures is one mail, listing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db_backup.config.schema import BackupConfig, NotifierConfig
from db_backup.model import JobResult, JobStatus, RunReport
from db_backup.units import format_bytes, format_duration

# healthchecks.io keeps the first 100 kB of a ping's body; self-hosted ones 10 kB by default.
PING_BODY_BYTES = 10_000
# Slack truncates a message's text at 40,000 characters; keep the list readable long before.
SLACK_PROBLEMS_SHOWN = 20
REASON_CHARACTERS = 1_000  # an error with a 10 kB stderr tail: the start says what happened


@dataclass(frozen=True)
class Problem:
    """One thing that failed: a job, a backup file, a target."""

    name: str
    where: str  # e.g. "database 'shop' on db1:5432"
    reason: str  # the same text the summary table shows


@dataclass(frozen=True)
class Notice:
    """One run of a command, as every notifier reports it."""

    command: str  # backup | verify | prune | notify-test
    host: str
    config: str
    noun: str  # what was counted: "backups", "targets"
    total: int
    failed: int
    problems: tuple[Problem, ...]
    # The JSON a webhook posts: a backup run's report (`backup --json`); None: the problems
    # as a JSON document of their own (report.problems_report)
    document: bytes | None = None
    cancelled: int = 0
    started_at: datetime | None = None
    duration: float | None = None
    stored_bytes: int | None = None
    interrupted_by: str | None = None  # "SIGTERM": the run was stopped

    @property
    def ok(self) -> bool:
        return not (self.failed or self.cancelled or self.problems or self.interrupted_by)

    @property
    def subject(self) -> str:
        """`db-backup on HOST: 2 of 19 backups FAILED` — the line every notifier leads with."""
        what = "db-backup" if self.command == "backup" else f"db-backup {self.command}"
        if self.command == "notify-test":
            return f"{what} on {self.host}: a test message; notifications reach you"
        if self.ok:
            return f"{what} on {self.host}: {self.total} {self.noun} OK"
        outcome = f"{self.failed} of {self.total} {self.noun} FAILED"
        if not self.total and self.problems:  # nothing to count: say what went wrong
            outcome = f"FAILED: {self.problems[0].reason}"
        if self.cancelled:
            outcome += f", {self.cancelled} cancelled"
        if self.interrupted_by:
            outcome = f"stopped by {self.interrupted_by}; {outcome}"
        return f"{what} on {self.host}: {outcome}"

    def facts(self) -> list[str]:
        """The lines under the subject: where, when, how long, how much."""
        lines = [f"config:  {self.config}"]
        if self.started_at is not None:
            took = f", took {format_duration(self.duration)}" if self.duration is not None else ""
            lines.append(f"started: {self.started_at.isoformat(timespec='seconds')}{took}")
        if self.total and self.command != "notify-test":
            counts = f"{self.total - self.failed - self.cancelled} succeeded, {self.failed} failed"
            counts += f", {self.cancelled} cancelled" if self.cancelled else ""
            if self.stored_bytes is not None:
                counts += f"; {format_bytes(self.stored_bytes)} stored"
            lines.append(f"result:  {counts}")
        return lines

    def text(self) -> str:
        """Plain text: the subject, the facts, then each problem on its own lines."""
        lines = [self.subject, "", *self.facts()]
        if self.problems:
            lines += ["", "Failed:"]
            for problem in self.problems:
                lines.append(f"- {problem.name} ({problem.where}):")
                lines.append("  " + _shortened(problem.reason).replace("\n", "\n  "))
        return "\n".join(lines) + "\n"

    def ping_body(self) -> bytes:
        """What a healthchecks ping carries: the text, cut to what the service keeps."""
        body = self.text().encode()
        if len(body) <= PING_BODY_BYTES:
            return body
        cut = body[: PING_BODY_BYTES - 100].decode(errors="ignore")
        return f"{cut}\n… (cut; the whole report is in the run's output)\n".encode()

    def slack(self) -> dict[str, Any]:
        """A Slack incoming-webhook message: a bold header line, the facts, failures listed."""
        lines = [f"*{_slack_escape(self.subject)}*", *map(_slack_escape, self.facts())]
        for problem in self.problems[:SLACK_PROBLEMS_SHOWN]:
            reason = _slack_escape(_shortened(problem.reason)).replace("`", "'").replace("\n", " ")
            lines.append(
                f"• *{_slack_escape(problem.name)}* ({_slack_escape(problem.where)}): `{reason}`"
            )
        if len(self.problems) > SLACK_PROBLEMS_SHOWN:
            lines.append(f"… and {len(self.problems) - SLACK_PROBLEMS_SHOWN} more")
        return {"text": "\n".join(lines)}


@dataclass(frozen=True)
class Delivery:
    """How sending one notice to one notifier went."""

    notifier: str  # its label: kind and host, tokens masked
    ok: bool
    error: str | None = None
    attempts: int = 1

    @property
    def warning(self) -> str:
        return f"notify: {self.notifier}: {self.error} ({_attempts(self.attempts)})"


def _attempts(count: int) -> str:
    return "1 attempt" if count == 1 else f"{count} attempts"


def wants(notifier: NotifierConfig, notice: Notice) -> bool:
    """Does `notifier` hear of this run (its `on:`)? A test message goes to every one."""
    when = notifier.when
    return (
        notice.command == "notify-test"
        or "always" in when
        or ("success" if notice.ok else "failure") in when
    )


def run_notice(report: RunReport, *, host: str, config: str, document: bytes) -> Notice:
    """The notice of a backup run, leaving out jobs whose backup says `notify: false`."""
    # A job another runner has (its lease) is that runner's to report.
    results = [
        r for r in report.results if r.job.backup.notify and r.status is not JobStatus.ELSEWHERE
    ]
    return Notice(
        command="backup",
        host=host,
        config=config,
        noun="backups",
        total=len(results),
        failed=sum(1 for r in results if r.status is JobStatus.FAILED),
        cancelled=sum(1 for r in results if r.status is JobStatus.CANCELLED),
        problems=tuple(_problem(r) for r in results if r.status is not JobStatus.SUCCEEDED),
        document=document,
        started_at=report.started_at,
        duration=(report.finished_at - report.started_at).total_seconds(),
        stored_bytes=sum(r.stored_bytes for r in results),
        interrupted_by=report.interrupted_by,
    )


def stopped_run_notice(
    error: str, backups: Sequence[BackupConfig], *, host: str, config: str
) -> Notice:
    """The notice of a backup run that stopped before its jobs (another run holds a lock):
    every backup that notifies counts as failed, for the one reason."""
    total = sum(1 for backup in backups if backup.notify)
    return Notice(
        command="backup",
        host=host,
        config=config,
        noun="backups",
        total=total,
        failed=total,
        problems=(Problem("the run", "before any backup started", error),),
    )


def _problem(result: JobResult) -> Problem:
    job = result.job
    what = "globals" if job.kind == "globals" else f"database {job.database!r}"
    return Problem(job.name, f"{what} on {job.server}", result.error or str(result.status))


def _shortened(reason: str) -> str:
    """The reason as the summary shows it, cut after REASON_CHARACTERS."""
    text = reason.strip()
    return text if len(text) <= REASON_CHARACTERS else f"{text[: REASON_CHARACTERS - 1]}…"


def _slack_escape(text: str) -> str:
    """Slack reads &, < and > as markup; these three must be escaped, nothing else."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
