"""The sidecar manifest `<backup file>.json`: what was dumped, when, how big, and its sha256.

Written last and atomically, so a backup file with a manifest is a finished backup. Retention,
verification and the catalog read these.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec

from db_backup.plan import is_own_file

MANIFEST_VERSION = 1


class CompressionInfo(msgspec.Struct, frozen=True, kw_only=True):
    algorithm: str  # gzip | none | pg_dump (custom format compresses itself)
    level: int | None


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    manifest_version: int = MANIFEST_VERSION
    tool: str = "db-backup"
    tool_version: str
    job: str
    backup: str  # the config entry the job came from
    kind: str  # database | globals
    database: str
    server: str  # host:port
    server_version: str
    client: str  # the dump program and its version, e.g. "pg_dump 15.18"
    format: str  # plain | custom
    compression: CompressionInfo
    file: str  # the backup's file name, beside this manifest
    raw_bytes: int  # bytes the dump program wrote
    stored_bytes: int  # bytes stored (after compression)
    sha256: str  # of the stored file
    started_at: datetime
    finished_at: datetime
    duration_seconds: float


def encode(manifest: Manifest) -> bytes:
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"


def read(path: Path) -> Manifest:
    return msgspec.json.decode(path.read_bytes(), type=Manifest)


def own_manifests(directory: Path, file_prefix: str) -> list[Path]:
    """The manifest files of one job (by its file prefix) in `directory`, newest first.

    Only that job's names are globbed: other jobs' manifests are not even opened."""
    if not directory.is_dir():
        return []
    return sorted(
        (
            path
            for path in directory.glob(f"{glob_escape(file_prefix)}*.json")
            if is_own_file(path.name, file_prefix)
        ),
        reverse=True,
    )


def latest(directory: Path, file_prefix: str) -> Manifest | None:
    """The newest readable manifest of a job's earlier backups in `directory`, if any."""
    for path in own_manifests(directory, file_prefix):
        try:
            return read(path)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            continue
    return None


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)
