"""Talking to servers before any dump: `database: "*"` discovery, connection and target
checks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from db_backup import runtime
from db_backup.config.schema import BackupConfig
from db_backup.errors import BackupError
from db_backup.model import JobSpec
from db_backup.sources.base import ServerInfo
from db_backup.storage import ask_targets


@dataclass(frozen=True)
class Discovery:
    """Databases found per `database: "*"` backup, and the backups whose listing failed."""

    databases: dict[str, list[str]]
    errors: dict[str, BackupError]


async def discover(backups: Sequence[BackupConfig]) -> Discovery:
    """List the databases on the server of every wildcard backup, concurrently."""
    wildcards = [backup for backup in backups if backup.is_wildcard]

    async def listing(backup: BackupConfig) -> list[str]:
        return await runtime.current().source(backup).list_databases(backup)

    outcomes = await asyncio.gather(*(listing(b) for b in wildcards), return_exceptions=True)
    found: dict[str, list[str]] = {}
    errors: dict[str, BackupError] = {}
    for backup, outcome in zip(wildcards, outcomes, strict=True):
        if isinstance(outcome, BackupError):
            errors[backup.name] = outcome
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            found[backup.name] = outcome
    return Discovery(found, errors)


@dataclass(frozen=True)
class CheckOutcome:
    job: JobSpec
    server: ServerInfo | None
    error: BackupError | None


async def check_jobs(jobs: Sequence[JobSpec], concurrency: int) -> list[CheckOutcome]:
    """Connect to every job's database as its dump would, at most `concurrency` at once."""
    slots = asyncio.Semaphore(concurrency)

    async def check(job: JobSpec) -> CheckOutcome:
        async with slots:
            try:
                info = await runtime.current().source(job.backup).probe(job.backup, job.database)
            except BackupError as exc:
                return CheckOutcome(job, None, exc)
            return CheckOutcome(job, info, None)

    return list(await asyncio.gather(*(check(job) for job in jobs)))


async def check_targets(backups: Sequence[BackupConfig]) -> dict[str, str | None]:
    """Every target of these backups, checked at once: label → None (usable) or why not."""
    storages = list(dict.fromkeys(storage for backup in backups for storage in backup.targets))
    stores = runtime.current()
    _, errors = await ask_targets({s.label: stores.store(s).check for s in storages})
    return {storage.label: errors.get(storage.label) for storage in storages}
