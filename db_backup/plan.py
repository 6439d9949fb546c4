"""Config + selection + discovered databases → Plan. Pure: no I/O, so --dry-run stops here.

File names are `<prefix>_<job>_<UTC YYYYmmddTHHMMSSZ><ext>`, one timestamp per run so a dry run
shows the exact names. Names derived from database names (for `database: "*"`) are made safe
for file systems and cannot escape the storage folder.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from db_backup.config.schema import NAME_PATTERN, BackupConfig, Config, LocalStorage, StorageConfig
from db_backup.errors import ConfigError, ConfigIssue, SelectionError
from db_backup.model import JobKind, JobSpec, Plan, Server, Target

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_COMPONENT = 60


def default_concurrency() -> int:
    """Jobs at once when neither config nor `-j` says: the CPU count, at least 2."""
    return max(2, os.cpu_count() or 1)


def timestamp(moment: datetime) -> str:
    """UTC `YYYYmmddTHHMMSSZ`, sortable and free of characters file systems dislike."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def safe_component(text: str) -> str:
    """A file-name-safe rendering of an arbitrary database or host name.

    Accents are folded, anything else outside [A-Za-z0-9._-] becomes `_`. When that changed the
    text, a short hash of the original is appended so distinct names never collide.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE.sub("_", folded).lstrip("._-")[:_MAX_COMPONENT]
    if cleaned == text and NAME_PATTERN.fullmatch(cleaned):
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned}-{digest}" if cleaned else f"db-{digest}"


def server_of(backup: BackupConfig) -> Server:
    return Server(backup.host, backup.port)


def extension(backup: BackupConfig, kind: JobKind = JobKind.DATABASE) -> str:
    """.sql.gz / .sql.zst / .sql for plain SQL (and globals); .dump for custom format."""
    if kind is JobKind.DATABASE and backup.format == "custom":
        return ".dump"
    return {"gzip": ".sql.gz", "zstd": ".sql.zst"}.get(backup.compression.algorithm, ".sql")


def file_prefix(storage: StorageConfig, job_name: str) -> str:
    """The start every file of this job shares on a target: `<prefix>_<job>_` in a local
    folder with a prefix, else `<job>_` (an S3 prefix is a folder, not part of the name)."""
    prefix = storage.prefix if isinstance(storage, LocalStorage) else ""
    return f"{prefix}_{job_name}_" if prefix else f"{job_name}_"


_STAMP_PATTERN = r"\d{8}T\d{6}Z\."


def is_own_file(name: str, job_file_prefix: str) -> bool:
    """Is `name` one of this job's files (dump, manifest or partial)? `<prefix>_shop_` must
    not claim job `shop_eu`'s files: the run timestamp follows the prefix directly."""
    return re.match(re.escape(job_file_prefix) + _STAMP_PATTERN, name) is not None


# Every suffix a backup file can have (see `extension`).
BACKUP_SUFFIXES = (".sql.gz", ".sql.zst", ".sql", ".dump")


def leftovers(names: Iterable[str], file_prefixes: Iterable[str]) -> set[str]:
    """Of the file names on a target, what interrupted runs of these jobs left: partial
    files, and backup files whose manifest never came (a run killed between the two). Under
    the target's lock nothing else is writing them, so they are safe to remove."""
    present = set(names)
    prefixes = tuple(file_prefixes)
    found = set()
    for name in present:
        if not any(is_own_file(name, prefix) for prefix in prefixes):
            continue
        orphan = name.endswith(BACKUP_SUFFIXES) and f"{name}.json" not in present
        if name.endswith(".partial") or orphan:
            found.add(name)
    return found


def select_backups(config: Config, names: Sequence[str]) -> tuple[BackupConfig, ...]:
    """The backups `-n NAME` selects (all when no names). A name is a backup's name, or
    `<backup>.<database job>` for one database of a `database: "*"` backup."""
    if not names:
        return config.backups
    by_name = {backup.name: backup for backup in config.backups}
    selected: list[BackupConfig] = []
    unknown: list[str] = []
    for name in names:
        backup = by_name.get(name) or next(
            (b for b in config.backups if b.is_wildcard and name.startswith(f"{b.name}.")), None
        )
        if backup is None:
            unknown.append(name)
        elif backup not in selected:
            selected.append(backup)
    if unknown:
        valid = ", ".join(sorted(by_name))
        raise SelectionError(
            f"no backup named {', '.join(map(repr, unknown))} in {config.source}; "
            f"backups are: {valid}"
        )
    return tuple(selected)


def matching_databases(backup: BackupConfig, available: Iterable[str]) -> list[str]:
    """For `database: "*"`: the server's databases minus `exclude` globs, sorted."""
    return sorted(
        name
        for name in available
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in backup.exclude)
    )


def build_plan(
    config: Config,
    now: datetime,
    *,
    names: Sequence[str] = (),
    discovered: Mapping[str, Sequence[str]] | None = None,
    concurrency: int | None = None,
) -> Plan:
    """The jobs of one run.

    `discovered` maps each selected `database: "*"` backup's name to the databases found on its
    server (see discovery.py); `concurrency` is `-j`, overriding the config.
    """
    discovered = discovered or {}
    stamp = timestamp(now)
    jobs: list[JobSpec] = []
    servers_with_globals: set[Server] = set()
    for backup in select_backups(config, names):
        if backup.is_wildcard:
            databases = matching_databases(backup, discovered.get(backup.name, ()))
            pairs = [(f"{backup.name}.{safe_component(db)}", db) for db in databases]
        else:
            pairs = [(backup.name, backup.database)]
        for job_name, database in pairs:
            jobs.append(_job(backup, JobKind.DATABASE, job_name, database, stamp))
        server = server_of(backup)
        if backup.globals and server not in servers_with_globals:
            servers_with_globals.add(server)
            host = safe_component(backup.host or "local")
            globals_name = f"globals-{host}-{backup.port}"
            jobs.append(_job(backup, JobKind.GLOBALS, globals_name, _maintenance_db(backup), stamp))
    explicit = {
        name for name in names if "." in name and name not in {b.name for b in config.backups}
    }
    if explicit:
        jobs = [job for job in jobs if job.name in explicit or job.backup.name in names]
    _refuse_collisions(config, jobs)
    return Plan(
        started_at=now,
        jobs=tuple(jobs),
        concurrency=concurrency or config.concurrency or default_concurrency(),
        host_limits=_host_limits(jobs),
    )


def _maintenance_db(backup: BackupConfig) -> str:
    return "postgres" if backup.is_wildcard else backup.database


def _job(backup: BackupConfig, kind: JobKind, name: str, database: str, stamp: str) -> JobSpec:
    targets = []
    for storage in backup.targets:
        prefix = file_prefix(storage, name)
        filename = f"{prefix}{stamp}{extension(backup, kind)}"
        # Names are validated and made safe above; this is the last line of defence.
        if os.path.basename(filename) != filename or filename.startswith("."):
            issue = ConfigIssue("<plan>", None, None, name, "file name escapes storage")
            raise ConfigError([issue])
        targets.append(Target(storage, filename, prefix))
    return JobSpec(
        name=name,
        kind=kind,
        backup=backup,
        database=database,
        server=server_of(backup),
        targets=tuple(targets),
    )


def _refuse_collisions(config: Config, jobs: Sequence[JobSpec]) -> None:
    seen: dict[str, JobSpec] = {}
    issues = []
    for job in jobs:
        other = seen.setdefault(job.name, job)
        if other is not job:
            issues.append(
                ConfigIssue(
                    config.source,
                    None,
                    None,
                    "backups",
                    f"job name {job.name!r} (backup {job.backup.name!r}, "
                    f"database {job.database!r}) collides with backup "
                    f"{other.backup.name!r}, database {other.database!r}",
                )
            )
    if issues:
        raise ConfigError(issues)


def _host_limits(jobs: Sequence[JobSpec]) -> dict[Server, int]:
    """Per server, the smallest `max_per_host` any of its jobs asks for."""
    limits: dict[Server, int] = {}
    for job in jobs:
        limit = job.backup.max_per_host
        if limit is not None:
            limits[job.server] = min(limit, limits.get(job.server, limit))
    return limits


def wildcard_job(backup: BackupConfig, now: datetime) -> JobSpec:
    """A stand-in job for a `database: "*"` backup whose databases could not be listed."""
    return _job(backup, JobKind.DATABASE, backup.name, backup.database, timestamp(now))
