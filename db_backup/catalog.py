"""The catalog: every finished backup of a config, read from the manifests beside them.

A backup is a file with a readable manifest naming it; partial files, foreign files and files
without a manifest are not backups. Local folders today; other targets list the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec

from db_backup import manifest
from db_backup.config.schema import Config
from db_backup.model import JobSpec
from db_backup.plan import select_backups


@dataclass(frozen=True)
class Entry:
    """One finished backup, as `list` shows it."""

    job: str
    backup: str
    database: str
    taken_at: datetime
    stored_bytes: int
    raw_bytes: int
    target: str  # "local:<folder>"
    file: Path
    sha256: str


def _entry(path: Path, backups: frozenset[str]) -> Entry | None:
    """The backup a manifest file describes, if it is a finished one of these backups."""
    try:
        record = manifest.read(path)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None  # not one of our manifests
    data_file = path.with_name(record.file)
    if record.backup not in backups or path.name != f"{record.file}.json":
        return None
    if not data_file.is_file():
        return None
    return Entry(
        job=record.job,
        backup=record.backup,
        database=record.database,
        taken_at=record.started_at,
        stored_bytes=record.stored_bytes,
        raw_bytes=record.raw_bytes,
        target=f"local:{path.parent}",
        file=data_file,
        sha256=record.sha256,
    )


def scan_folder(folder: Path, backups: frozenset[str]) -> list[Entry]:
    """Finished backups of the named config backups in one folder."""
    if not folder.is_dir():
        return []
    found = (_entry(path, backups) for path in folder.glob("*.json"))
    return [entry for entry in found if entry is not None]


def job_entries(job: JobSpec) -> list[Entry]:
    """Finished backups of one job in its folder, reading only that job's manifests."""
    found = (
        _entry(path, frozenset({job.backup.name}))
        for path in manifest.own_manifests(job.target.directory, job.file_prefix)
    )
    return [entry for entry in found if entry is not None and entry.job == job.name]


async def list_backups(config: Config, names: Sequence[str] = ()) -> list[Entry]:
    """The finished backups of the config's backups, newest first; `names` selects as
    `backup -n` does (a backup's name, or `<backup>.<database>` for one of a "*")."""
    selected = select_backups(config, names)
    wanted = frozenset(b.name for b in selected)
    folders = sorted({Path(b.storage.path) for b in selected})
    found = await asyncio.gather(*(asyncio.to_thread(scan_folder, f, wanted) for f in folders))
    entries = [
        entry
        for group in found
        for entry in group
        if not names or entry.backup in names or entry.job in names
    ]
    return sorted(entries, key=lambda e: (e.taken_at, e.job), reverse=True)
