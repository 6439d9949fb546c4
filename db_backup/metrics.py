"""Prometheus metrics: the state of every job, in the text exposition format.

Pure: (the catalog's archives, the last attempt of each job) → text. The figures describe the
state, not only the last run: successes, sizes, counts and restore tests come from the
manifests on the targets; the last attempt of each job comes from this run, and for the jobs
this run did not touch, from the previous file (`attempts_in`), so a run of `-n shop` leaves
what the file said about the other jobs.

Label `backup` is the job's name (`job` is Prometheus' own label for the scrape job).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from db_backup.catalog import Archive
from db_backup.model import JobStatus, RunReport

PREFIX = "db_backup_"

# name → (help, type); the order they are written in.
FAMILIES = {
    "last_success_timestamp_seconds": "When the job's newest finished backup ended (Unix time).",
    "last_duration_seconds": "How long the job's newest finished backup took.",
    "last_size_bytes": "Size of the job's newest finished backup: raw (the dump) or stored.",
    "last_attempt_timestamp_seconds": "When the job was last attempted (Unix time).",
    "last_attempt_success": "1 if the job's last attempt stored its backup everywhere, else 0.",
    "backups": "How many finished backups of the job a target holds.",
    "oldest_backup_timestamp_seconds": "When the oldest backup of the job on a target was taken.",
    "last_restore_test_timestamp_seconds": "When the job's newest restore-tested backup was "
    "tested (Unix time).",
    "last_restore_test_success": "1 if that restore test passed, else 0.",
}


@dataclass(frozen=True)
class Attempt:
    """A job's last attempt, with the labels that name the job."""

    job: str
    database: str
    server: str
    at: float  # Unix time it started
    success: bool

    @property
    def labels(self) -> dict[str, str]:
        return {"backup": self.job, "database": self.database, "server": self.server}


_ATTEMPTED = (JobStatus.SUCCEEDED, JobStatus.FAILED)


def attempts_of(report: RunReport) -> dict[str, Attempt]:
    """The attempt each job of a run made (none for jobs cancelled, never started, or
    running elsewhere)."""
    found = {}
    for result in report.results:
        if result.started_at is None or result.status not in _ATTEMPTED:
            continue
        job = result.job
        found[job.name] = Attempt(
            job=job.name,
            database=job.database,
            server=str(job.server),
            at=result.started_at.timestamp(),
            success=result.status is JobStatus.SUCCEEDED,
        )
    return found


_SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def attempts_in(text: str) -> dict[str, Attempt]:
    """The attempts a previous metrics file recorded (what `exposition` wrote)."""
    at: dict[tuple[str, str, str], float] = {}
    success: dict[tuple[str, str, str], bool] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(match.group(2))}
        key = (labels.get("backup", ""), labels.get("database", ""), labels.get("server", ""))
        name, value = match.group(1), match.group(3)
        try:
            number = float(value)
        except ValueError:
            continue
        if name == f"{PREFIX}last_attempt_timestamp_seconds":
            at[key] = number
        elif name == f"{PREFIX}last_attempt_success":
            success[key] = number == 1
    return {
        key[0]: Attempt(*key, at=moment, success=success.get(key, False))
        for key, moment in at.items()
        if key[0]
    }


def exposition(archives: Sequence[Archive], attempts: Mapping[str, Attempt]) -> str:
    """Every family, every job: what the archives say, and each job's last attempt."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in FAMILIES}
    by_job: dict[str, list[Archive]] = {}
    for archive in archives:
        by_job.setdefault(archive.job, []).append(archive)
    for job, held in sorted(by_job.items()):
        newest = max(held, key=lambda a: a.record.finished_at)
        labels = {"backup": job, "database": newest.database, "server": newest.record.server}
        record = newest.record
        samples["last_success_timestamp_seconds"].append((labels, record.finished_at.timestamp()))
        samples["last_duration_seconds"].append((labels, record.duration_seconds))
        samples["last_size_bytes"] += [
            ({**labels, "kind": "raw"}, record.raw_bytes),
            ({**labels, "kind": "stored"}, record.stored_bytes),
        ]
        for target in sorted({a.target for a in held}):
            there = [a for a in held if a.target == target]
            at_target = {**labels, "target": target}
            samples["backups"].append((at_target, len(there)))
            oldest = min(a.taken_at for a in there)
            samples["oldest_backup_timestamp_seconds"].append((at_target, oldest.timestamp()))
        tested = [a for a in held if a.restore_test is not None]
        if tested:
            last = max(tested, key=lambda a: a.restore_test.tested_at)  # type: ignore[union-attr]
            assert last.restore_test is not None
            samples["last_restore_test_timestamp_seconds"].append(
                (labels, last.restore_test.tested_at.timestamp())
            )
            samples["last_restore_test_success"].append((labels, int(last.restore_test.ok)))
    for attempt in sorted(attempts.values(), key=lambda a: a.job):
        samples["last_attempt_timestamp_seconds"].append((attempt.labels, attempt.at))
        samples["last_attempt_success"].append((attempt.labels, int(attempt.success)))
    return "".join(_family(name, help_text, samples[name]) for name, help_text in FAMILIES.items())


def _family(name: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> str:
    lines = [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge"]
    for labels, value in samples:
        rendered = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
        lines.append(f"{PREFIX}{name}{{{rendered}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


# `serve --listen` adds these (name → help); each labelled with the task's kind and name.
SCHEDULER_FAMILIES = {
    "next_run_timestamp_seconds": "When serve next starts the task (Unix time).",
    "task_running": "1 while a run of the task is in progress, else 0.",
    "task_skipped_runs": "Due runs serve skipped because the task's previous run still ran.",
}


@dataclass(frozen=True)
class TaskState:
    """What serve's /metrics says of one scheduled task."""

    kind: str  # backup | verify | prune
    name: str
    next_run: float  # Unix time
    running: bool
    skipped: int

    @property
    def labels(self) -> dict[str, str]:
        return {"kind": self.kind, "task": self.name}


def scheduler_exposition(tasks: Sequence[TaskState]) -> str:
    """serve's own families: each task's next run, whether it runs, what it skipped; and how
    many runs are in progress."""
    values = {
        "next_run_timestamp_seconds": [(t.labels, t.next_run) for t in tasks],
        "task_running": [(t.labels, float(t.running)) for t in tasks],
        "task_skipped_runs": [(t.labels, float(t.skipped)) for t in tasks],
    }
    text = "".join(_family(name, text, values[name]) for name, text in SCHEDULER_FAMILIES.items())
    in_progress = sum(t.running for t in tasks)
    return text + (
        f"# HELP {PREFIX}runs_in_progress Runs serve has in progress.\n"
        f"# TYPE {PREFIX}runs_in_progress gauge\n{PREFIX}runs_in_progress {in_progress}\n"
    )
