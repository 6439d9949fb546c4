"""The catalog: every finished backup of a config on every target, read from the manifests.

A backup is a file with a readable manifest beside it naming it; partial files, foreign files,
uploads in progress and files without a manifest are not backups. Targets are listed, not a
local ledger, so the catalog is the same from any machine that can reach them.

In code a stored backup is an *archive*: "backup" already names a config entry
(`BackupConfig`) and a command.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from db_backup import manifest, runtime
from db_backup.config.schema import BackupConfig, Config, StorageConfig
from db_backup.manifest import Manifest, RestoreTest
from db_backup.model import JobKind, Target
from db_backup.naming import file_prefix, is_own_file, restore_test_name
from db_backup.plan import select_backups
from db_backup.retention import is_future
from db_backup.storage import Store, ask_targets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """One archive: a finished backup on one target, as `list` shows it."""

    job: str
    backup: str
    database: str
    taken_at: datetime
    stored_bytes: int
    raw_bytes: int
    target: str  # the target's label, e.g. "local:/var/backups" or "s3://bucket/folder/"
    name: str  # the file's name on that target
    location: str  # where it is: a path or an s3:// URL
    sha256: str
    checks: tuple[str, ...]  # what was verified before it was committed
    store: Store = field(compare=False, repr=False)
    record: Manifest = field(compare=False, repr=False)  # its manifest, as read
    restore_test: RestoreTest | None = field(default=None, compare=False)  # the last one

    @property
    def manifest_name(self) -> str:
        return f"{self.name}.json"


@dataclass(frozen=True)
class Catalog:
    """What listing found: the backups, and the targets that could not be listed."""

    archives: list[Archive]
    errors: dict[str, str]  # target label → why it could not be listed


def _records(store: Store, prefix: str) -> Iterator[Archive]:
    """Every file under `prefix` with a readable manifest, by name from last to first (for
    one job's prefix: newest first, the timestamp follows it), with its last restore test."""
    names = set(store.names(prefix))
    for name in sorted(names, reverse=True):
        data_name = name.removesuffix(".json")
        if data_name == name or data_name not in names:
            continue
        try:
            record = manifest.decode(store.read(name))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # not one of our manifests
        if record.file != data_name:
            continue
        tested = None
        if restore_test_name(data_name) in names:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                tested = manifest.decode_restore_test(store.read(restore_test_name(data_name)))
        yield _archive(store, data_name, record, tested)


def _archive(store: Store, name: str, record: Manifest, tested: RestoreTest | None) -> Archive:
    return Archive(
        job=record.job,
        backup=record.backup,
        database=record.database,
        taken_at=record.started_at,
        stored_bytes=record.stored_bytes,
        raw_bytes=record.raw_bytes,
        target=store.label,
        name=name,
        location=store.location(name),
        sha256=record.sha256,
        checks=record.checks,
        store=store,
        record=record,
        restore_test=tested,
    )


def scan(storage: StorageConfig, backups: frozenset[str]) -> list[Archive]:
    """Finished backups of the named config backups on one target: their own files only —
    a file named as its job's files are here (`[<prefix>_]<job>_<time>`), so another
    config's backup of the same name with another prefix in the same folder is not ours."""
    store = runtime.current().store(storage)
    return [
        archive
        for archive in _records(store, "")
        if archive.backup in backups
        and is_own_file(archive.name, file_prefix(storage, archive.job))
    ]


def _job_archives(target: Target, job_name: str, backup: str) -> Iterator[Archive]:
    store = runtime.current().store(target.storage)
    for archive in _records(store, target.file_prefix):
        if is_own_file(archive.name, target.file_prefix) and (archive.job, archive.backup) == (
            job_name,
            backup,
        ):
            yield archive


def job_archives(target: Target, job_name: str, backup: str) -> list[Archive]:
    """Finished backups of one job on one target, reading only that job's manifests."""
    return list(_job_archives(target, job_name, backup))


def latest(target: Target, job_name: str, backup: str) -> Archive | None:
    """The newest finished backup of a job on a target, if any: reads manifests newest
    first and stops at the first good one."""
    return next(_job_archives(target, job_name, backup), None)


def warn_about_future(archives: Iterable[Archive], now: datetime) -> None:
    """Log each backup dated in the future (see retention.is_future): retention keeps such
    a backup and leaves it out of the counting, and a person should look at it."""
    for entry in archives:
        if is_future(entry.taken_at, now):
            log.warning(
                "%s is dated %s, in the future (a clock that jumped?): retention keeps it and "
                "does not count it; delete it by hand if it is wrong",
                entry.location,
                entry.taken_at.isoformat(timespec="seconds"),
            )


def targets_of(backups: Iterable[BackupConfig]) -> dict[StorageConfig, frozenset[str]]:
    """Each target of these backups, with the names of the backups stored there."""
    found: dict[StorageConfig, set[str]] = {}
    for backup in backups:
        for storage in backup.targets:
            found.setdefault(storage, set()).add(backup.name)
    return {storage: frozenset(names) for storage, names in found.items()}


async def list_backups(config: Config, names: Sequence[str] = ()) -> Catalog:
    """The finished backups of the config's backups on all their targets, newest first;
    `names` selects as `backup -n` does (a backup's name, or `<backup>.<database>` for one
    of a "*"). A target that cannot be listed is reported, and the others still are."""
    wanted = targets_of(select_backups(config, names))
    found, errors = await ask_targets(
        {
            storage.label: functools.partial(scan, storage, backups)
            for storage, backups in wanted.items()
        }
    )
    archives = [
        entry
        for listed in found.values()
        for entry in listed
        if not names or entry.backup in names or entry.job in names
    ]
    archives.sort(key=lambda e: (e.taken_at, e.job, e.target), reverse=True)
    return Catalog(archives, errors)


def newest_per_backup(archives: Iterable[Archive]) -> dict[str, datetime]:
    """Each backup's newest finished database backup, on any target (`schedule`, `serve`)."""
    newest: dict[str, datetime] = {}
    for archive in archives:
        if archive.record.kind != JobKind.DATABASE.value:
            continue
        if archive.backup not in newest or archive.taken_at > newest[archive.backup]:
            newest[archive.backup] = archive.taken_at
    return newest
