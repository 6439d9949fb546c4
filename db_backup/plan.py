"""Config + selection + discovered databases → Plan. Pure: no I/O, so --dry-run stops here.

Jobs get their file names from naming.py, one timestamp per run so a dry run shows the exact
names; a job whose name cannot be used (too long, two databases sharing it) is refused alone.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime

from db_backup.config.schema import BackupConfig, Config
from db_backup.errors import SelectionError
from db_backup.model import JobKind, JobSpec, Plan, Server, Target
from db_backup.naming import (
    extension,
    file_prefix,
    globals_job_name,
    safe_component,
    timestamp,
    unusable_name,
)
from db_backup.sources import source_for


def default_concurrency() -> int:
    """Jobs at once when neither config nor `-j` says: the CPU count, at least 2."""
    return max(2, os.cpu_count() or 1)


def server_of(backup: BackupConfig) -> Server:
    """The server a backup's jobs run against, for per-server limits and globals: a MySQL
    backup through a Unix socket is known by the socket's path."""
    return Server(getattr(backup, "socket", None) or backup.host, backup.port)


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
            globals_name = globals_job_name(backup)
            jobs.append(
                _job(
                    backup,
                    JobKind.GLOBALS,
                    globals_name,
                    source_for(backup).maintenance_database(backup),
                    stamp,
                )
            )
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


def _job(backup: BackupConfig, kind: JobKind, name: str, database: str, stamp: str) -> JobSpec:
    targets = []
    for storage in backup.targets:
        prefix = file_prefix(storage, name)
        suffix = extension(backup, kind, raw=storage.takes_raw)
        targets.append(Target(storage, f"{prefix}{stamp}{suffix}", prefix))
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


def host_limits_of(backups: Sequence[BackupConfig]) -> dict[Server, int]:
    """Per server, the smallest `max_per_host` of the backups on it (serve: every backup
    of the config, whichever run comes first)."""
    limits: dict[Server, int] = {}
    for backup in backups:
        if backup.max_per_host is not None:
            server = server_of(backup)
            limits[server] = min(backup.max_per_host, limits.get(server, backup.max_per_host))
    return limits


def wildcard_job(backup: BackupConfig, now: datetime) -> JobSpec:
    """A stand-in job for a `database: "*"` backup whose databases could not be listed."""
    return _job(backup, JobKind.DATABASE, backup.name, backup.database, timestamp(now))
