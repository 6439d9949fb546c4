"""The one exception tree of db-backup.

Every error a user can meet is a `BackupError`; third-party errors are translated into one of
these once, at the boundary where they arise, carrying the facts a person needs (file, line,
job, database, masked command, exit code, stderr tail). The CLI turns them into messages and
exit codes; no traceback reaches a user.

    BackupError
    ├── ConfigError            config file unreadable or invalid (exit 2); holds every issue found
    ├── SelectionError         `-n NAME` names no backup (exit 2)
    ├── ToolNotFoundError      pg_dump / initdb / psql missing
    ├── ClientVersionError     no pg_dump new enough for the server
    ├── CredentialsError       a password_file cannot be read
    ├── ConnectionCheckError   the pre-dump connection check failed; `.kind` says how
    ├── DumpError              pg_dump (or pg_dumpall) failed or its output is incomplete
    ├── DamagedStreamError     stored bytes that a stage's inverse cannot undo (cut, changed)
    ├── StorageError           a target could not be written, read or listed
    │   ├── TargetUnreachableError  it did not answer (timed out, refused): not asked again
    │   └── TargetsFailedError one or more of a job's targets failed (others may hold it)
    ├── RestoreError           a restore did not complete (nothing was committed where it ran)
    │   └── RestoreRefusedError  the destination database exists and holds data (no --clean)
    ├── LockHeldError          another run holds a storage folder's lock
    ├── JobTimeoutError        a job ran past its `timeout`
    ├── NotifyError            a notifier could not be reached or refused the message
    └── DemoError              the demo could not complete one of its steps
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class BackupError(Exception):
    """Root of every error db-backup reports to a user."""

    kind = "error"  # for programs (`--json`): what kind of failure it was


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, located as precisely as the YAML allows."""

    file: str
    line: int | None  # 1-based
    column: int | None  # 1-based
    path: str  # key path such as "backups[1].port"; "" for the document itself
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(BackupError):
    """The config could not be loaded; `issues` lists every problem found, in file order."""

    kind = "config"

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class SelectionError(BackupError):
    """A `-n NAME` selection names no backup in the config."""

    kind = "selection"


class ToolNotFoundError(BackupError):
    """An external program we need is not installed or not executable."""

    kind = "tool_missing"


class ClientVersionError(BackupError):
    """No installed pg_dump is new enough for the server it must dump."""

    kind = "client_version"


class CheckFailure(StrEnum):
    """Why a connection check failed, in the words `validate --connect` reports."""

    AUTH_FAILED = "auth failed"
    DATABASE_MISSING = "database missing"
    TIMED_OUT = "timed out"
    UNREACHABLE = "unreachable"
    UNAVAILABLE = "server unavailable"  # starting up, shutting down, in recovery, full
    ERROR = "error"


class CredentialsError(BackupError):
    """A configured secret (password_file) could not be read."""

    kind = "credentials"


class KeyFileError(BackupError):
    """An age identity or recipient that cannot be used; says why, never the key."""

    kind = "key"


class ConnectionCheckError(BackupError):
    """The quick connection check before a dump failed."""

    kind = "connection"

    def __init__(self, kind: CheckFailure, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"connection check: {kind}: {detail}")


class DumpError(BackupError):
    """The dump program failed, or exited 0 with output that is not a complete dump."""

    kind = "dump"

    def __init__(self, reason: str, *, exit_code: int | None = None, stderr_tail: str = "") -> None:
        self.reason = reason
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        message = reason
        if stderr_tail:
            message += f": {stderr_tail}"
        super().__init__(message)


class DamagedStreamError(BackupError):
    """Reading a backup back, a stage's inverse met bytes it cannot undo: a compressed
    stream damaged or cut short."""

    kind = "damaged"


class WrongIdentityError(DamagedStreamError):
    """An encrypted backup none of the given identities can decrypt."""

    kind = "key"


class StorageError(BackupError):
    """A target could not be written, read or listed; the message names it and the reason."""

    kind = "storage"


class TargetUnreachableError(StorageError):
    """A target did not answer in time, or refused the connection: the run stops asking it
    (its jobs still write to their other targets)."""

    kind = "target_unreachable"


class TargetsFailedError(StorageError):
    """Targets of a job failed. `failures`: target label → why. Raised when no target took
    the backup; when some did, the job's outcome is a value that carries the failures
    (job.Committed), and `describe` words both for the report."""

    kind = "targets"

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        super().__init__(self.describe(failures))

    @staticmethod
    def describe(failures: Mapping[str, str], stored: Sequence[str] = ()) -> str:
        reasons = "; ".join(f"target {label} failed: {why}" for label, why in failures.items())
        kept = f"; stored on the other targets as {', '.join(stored)}" if stored else ""
        return reasons + kept


class RestoreError(BackupError):
    """A restore failed: the stored bytes did not check out, or the restore program (psql,
    pg_restore) reported an error. Says what, and what state the destination was left in."""

    kind = "restore"


class RestoreRefusedError(RestoreError):
    """The destination database exists and is not empty, and replacing it was not asked for."""

    kind = "refused"


class LockHeldError(BackupError):
    """Another db-backup run is using the same storage folder."""

    kind = "lock_held"


class JobTimeoutError(BackupError):
    """A job exceeded its configured `timeout`."""

    kind = "timeout"


class DemoError(BackupError):
    """A step of `db-backup demo` failed."""

    kind = "demo"


class NotifyError(BackupError):
    """A notifier could not be reached or refused a message. Never fails a run: it becomes a
    warning. `transient`: trying again may help (no answer, a 5xx), so a send is retried."""

    kind = "notify"

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
