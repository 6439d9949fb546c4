"""Stand-ins for the middle test tier: a store in memory that fails on cue, and an engine
whose "dump" is a real child process printing a small dump (no database server needed).

They run the real job, orchestrator and commit rule in-process (see runtime.py: a test
gives its Runtime these instead of real stores and engines), as httpx tests with a mock
transport.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db_backup.config.schema import BackupConfig
from db_backup.errors import BackupError, StorageError
from db_backup.manifest import Contents, Manifest
from db_backup.model import JobKind, JobSpec
from db_backup.sources.base import (
    Completion,
    DatabaseState,
    Dump,
    RestoreProgram,
    Sandbox,
    ServerInfo,
)

END_MARKER = b"-- fake dump complete"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, size: int) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk, self._at = self._data[self._at : end], min(end, len(self._data))
        return chunk


@dataclass
class MemoryStore:
    """A flat namespace of files in a dict (storage.Store). Set a switch to fail:
    `fail_write` (the n-th write of an upload, from 1), `fail_commit`, `fail_put`."""

    label: str
    files: dict[str, bytes] = field(default_factory=dict)
    fail_write: int | None = None
    fail_commit: bool = False
    fail_put: bool = False
    aborted: list[str] = field(default_factory=list)

    def location(self, name: str) -> str:
        return f"memory://{self.label}/{name}"

    def check(self) -> None:
        pass

    def names(self, prefix: str) -> list[str]:
        return [name for name in self.files if name.startswith(prefix)]

    def read(self, name: str) -> bytes:
        if name not in self.files:
            raise StorageError(f"{self.location(name)}: no such file")
        return self.files[name]

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[_Reader]:
        yield _Reader(self.read(name))

    def exists(self, name: str) -> bool:
        return name in self.files

    def put(self, name: str, data: bytes) -> None:
        if self.fail_put:
            raise StorageError(f"writing {self.location(name)}: the disk said no")
        self.files[name] = data

    def delete(self, name: str) -> None:
        self.files.pop(name, None)

    def open_upload(self, name: str, labels: Mapping[str, str] | None = None) -> MemoryUpload:
        if name in self.files:
            raise StorageError(f"{self.location(name)} already exists")
        return MemoryUpload(self, name)

    def tidy(self) -> None:
        pass

    def check_repository(self) -> str | None:
        return None

    def clean_incomplete(self, file_prefixes: list[str]) -> list[str]:
        return []


class MemoryUpload:
    """Bytes collect in memory and appear in the store's files only on commit."""

    def __init__(self, store: MemoryStore, name: str) -> None:
        self._store, self._name = store, name
        self._parts: list[bytes] = []
        self._writes = 0
        self._committed = False

    def write(self, data: bytes) -> None:
        self._writes += 1
        if self._store.fail_write == self._writes:
            raise StorageError(f"writing {self._store.location(self._name)}: the disk is full")
        self._parts.append(data)

    def commit(self) -> None:
        if self._store.fail_commit:
            raise StorageError(f"committing {self._store.location(self._name)}: refused")
        self._store.files[self._name] = b"".join(self._parts)
        self._committed = True

    def abort(self) -> None:
        self._store.aborted.append(self._name)
        if self._committed:
            self._store.files.pop(self._name, None)


@dataclass
class ScriptSource:
    """An engine whose dump is `python -c <script>` (by default: a few lines and the end
    marker, exit 0). Everything else is a constant answer."""

    script: str = (
        "import sys; sys.stdout.write('-- fake dump\\n' * 2000 + '-- fake dump complete\\n')"
    )
    name: str = "fake"
    renames_databases: bool = True
    expected_bytes: int | None = None  # what the engine expects the dump to be
    probes: list[str] = field(default_factory=list)

    async def probe(self, backup: BackupConfig, database: str) -> ServerInfo:
        self.probes.append(database)
        return ServerInfo("FakeSQL", "1.0", 10000, database_size=None)

    async def list_databases(self, backup: BackupConfig) -> list[str]:
        return []

    async def dump(self, job: JobSpec, server: ServerInfo) -> Dump:
        return Dump(
            program="fake-dump",
            client="fake-dump 1.0",
            argv=[sys.executable, "-c", self.script],
            env={},
            format="plain",
            completion=self.completion("plain", job.kind),
            compression=None,
            expected_bytes=self.expected_bytes,
        )

    def maintenance_database(self, backup: BackupConfig) -> str:
        return backup.database

    def completion(self, format: str, kind: JobKind) -> Completion:
        return Completion("end marker", "complete", "cut short", end_marker=END_MARKER)

    async def reader_argv(self) -> list[str]:
        raise AssertionError("plain dumps are not read through")

    def is_transient(self, error: BackupError) -> bool:
        return False

    # It backs up only: the restore tests run against real servers (tests/e2e).

    async def database_state(self, server: BackupConfig, database: str) -> DatabaseState:
        raise AssertionError("ScriptSource does not restore")

    async def create_database(self, server: BackupConfig, database: str) -> None:
        raise AssertionError("ScriptSource does not restore")

    async def drop_database(self, server: BackupConfig, database: str) -> None:
        raise AssertionError("ScriptSource does not restore")

    async def rename_database(self, server: BackupConfig, old: str, new: str) -> None:
        raise AssertionError("ScriptSource does not restore")

    async def restore_program(
        self, server: BackupConfig, database: str, record: Manifest, *, jobs: int, file: Path | None
    ) -> RestoreProgram:
        raise AssertionError("ScriptSource does not restore")

    def restore_needs_file(self, record: Manifest, jobs: int) -> bool:
        raise AssertionError("ScriptSource does not restore")

    async def count_contents(
        self, server: BackupConfig, database: str, expected: Contents
    ) -> Contents:
        raise AssertionError("ScriptSource does not restore")

    def sandbox(self, template: BackupConfig) -> AbstractAsyncContextManager[Sandbox]:
        raise AssertionError("ScriptSource does not restore")


def stores_by_label(*stores: MemoryStore) -> Any:
    """A Runtime's `make_store`: the MemoryStore whose label is the target's path."""
    by_label = {store.label: store for store in stores}
    return lambda storage: by_label[storage.path]
