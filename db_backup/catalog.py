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


def scan_folder(folder: Path, backups: frozenset[str]) -> list[Entry]:
    """Finished backups of the named config backups in one folder."""
    entries: list[Entry] = []
    if not folder.is_dir():
        return entries
    for path in folder.glob("*.json"):
        try:
            record = manifest.read(path)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            continue  # not one of our manifests
        data_file = path.with_name(record.file)
        if record.backup not in backups or path.name != f"{record.file}.json":
            continue
        if not data_file.is_file():
            continue
        entries.append(
            Entry(
                job=record.job,
                backup=record.backup,
                database=record.database,
                taken_at=record.started_at,
                stored_bytes=record.stored_bytes,
                raw_bytes=record.raw_bytes,
                target=f"local:{folder}",
                file=data_file,
                sha256=record.sha256,
            )
        )
    return entries


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
