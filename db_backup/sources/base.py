"""What a database engine is to the rest of db-backup: one interface, `Source`.

The job, the orchestrator, preflight, the planner and verify talk to an engine only through
it (and find it by the config's `type`, see sources/__init__.py), so another engine is one
more module: check a connection, list databases, build the dump (argv, environment, format,
whether it compresses itself, how its completeness is told), say which failures are worth
another attempt, and restore: the state of a destination database, creating, dropping and
renaming one, the program that reads a dump into it. Throwaway servers join here later.
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from db_backup.config.schema import BackupConfig
from db_backup.errors import BackupError
from db_backup.manifest import CompressionInfo, Contents, Manifest
from db_backup.model import JobKind, JobSpec
from db_backup.stages import TAIL_BYTES


@dataclass(frozen=True)
class ServerInfo:
    """What a connection check learned about one database's server."""

    product: str  # "PostgreSQL", for people
    version: str  # e.g. "15.18 (Debian 15.18-0+deb12u1)"
    version_num: int  # comparable, e.g. 150018
    database_size: int | None  # bytes on disk, a rough hint of the dump's size


@dataclass(frozen=True)
class Completion:
    """How a finished dump is told from one cut short: its output ends with a marker, or a
    reader program (`Dump.reader_argv`) takes the dump's bytes through without complaint."""

    check: str  # what the manifest's `checks` calls it: "end marker", "pg_restore read-through"
    passed: str  # what verify says when it holds
    failed: str  # ... and when it does not
    end_marker: bytes | None = None
    read_through: bool = False

    def ends_whole(self, tail: bytes) -> bool:
        """Does output ending in `tail` carry the end marker (when there is one)?"""
        return self.end_marker is None or self.end_marker in tail[-TAIL_BYTES:]


def counting() -> bool:
    """Count what dumps hold (for restore tests)? DB_BACKUP_COUNT_CONTENTS=0 turns it off:
    the benchmark's baseline for what counting costs."""
    return os.environ.get("DB_BACKUP_COUNT_CONTENTS", "1") != "0"


class ContentCounter(Protocol):
    """Counts what a dump holds from its own bytes as they stream past (sans-I/O)."""

    def feed(self, data: bytes) -> None: ...

    def contents(self) -> Contents: ...


@dataclass(frozen=True)
class Dump:
    """One dump, ready to run: what to spawn and what its output will be."""

    program: str  # "pg_dump", for messages
    client: str  # "pg_dump 15.18", for the manifest
    argv: list[str]
    env: dict[str, str]
    format: str  # "plain" | "custom", for the manifest and verify
    completion: Completion
    # Set when the dump program compresses its own output (how, for the manifest): the
    # pipeline then stores it as it comes.
    compression: CompressionInfo | None
    expected_bytes: int | None  # raw output to expect, for an ETA; None when unknown
    reader_argv: list[str] | None = None  # reads the dump's bytes through (read_through)
    # Counts rows etc. for the manifest, if it can: fed the dump's bytes, or, when there is a
    # reader, what the reader writes on its stdout (the dump as plain SQL).
    counter: ContentCounter | None = None
    secret: str | None = None  # masked in what the dump program says
    # A client option file the program reads from an inherited pipe, where argv says
    # process.INHERITED_FILE (MySQL's password: never in argv, env or on disk).
    inherited_file: bytes | None = None


class DatabaseState(StrEnum):
    """What a restore finds under the destination's name."""

    MISSING = "missing"
    EMPTY = "empty"  # exists, holds nothing of its own (no tables, routines, schemas…)
    NOT_EMPTY = "not empty"


@dataclass(frozen=True)
class RestoreProgram:
    """The program that reads a dump (from stdin, or from `file` when staged) into a
    database, and how to tell that it failed: its exit code; and, for a program that carries
    on past errors (globals), each stderr line holding `error_marker` that none of
    `tolerated` explains."""

    program: str  # "psql", for messages
    argv: list[str]
    env: dict[str, str]
    secret: str | None = None  # masked in what the program says
    inherited_file: bytes | None = None  # as Dump's
    error_marker: str | None = None
    tolerated: tuple[str, ...] = ()  # e.g. "already exists" (a role the server has)


@dataclass(frozen=True)
class Sandbox:
    """A server to restore into for a test: how to connect, and what it is (for records)."""

    server: BackupConfig
    description: str  # "throwaway PostgreSQL 15.18 (Debian …)", or host:port
    version: str  # its server version, "15.18 (Debian …)"
    scratch: bool = False  # a configured server: change nothing there but the test database


class Source(Protocol):
    """One database engine (see the module's docstring)."""

    name: str  # the config's `type:`, and the manifest's `engine`
    # Can it rename a database? If so a restore stages under another name and swaps it in;
    # if not (MySQL), it restores only into a missing or empty database, directly.
    renames_databases: bool

    async def probe(self, backup: BackupConfig, database: str) -> ServerInfo:
        """Connect to `database` as the dump will; raise ConnectionCheckError (or another
        BackupError) saying how it failed."""
        ...

    async def list_databases(self, backup: BackupConfig) -> list[str]:
        """Every database on the backup's server that a `database: "*"` backup takes."""
        ...

    async def dump(self, job: JobSpec, server: ServerInfo) -> Dump:
        """The dump of `job` against a server the probe described (chooses the client)."""
        ...

    def maintenance_database(self, backup: BackupConfig) -> str:
        """The database to connect to for server-wide work (globals, listing)."""
        ...

    def completion(self, format: str, kind: JobKind) -> Completion:
        """How completeness is told for a stored dump of this format and kind (verify)."""
        ...

    async def reader_argv(self) -> list[str]:
        """A program that reads a `read_through` dump from stdin (verify)."""
        ...

    def is_transient(self, error: BackupError) -> bool:
        """Might the same job succeed if simply tried again a little later?"""
        ...

    # -- restore: `server` is a backup's connection settings (host, port, credentials)

    async def database_state(self, server: BackupConfig, database: str) -> DatabaseState:
        """Is `database` there on the server, and does it hold anything?"""
        ...

    async def create_database(self, server: BackupConfig, database: str) -> None: ...

    async def drop_database(self, server: BackupConfig, database: str) -> None:
        """Drop it if it exists, disconnecting anyone connected to it."""
        ...

    async def rename_database(self, server: BackupConfig, old: str, new: str) -> None: ...

    async def restore_program(
        self, server: BackupConfig, database: str, record: Manifest, *, jobs: int, file: Path | None
    ) -> RestoreProgram:
        """What reads the dump `record` describes into `database` (globals: into the
        server, whatever `database` says); `jobs` > 1 only with `file`, a staged copy of a
        custom-format dump."""
        ...

    def restore_needs_file(self, record: Manifest, jobs: int) -> bool:
        """Must the dump be staged in a file first (a parallel restore seeks in it)?"""
        ...

    async def count_contents(
        self, server: BackupConfig, database: str, expected: Contents
    ) -> Contents:
        """What a restored database holds of what `expected` lists: rows of each of its
        tables, each of its sequences' values, large objects. A table or sequence that is
        not there is left out."""
        ...

    def sandbox(self, template: BackupConfig) -> AbstractAsyncContextManager[Sandbox]:
        """A throwaway server of this engine for restore tests, removed on leaving the block
        (also when cancelled); `template` gives the rest of the connection settings."""
        ...
