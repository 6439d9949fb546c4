"""One run at a time per storage target: `.db-backup.lock`, held with flock for the whole run.

A local folder holds its own lock file. A remote target (S3) is locked through a folder of
its own under this machine's state directory, which keeps runs on this machine apart (runs on
other machines writing to the same bucket meet at each job's lease there: leasing.py).

flock is released by the kernel when its holder dies, so a lock left by a killed run is free to
take; the file still names that run, which tells us to say so and to clean up what it left
(`.partial` files of our jobs). A live holder is named in the refusal: PID, host, start time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import assert_never

from db_backup.config.schema import LocalStorage, ResticStorage, S3Storage, StorageConfig
from db_backup.errors import LockHeldError, StorageError
from db_backup.naming import safe_component
from db_backup.notice import Tell, waiting_notice
from db_backup.place import place_of
from db_backup.storage.local import FILE_MODE, describe_os_error, ensure_directory
from db_backup.threads import in_thread

LOCK_NAME = ".db-backup.lock"
POLL_SECONDS = 0.5

log = logging.getLogger(__name__)


@dataclass
class StorageLocks:
    """The locks one run holds; `release()` (or the process ending) lets them go."""

    held: dict[Path, int] = field(default_factory=dict)  # folder → open, flocked fd
    unusable: dict[Path, StorageError] = field(default_factory=dict)  # folder → why not

    def release(self) -> None:
        for fd in self.held.values():
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # an empty lock file means "ended cleanly"
            os.close(fd)
        self.held.clear()


def _describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"PID {holder['pid']} on {holder['host']}, started {holder['started_at']}"
    except (ValueError, KeyError, TypeError):
        return "a process that left no details"


def _try_lock(directory: Path) -> tuple[int | None, str]:
    """Open and try to flock the folder's lock file; returns (fd or None, previous content)."""
    ensure_directory(directory)
    path = directory / LOCK_NAME
    try:
        # Never through a symlink someone planted: a root run would truncate its target.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise StorageError(f"cannot use {path}: {describe_os_error(exc)}") from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:
        os.close(fd)
        raise StorageError(
            f"{path} is not a plain file of its own (a hard link, FIFO or device someone "
            "put there?); remove it"
        )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        os.close(fd)
        return None, text
    return fd, os.pread(fd, 4096, 0).decode("utf-8", "replace")


def _claim(fd: int, directory: Path) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    data = json.dumps(record).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as exc:
        os.close(fd)
        raise StorageError(
            f"storage folder {directory} is not writable: {describe_os_error(exc)}"
        ) from None


async def lock_storage(
    folders: Iterable[Path], wait: float | None, tell: Tell | None = None
) -> StorageLocks:
    """Lock every folder (sorted, so two runs never deadlock).

    A folder held by a live run raises LockHeldError at once, or after `wait` seconds of
    retrying (`float("inf")`: wait as long as it takes; `tell` hears how long, see
    notice.py). A folder that cannot be created or written is recorded in `unusable`, so
    only its jobs fail and the others still run.
    """
    locks = StorageLocks()
    deadline = None if wait is None else time.monotonic() + wait
    try:
        for directory in sorted(set(folders)):
            try:
                fd, previous = await in_thread(_try_lock, directory)
                if fd is None:
                    what = f"the lock on {directory}, held by {_describe_holder(previous)}"
                    async with waiting_notice(tell, what):
                        fd, previous = await _wait_for_lock(directory, previous, deadline)
            except StorageError as exc:
                locks.unusable[directory] = exc
                continue
            await in_thread(_claim, fd, directory)
            locks.held[directory] = fd
            if previous.strip():
                log.warning(
                    "took over the lock on %s left by %s, which is no longer running",
                    directory,
                    _describe_holder(previous),
                )
    except BaseException:
        locks.release()
        raise
    return locks


async def _wait_for_lock(directory: Path, previous: str, deadline: float | None) -> tuple[int, str]:
    """Poll a held lock until it is ours, or raise LockHeldError once `deadline` passed."""
    while True:
        if deadline is None or time.monotonic() >= deadline:
            raise LockHeldError(
                f"another db-backup run holds {directory / LOCK_NAME} "
                f"({_describe_holder(previous)}); not starting. "
                "Use --wait[=DURATION] to wait for it."
            )
        await asyncio.sleep(POLL_SECONDS)
        fd, previous = await in_thread(_try_lock, directory)
        if fd is not None:
            return fd, previous


def state_directory() -> Path:
    """Where db-backup keeps per-machine state: $DB_BACKUP_STATE_DIR, else
    $XDG_STATE_HOME/db-backup, else ~/.local/state/db-backup."""
    explicit = os.environ.get("DB_BACKUP_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "db-backup"


def lock_folder(storage: StorageConfig) -> Path:
    """The folder whose lock file guards a target: the same for every spelling of one place
    (see storage.place_of), so a run never waits on itself."""
    place = place_of(storage)
    match storage:
        case LocalStorage():  # a folder holds its own lock
            return Path(place.removeprefix("local:"))
        case S3Storage():  # a bucket is locked through this machine's state directory
            digest = hashlib.sha256(place.encode()).hexdigest()[:16]
            return state_directory() / "locks" / f"s3-{safe_component(storage.bucket)}-{digest}"
        case ResticStorage():  # restic's own locks guard the repository's data; this, our files
            digest = hashlib.sha256(place.encode()).hexdigest()[:16]
            return state_directory() / "locks" / f"restic-{digest}"
        case _:
            assert_never(storage)
