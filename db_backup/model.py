"""Value types shared by the planner, the orchestrator and the renderers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from db_backup.config.schema import BackupConfig, StorageConfig


@dataclass(frozen=True, order=True)
class Server:
    """A database server as a concurrency limit sees it: host and port."""

    host: str | None
    port: int

    def __str__(self) -> str:
        return f"{self.host or 'local socket'}:{self.port}"


class JobKind(StrEnum):
    DATABASE = "database"  # pg_dump of one database
    GLOBALS = "globals"  # pg_dumpall --globals-only: roles and tablespaces of one server


@dataclass(frozen=True)
class Target:
    """One place a job's backup goes: a configured storage, and the file's name there."""

    storage: StorageConfig
    filename: str  # the same on every target of a job but for its suffix (.sql.gz, .sql)
    file_prefix: str  # `[<prefix>_]<job>_`: how earlier backups of this job are recognised

    @property
    def label(self) -> str:
        return self.storage.label

    @property
    def manifest_name(self) -> str:
        return f"{self.filename}.json"


@dataclass(frozen=True)
class JobSpec:
    """One unit of work: dump one database (or one server's globals) to its targets."""

    name: str  # unique in the run; the config name, or `<config name>.<database>` for "*"
    kind: JobKind
    backup: BackupConfig  # the merged config entry it came from
    database: str
    server: Server
    targets: tuple[Target, ...]
    # Targets found unusable before the run (label → why), e.g. a folder that cannot be
    # locked: the job counts them as failed and still writes to the others.
    unusable: tuple[tuple[str, str], ...] = ()

    @property
    def filename(self) -> str:
        return self.targets[0].filename


@dataclass(frozen=True)
class Plan:
    """What a run will do; `backup --dry-run` prints it and stops."""

    started_at: datetime
    jobs: tuple[JobSpec, ...]
    concurrency: int
    host_limits: dict[Server, int]
    # Jobs that cannot run, and why (a name two databases share, a file name too long):
    # they fail on their own; the others run.
    refused: tuple[tuple[JobSpec, str], ...] = ()


@dataclass(frozen=True)
class StoredCopy:
    """A committed backup on one target: its file and manifest (paths or URLs)."""

    target: str
    file: str
    manifest: str


class JobStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Another runner has it (its lease, see lease.py): running there, or done there already.
    ELSEWHERE = "elsewhere"


@dataclass(frozen=True)
class JobResult:
    """How one job ended. Errors are values here; the CLI decides what they mean for the exit."""

    job: JobSpec
    status: JobStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    raw_bytes: int = 0
    stored_bytes: int = 0
    error: str | None = None
    error_kind: str | None = None  # the BackupError's `kind` ("connection", "dump", ...)
    # Where the backup was stored (also when another target failed), in config order.
    copies: tuple[StoredCopy, ...] = ()
    failed_targets: tuple[tuple[str, str], ...] = ()  # (target label, why) for each that failed
    sha256: str | None = None
    # When the dump program itself ran (from the manifest): shows how jobs overlapped.
    dump_started_at: datetime | None = None
    dump_finished_at: datetime | None = None
    note: str | None = None  # ELSEWHERE: where and by whom it runs, or that it is done

    @property
    def file(self) -> str | None:
        """The backup on its first target that took it: a path or URL."""
        return self.copies[0].file if self.copies else None

    @property
    def duration(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class RunReport:
    """Everything a run did, for the summary table, `--json` and the exit code."""

    started_at: datetime
    finished_at: datetime
    results: tuple[JobResult, ...]
    interrupted_by: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the run
    shard: str | None = None  # "I/N": the shard of a fleet run this runner ran
    run_id: str | None = None  # shared by a fleet run's runners (leasing.py)

    @property
    def failed(self) -> tuple[JobResult, ...]:
        return tuple(r for r in self.results if r.status is JobStatus.FAILED)


# -- events: the orchestrator emits these; renderers, and later notifiers/metrics, consume them --


@dataclass(frozen=True)
class JobQueued:
    job: JobSpec


@dataclass(frozen=True)
class JobStarted:
    job: JobSpec
    estimated_bytes: int | None  # raw dump size expected, for an ETA; None when unknown


@dataclass(frozen=True)
class JobProgress:
    job: JobSpec
    raw_bytes: int
    stored_bytes: int


@dataclass(frozen=True)
class JobRetrying:
    job: JobSpec
    attempt: int  # the attempt that failed, 1-based
    attempts: int  # how many are allowed in all
    delay: float  # seconds until the next attempt
    error: str


@dataclass(frozen=True)
class JobFinished:
    result: JobResult


@dataclass(frozen=True)
class Waiting:
    """The run has been waiting a while on something outside a dump — a lock, a server, a
    target (see notice.py): said again as the wait goes on, and once more when it is over."""

    what: str  # e.g. "the lock on /var/backups/db (held by PID 42 on db1, started ...)"
    elapsed: float  # seconds so far
    over: bool = False
    job: JobSpec | None = None  # the job that waits, if only one does


JobEvent = JobQueued | JobStarted | JobProgress | JobRetrying | JobFinished | Waiting
