"""Config + selection + discovered databases → Plan. Pure: no I/O, so --dry-run stops here.

File names are `<prefix>_<job>_<UTC YYYYmmddTHHMMSSZ><ext>`, one timestamp per run so a dry run
shows the exact names. Names derived from database names (for `database: "*"`) are made safe
for file systems and cannot escape the storage folder.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import os
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from db_backup.config.schema import NAME_PATTERN, BackupConfig, Config, LocalStorage, StorageConfig
from db_backup.errors import SelectionError
from db_backup.model import JobKind, JobSpec, Plan, Server, Target

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_COMPONENT = 60
LONGEST_SAFE_NAME = _MAX_COMPONENT + 9  # and "-" and 8 hex digits of a hash


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


# Most file systems allow 255 bytes in a file name; S3 allows 1024 in a key.
FILE_NAME_BYTES = 255
S3_KEY_BYTES = 1024
# A manifest is written under `<file>.json.<random hex>.partial` first (storage.local).
TEMPORARY_TOKEN_BYTES = 6
_LONGEST_SIDE_FILE = len(".json.") + 2 * TEMPORARY_TOKEN_BYTES + len(".partial")


def unusable_name(storage: StorageConfig, filename: str) -> str | None:
    """Why a backup file cannot have this name on this target (it would leave its folder,
    or it or its manifest's temporary name would be too long), or None."""
    if os.path.basename(filename) != filename or filename.startswith("."):
        return f"file name {filename!r} would leave its storage folder"
    if isinstance(storage, LocalStorage):
        size = len(filename.encode()) + _LONGEST_SIDE_FILE
        if size > FILE_NAME_BYTES:
            return (
                f"file names would be {size} bytes long (with the manifest's temporary "
                f"name), more than the {FILE_NAME_BYTES} a file system allows; shorten the "
                f"backup's name or the target's prefix by {size - FILE_NAME_BYTES}"
            )
        return None
    size = len(f"{storage.folder}{filename}.json".encode())
    if size > S3_KEY_BYTES:
        return (
            f"object keys would be {size} bytes long, more than the {S3_KEY_BYTES} S3 "
            f"allows; shorten the target's prefix or the backup's name by {size - S3_KEY_BYTES}"
        )
    return None


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


def globals_job_name(backup: BackupConfig) -> str:
    return f"globals-{safe_component(backup.host or 'local')}-{backup.port}"


def longest_file_names(backup: BackupConfig, storage: StorageConfig) -> list[str]:
    """The longest file names this backup's jobs can write to a target (for `validate`):
    a "*" backup's databases are known only at run time, so the longest name a database can
    be made (see safe_component) stands in for them."""
    stamp = timestamp(datetime(2000, 1, 1, tzinfo=UTC))
    job = f"{backup.name}.{'x' * LONGEST_SAFE_NAME}" if backup.is_wildcard else backup.name
    kinds = [(job, JobKind.DATABASE)]
    if backup.globals:
        kinds.append((globals_job_name(backup), JobKind.GLOBALS))
    return [f"{file_prefix(storage, name)}{stamp}{extension(backup, kind)}" for name, kind in kinds]


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
            globals_name = globals_job_name(backup)
            jobs.append(_job(backup, JobKind.GLOBALS, globals_name, _maintenance_db(backup), stamp))
    explicit = {
        name for name in names if "." in name and name not in {b.name for b in config.backups}
    }
    if explicit:
        _refuse_unmatched(explicit, jobs, discovered)
        jobs = [job for job in jobs if _named(job, explicit) or job.backup.name in names]
    runnable, refused = _refuse_unsafe(jobs)
    return Plan(
        started_at=now,
        jobs=tuple(runnable),
        concurrency=concurrency or config.concurrency or default_concurrency(),
        host_limits=_host_limits(runnable),
        refused=tuple(refused),
    )


def _named(job: JobSpec, names: Collection[str]) -> bool:
    """Is `job` one of `names`: by its job name, or as `<backup>.<the database's own name>`?"""
    return job.name in names or f"{job.backup.name}.{job.database}" in names


def _refuse_unmatched(
    names: Collection[str], jobs: Sequence[JobSpec], discovered: Mapping[str, Sequence[str]]
) -> None:
    """`-n all.typo` must not back up nothing and succeed: a name that matches no database
    a "*" backup found raises SelectionError with the near matches. (A backup whose
    databases could not be listed fails as such instead.)"""
    for name in sorted(names):
        backup = next((b for b in discovered if name.startswith(f"{b}.")), None)
        if backup is None or any(_named(job, [name]) for job in jobs):
            continue
        candidates = [j.name for j in jobs if j.backup.name == backup]
        candidates += [f"{backup}.{j.database}" for j in jobs if j.backup.name == backup]
        near = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        listed = ", ".join(sorted(candidates)[:10]) or "none"
        hint = f"did you mean {', '.join(map(repr, near))}?" if near else f"jobs: {listed}"
        raise SelectionError(
            f'-n {name!r} matches no database that backup {backup!r} (database: "*") found '
            f"on its server; {hint}"
        )


def _maintenance_db(backup: BackupConfig) -> str:
    return "postgres" if backup.is_wildcard else backup.database


def _job(backup: BackupConfig, kind: JobKind, name: str, database: str, stamp: str) -> JobSpec:
    targets = []
    for storage in backup.targets:
        prefix = file_prefix(storage, name)
        targets.append(Target(storage, f"{prefix}{stamp}{extension(backup, kind)}", prefix))
    return JobSpec(
        name=name,
        kind=kind,
        backup=backup,
        database=database,
        server=server_of(backup),
        targets=tuple(targets),
    )


def _refuse_unsafe(jobs: Sequence[JobSpec]) -> tuple[list[JobSpec], list[tuple[JobSpec, str]]]:
    """Split the jobs into those that may run and those refused, each with why: a file name
    that would leave its folder or is too long, or a job name two databases share (`audit_x
    y` is made safe as `audit_x_y-4f98d65d`, which another database may be called). Only the
    jobs concerned fail; the run goes on."""
    sharing: dict[str, list[JobSpec]] = {}
    for job in jobs:
        sharing.setdefault(job.name, []).append(job)
    runnable, refused = [], []
    for job in jobs:
        others = [o for o in sharing[job.name] if o is not job]
        problem = next(
            filter(None, (unusable_name(t.storage, t.filename) for t in job.targets)), None
        )
        if others:
            names = ", ".join(repr(o.database) for o in others)
            problem = (
                f"job name {job.name!r} (database {job.database!r}) is also what database "
                f"{names} of backup {others[0].backup.name!r} is called in file names; rename "
                "one database, or exclude one"
            )
        if problem is None:
            runnable.append(job)
        else:
            refused.append((job, problem))
    return runnable, refused


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
