"""The sidecar manifest `<backup file>.json`: what was dumped, when, how big, and its sha256.

Written last and atomically, so a backup file with a manifest is a finished backup. Retention,
verification and the catalog read these.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

MANIFEST_VERSION = 1
# Manifests written before engines had names were all PostgreSQL's.
DEFAULT_ENGINE = "postgres"


class CompressionInfo(msgspec.Struct, frozen=True, kw_only=True):
    algorithm: str  # gzip | none | pg_dump (custom format compresses itself)
    level: int | None


class Compressed(msgspec.Struct, frozen=True, kw_only=True, tag_field="stage", tag="compress"):
    """A compression stage the runner applied (not the dump program's own)."""

    algorithm: str  # gzip | zstd
    level: int | None


class Encrypted(msgspec.Struct, frozen=True, kw_only=True, tag_field="stage", tag="encrypt"):
    """An encryption stage: the stored bytes are an age file (age-encryption.org/v1) that any
    one of `recipients` (public keys, never a secret) can decrypt."""

    method: str = "age"
    recipients: tuple[str, ...]


# Every kind of stage a manifest can list; each is read back by its own inverse, see
# stages/unpack.py.
StageRecord = Compressed | Encrypted


class Contents(msgspec.Struct, frozen=True, kw_only=True):
    """What the dump holds, counted from its own stream as it was made (sources/), so a
    restore can be checked against it: rows per table, each sequence's value and whether it
    was called, the number of large objects."""

    tables: dict[str, int]  # the table's name as the dump writes it → rows
    sequences: dict[str, tuple[int, bool]] = {}
    large_objects: int = 0


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    manifest_version: int = MANIFEST_VERSION
    tool: str = "db-backup"
    tool_version: str
    engine: str = DEFAULT_ENGINE  # the Source that made it (see sources/)
    job: str
    backup: str  # the config entry the job came from
    kind: str  # database | globals
    database: str
    server: str  # host:port
    server_version: str
    client: str  # the dump program and its version, e.g. "pg_dump 15.18"
    format: str  # the engine's: plain | custom for PostgreSQL
    compression: CompressionInfo
    file: str  # the backup's file name, beside this manifest
    raw_bytes: int  # bytes the dump program wrote
    stored_bytes: int  # bytes stored (after compression)
    sha256: str  # of the stored file
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    # What was checked before the backup was committed: "sha256" of the stored bytes, and
    # "end marker" (plain SQL) or "pg_restore read-through" (custom format).
    checks: tuple[str, ...] = ()
    # The stages the dump went through on its way to storage, in the order applied; reading
    # back undoes them last first. Manifests written before this field: see `stages_of`.
    stages: tuple[StageRecord, ...] = ()
    # What the dump holds (None: not counted, e.g. older manifests or globals).
    contents: Contents | None = None
    # "age" when the stored bytes are encrypted (its stage record lists the recipients).
    encryption: str | None = None


class RestoreTest(msgspec.Struct, frozen=True, kw_only=True):
    """`<backup file>.verify.json`: the outcome of restoring that backup into a sandbox and
    checking it against its manifest's contents (`db-backup verify --restore`). Written
    beside the backup, atomically; the manifest stays as it was written."""

    record_version: int = 1
    file: str  # the backup file it is about
    sha256: str  # of the bytes that were restored
    tested_at: datetime
    sandbox: str  # "throwaway PostgreSQL 15.18 (…)", or the configured server
    duration_seconds: float
    ok: bool
    problems: tuple[str, ...] = ()  # why it failed: a restore error, a table's counts…
    checked: tuple[str, ...] = ()  # what held: "3 tables, 3,003 rows as recorded"…


def decode_restore_test(data: bytes) -> RestoreTest:
    return msgspec.json.decode(data, type=RestoreTest)


def stages_of(record: Manifest) -> tuple[StageRecord, ...]:
    """The stages a manifest's file went through. Manifests written before stages were listed
    had one at most, their compression (unless pg_dump compressed it itself, or nothing did)."""
    if record.stages or record.compression.algorithm not in ("gzip", "zstd"):
        return record.stages
    return (Compressed(algorithm=record.compression.algorithm, level=record.compression.level),)


def decode(data: bytes) -> Manifest:
    """A manifest from its JSON; raises msgspec.DecodeError / ValidationError when it is not."""
    return msgspec.json.decode(data, type=Manifest)


def encode(manifest: Manifest | RestoreTest) -> bytes:
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"
