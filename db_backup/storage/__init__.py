"""Where backups live: one `Store` per configured target (a local folder, an S3 bucket, a
restic repository).

A store holds flat files by name — dumps and their `.json` manifests — and every operation
is blocking (call it from a worker thread). A dump is written through an `Upload`: bytes go in
on the job's pump thread, then `commit()` makes the file appear under its final name, or
`abort()` leaves nothing behind. Errors leave a store as StorageError naming the target, so
third-party errors (OSError, botocore's) are translated once, here.

Adding a kind (GCS, Azure, SFTP) means a config struct in config.schema, a module here with
its Store and Upload, and a line in `open_store`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar, assert_never

from db_backup.config.schema import LocalStorage, ResticStorage, S3Storage, StorageConfig
from db_backup.errors import StorageError
from db_backup.threads import in_thread

T = TypeVar("T")


class Readable(Protocol):
    def read(self, size: int) -> bytes: ...


class Upload(Protocol):
    """One backup file being written. Not thread-safe: one writer (the pump thread)."""

    def write(self, data: bytes) -> None:
        """Append; blocks while the target is behind (bounded buffers, back-pressure)."""

    def commit(self) -> None:
        """Make the whole file appear under its final name, or raise StorageError."""

    def abort(self) -> None:
        """Discard what was written; safe in any state and more than once. Never raises."""


class Store(Protocol):
    """A flat namespace of files on one target."""

    label: str  # how messages and `list` name the target, e.g. "local:/var/backups"

    def location(self, name: str) -> str:
        """Where file `name` is, for people: a path or an s3:// URL."""

    def check(self) -> None:
        """Raise StorageError unless the target looks usable (`validate --connect`): a folder
        that is or can be made writable; a bucket these credentials may list."""

    def names(self, prefix: str) -> list[str]:
        """The finished files whose names start with `prefix` (not uploads in progress)."""

    def read(self, name: str) -> bytes:
        """A small file's whole content (a manifest)."""

    def open_read(self, name: str) -> AbstractContextManager[Readable]:
        """A big file, to read as a stream (verify)."""

    def exists(self, name: str) -> bool: ...

    def put(self, name: str, data: bytes) -> None:
        """Store a small file atomically: readers see all of it or nothing."""

    def delete(self, name: str) -> None:
        """Remove a file; a file already gone is not an error."""

    def open_upload(self, name: str, labels: Mapping[str, str] | None = None) -> Upload:
        """Start writing `name`; refuses when a file of that name exists. `labels` (job,
        database, ...) describe it where the kind keeps such things (restic's tags)."""

    def tidy(self) -> None:
        """Carry out deletions a kind defers (restic forgets and prunes in one go); others
        delete at once and have nothing to do."""

    def check_repository(self) -> str | None:
        """A whole-target consistency check where the kind has one (`restic check`), for
        `verify`: what was checked; raises StorageError on damage. None: the kind has none."""

    def clean_incomplete(self, file_prefixes: list[str]) -> list[str]:
        """Remove what interrupted runs of these jobs left: partial files, incomplete
        multipart uploads. Only under the target's lock. Returns what was removed."""


def open_store(storage: StorageConfig) -> Store:
    """A new store for a target (runtime.Runtime keeps one per target)."""
    match storage:
        case LocalStorage():
            from db_backup.storage.local import LocalStore

            return LocalStore(storage)
        case S3Storage():
            from db_backup.storage.s3 import S3Store  # imports botocore: only when S3 is used

            return S3Store(storage)
        case ResticStorage():
            from db_backup.storage.restic import ResticStore

            return ResticStore(storage)
        case _:
            assert_never(storage)


async def ask_targets(
    questions: Mapping[str, Callable[[], T]],
) -> tuple[dict[str, T], dict[str, str]]:
    """Ask every target its question at once, each on a thread of its own (target label →
    a blocking call); returns the answers, and why each target that could not answer did
    not (label → the StorageError's message). One target's trouble never hides the others."""
    labels = list(questions)
    outcomes = await asyncio.gather(
        *(in_thread(questions[label]) for label in labels), return_exceptions=True
    )
    answers: dict[str, T] = {}
    errors: dict[str, str] = {}
    for label, outcome in zip(labels, outcomes, strict=True):
        if isinstance(outcome, StorageError):
            errors[label] = str(outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            answers[label] = outcome
    return answers, errors
