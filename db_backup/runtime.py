"""What one run, one command or a resident process owns: the clock, one store per target,
and the engines — one object, so a scheduler can drive many runs in one process (each with
its own) and a test can inject a clock, in-memory stores or a fake engine.

The code below the CLI asks `current()`; whoever drives the work sets it for a block with
`using(runtime)`. It travels with asyncio tasks and with the worker threads of threads.py
(they copy the context), so every step of a run sees the same one. Outside any block, a
process-wide one answers (commands that do one thing and exit).

Two registries stay process-wide on purpose: the children (process.py) and the partial
files being written (storage.local): a forced exit must reach every one of them, whichever
run started it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime

from db_backup.config.schema import BackupConfig, StorageConfig
from db_backup.sources import source_for
from db_backup.sources.base import Source
from db_backup.storage import Store, open_store


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """See the module's docstring."""

    clock: Callable[[], datetime] = utc_now
    make_store: Callable[[StorageConfig], Store] = open_store
    find_source: Callable[[BackupConfig], Source] = source_for
    _stores: dict[StorageConfig, Store] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> datetime:
        """The time now, timezone-aware (UTC)."""
        return self.clock()

    def store(self, storage: StorageConfig) -> Store:
        """The store for a target: one per target here (an S3 client is costly to make)."""
        with self._lock:
            if storage not in self._stores:
                self._stores[storage] = self.make_store(storage)
            return self._stores[storage]

    def source(self, backup: BackupConfig) -> Source:
        """The engine that dumps this backup."""
        return self.find_source(backup)


_PROCESS = Runtime()
_current: ContextVar[Runtime] = ContextVar("db_backup_runtime", default=_PROCESS)


def current() -> Runtime:
    """The runtime of the work in progress (see the module's docstring)."""
    return _current.get()


@contextmanager
def using(runtime: Runtime) -> Iterator[Runtime]:
    """Make `runtime` the current one for the block (and the tasks and threads it starts)."""
    token = _current.set(runtime)
    try:
        yield runtime
    finally:
        _current.reset(token)
