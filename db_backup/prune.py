"""Applying retention to local folders: after each committed backup, and by `db-backup prune`.

Decisions come from retention.decide, per job, over that job's own finished backups as the
catalog finds them in the folder (no ledger: a fresh machine prunes the same way). A backup is
deleted manifest first, so it stops being a backup before its data file goes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from db_backup.catalog import Entry, job_entries, list_backups
from db_backup.config.schema import Config, RetentionConfig
from db_backup.errors import StorageError
from db_backup.lock import lock_storage
from db_backup.model import JobSpec
from db_backup.plan import select_backups
from db_backup.retention import Backup, Decision, decide
from db_backup.sinks.local import describe_os_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneVerdict:
    entry: Entry
    decision: Decision


def plan_prune(
    entries: Iterable[Entry], policies: dict[str, RetentionConfig], now: datetime
) -> list[PruneVerdict]:
    """Keep/delete for every entry, each job judged against its own backups only. Pure."""
    by_job: dict[str, list[Entry]] = {}
    for entry in entries:
        if entry.backup in policies:
            by_job.setdefault(entry.job, []).append(entry)
    verdicts = []
    for group in by_job.values():
        by_id = {str(entry.file): entry for entry in group}
        policy = policies[group[0].backup]
        backups = [Backup(key, entry.taken_at) for key, entry in by_id.items()]
        verdicts += [PruneVerdict(by_id[d.backup.id], d) for d in decide(backups, policy, now)]
    return verdicts


def delete(entry: Entry) -> None:
    """Remove one backup: its manifest, then its data file."""
    for path in (entry.file.with_name(entry.file.name + ".json"), entry.file):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {describe_os_error(exc)}") from None


def apply(verdicts: Sequence[PruneVerdict]) -> list[Entry]:
    """Delete what the verdicts do not keep; returns what was deleted."""
    deleted = []
    for verdict in verdicts:
        if not verdict.decision.keep:
            delete(verdict.entry)
            deleted.append(verdict.entry)
    return deleted


def prune_job(job: JobSpec, now: datetime) -> list[Entry]:
    """After `job` committed a backup (under the run's lock): apply its policy to its own
    backups in that folder. A failure to delete is logged, not raised: the backup that just
    committed is fine."""
    policy = job.backup.retention
    if policy.is_empty:
        return []
    try:
        deleted = apply(plan_prune(job_entries(job), {job.backup.name: policy}, now))
    except StorageError as exc:
        log.warning("retention for %s: %s", job.name, exc)
        return []
    for entry in deleted:
        log.info("retention: deleted %s (kept by no rule)", entry.file)
    return deleted


async def prune_config(
    config: Config, names: Sequence[str], *, dry_run: bool, now: datetime
) -> list[PruneVerdict]:
    """`db-backup prune`: every selected backup's policy, now; deletes unless `dry_run`.

    Backups without a policy are left alone. Deleting takes the storage locks, so it never
    races a running backup (a held lock refuses at once, as for `backup`)."""
    policies = {
        backup.name: backup.retention
        for backup in select_backups(config, names)
        if not backup.retention.is_empty
    }
    verdicts = plan_prune(await list_backups(config, names), policies, now)
    if dry_run or all(v.decision.keep for v in verdicts):
        return verdicts
    locks = await lock_storage({v.entry.file.parent for v in verdicts}, wait=None)
    try:
        await asyncio.to_thread(apply, verdicts)
    finally:
        locks.release()
    return verdicts
