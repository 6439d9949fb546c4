"""Applying retention on every target: after each committed backup, and by `db-backup prune`.

Decisions come from retention.decide, per job and per target, over that job's own finished
backups as the catalog finds them there (no ledger: a fresh machine prunes the same way). A
target never judges, or deletes, what another holds. A backup is deleted manifest first, so it
stops being a backup before its data file goes.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from db_backup import runtime
from db_backup.catalog import Archive, job_archives, list_backups, targets_of, warn_about_future
from db_backup.config.schema import Config, RetentionConfig, S3Storage
from db_backup.errors import StorageError
from db_backup.lock import lock_folder, lock_storage
from db_backup.model import JobSpec, Target
from db_backup.naming import file_prefix, restore_test_name
from db_backup.plan import select_backups
from db_backup.retention import ArchiveDate, Decision, decide
from db_backup.threads import in_thread

log = logging.getLogger(__name__)

# (backup name, target label) → the policy that applies there
Policies = Mapping[tuple[str, str], RetentionConfig]


@dataclass(frozen=True)
class PruneVerdict:
    archive: Archive
    decision: Decision


@dataclass
class PruneReport:
    """What `db-backup prune` decided and did."""

    verdicts: list[PruneVerdict]
    errors: dict[str, str] = field(default_factory=dict)  # target label → what went wrong
    deleted: list[Archive] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)  # incomplete uploads / partials removed


def plan_prune(
    archives: Iterable[Archive], policies: Policies, now: datetime, *, keep: Collection[str] = ()
) -> list[PruneVerdict]:
    """Keep/delete for every archive, each job on each target judged against its own backups
    there only. Entries without a policy are not judged; `keep`: locations kept whatever the
    policy says. Pure."""
    groups: dict[tuple[str, str], list[Archive]] = {}
    for archive in archives:
        if (archive.backup, archive.target) in policies:
            groups.setdefault((archive.job, archive.target), []).append(archive)
    verdicts = []
    for group in groups.values():
        by_id = {archive.location: archive for archive in group}
        policy = policies[group[0].backup, group[0].target]
        backups = [ArchiveDate(key, archive.taken_at) for key, archive in by_id.items()]
        decisions = decide(backups, policy, now, keep=keep)
        verdicts += [PruneVerdict(by_id[d.archive.id], d) for d in decisions]
    return verdicts


def delete(archive: Archive) -> None:
    """Remove one backup: its manifest, then its data file, then its restore-test record."""
    archive.store.delete(archive.manifest_name)
    archive.store.delete(archive.name)
    archive.store.delete(restore_test_name(archive.name))


def apply(verdicts: Sequence[PruneVerdict]) -> tuple[list[Archive], dict[str, str]]:
    """Delete what the verdicts do not keep; returns what was deleted, and per target the
    first error (a target that fails stops there; the others go on)."""
    deleted: list[Archive] = []
    errors: dict[str, str] = {}
    for verdict in verdicts:
        archive = verdict.archive
        if verdict.decision.keep or archive.target in errors:
            continue
        try:
            delete(archive)
        except StorageError as exc:
            errors[archive.target] = str(exc)
        else:
            deleted.append(archive)
    stores = {archive.target: archive.store for archive in deleted}
    for label, store in stores.items():
        try:
            store.tidy()  # a restic repository forgets and prunes them all at once
        except StorageError as exc:
            errors.setdefault(label, str(exc))
    return deleted, errors


def prune_job(job: JobSpec, target: Target, now: datetime) -> list[Archive]:
    """After `job` committed a backup on `target` (under the run's lock): apply the policy
    for that target to the job's own backups there. A failure to delete is logged, not
    raised: the backup that just committed is fine."""
    policy = job.backup.retention_for(target.storage)
    if policy.is_empty:
        return []
    try:
        archives = job_archives(target, job.name, job.backup.name)
        policies = {(job.backup.name, target.label): policy}
        just_made = runtime.current().store(target.storage).location(target.filename)
        verdicts = plan_prune(archives, policies, now, keep={just_made})
        warn_about_future(archives, now)
        deleted, errors = apply(verdicts)
    except StorageError as exc:
        deleted, errors = [], {target.label: str(exc)}
    for error in errors.values():
        log.warning("retention for %s: %s", job.name, error)
    for archive in deleted:
        log.info("retention: deleted %s (kept by no rule)", archive.location)
    return deleted


def policies_of(config: Config, names: Sequence[str]) -> dict[tuple[str, str], RetentionConfig]:
    """The non-empty policies of the selected backups, per (backup, target)."""
    return {
        (backup.name, storage.label): policy
        for backup in select_backups(config, names)
        for storage in backup.targets
        if not (policy := backup.retention_for(storage)).is_empty
    }


async def prune_config(
    config: Config,
    names: Sequence[str],
    *,
    dry_run: bool,
    now: datetime,
    wait: float | None = None,
) -> PruneReport:
    """`db-backup prune`: every selected backup's policies, now; deletes unless `dry_run`.

    Backups without a policy are left alone. Deleting takes the targets' locks, so it never
    races a running backup (a held lock refuses at once, as for `backup`, unless `wait` says
    how long to wait for it: serve waits for its own runs); under them, the incomplete
    uploads and partial files of the listed jobs are removed too."""
    catalog = await list_backups(config, names)
    report = PruneReport(plan_prune(catalog.archives, policies_of(config, names), now))
    report.errors.update(catalog.errors)
    warn_about_future(catalog.archives, now)
    if dry_run:
        return report
    targets = targets_of(select_backups(config, names))
    locks = await lock_storage({lock_folder(storage) for storage in targets}, wait=wait)
    try:
        report.deleted, errors = await in_thread(apply, report.verdicts)
        report.errors.update(errors)
        jobs = {(e.target, e.job) for e in catalog.archives}
        for storage, backups in targets.items():
            if lock_folder(storage) not in locks.held or storage.label in report.errors:
                continue
            if isinstance(storage, S3Storage) and storage.leases:
                # Another machine may be uploading there now: each job's next backup run
                # cleans up after it, under the job's lease (leasing.clean_under_lease).
                continue
            prefixes = sorted(
                {file_prefix(storage, job) for label, job in jobs if label == storage.label}
                | {file_prefix(storage, name) for name in backups}
            )
            try:
                store = runtime.current().store(storage)
                report.cleaned += await in_thread(store.clean_incomplete, prefixes)
            except StorageError as exc:
                report.errors[storage.label] = str(exc)
    finally:
        locks.release()
    return report
