"""A local folder as a backup target: write `<final>.partial`, then fsync + rename.

Nothing appears under a final name unless `commit()` ran; `abort()` removes the partial file.
Files are created 0600 and missing folders 0700, whatever the umask allows beyond that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import BinaryIO

from db_backup.errors import StorageError
from db_backup.model import Target

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700

# Partial files being written right now, so a forced exit can still remove them.
open_partials: set[Path] = set()


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, FILE_MODE)


def describe_os_error(exc: OSError) -> str:
    """The OS's reason ("No space left on device") without Python's decoration."""
    return exc.strerror or str(exc)


def ensure_directory(directory: Path) -> None:
    """Create `directory` and any missing parents with mode 0700."""
    missing = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StorageError(
                f"cannot create storage folder {folder}: {describe_os_error(exc)}"
            ) from None
    if not directory.is_dir():
        raise StorageError(f"storage path {directory} is not a folder")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write a small file so that readers see all of it or none of it."""
    temporary = path.with_name(path.name + ".partial")
    try:
        with open(temporary, "wb", opener=_private) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise StorageError(f"cannot write {path}: {describe_os_error(exc)}") from None


class LocalSink:
    """One backup file being written into a local folder.

    The dump's bytes arrive through `write_blocking`, on the job's pump thread (job.py); the
    rest — open, commit, abort — is awaited on the event loop and runs on worker threads.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self._file: BinaryIO | None = None

    async def open(self) -> None:
        """Create the folder if needed and start `<final>.partial` (0600, must not exist)."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        ensure_directory(self.target.directory)
        final, partial = self.target.final_path, self.target.partial_path
        if final.exists():
            raise StorageError(f"{final} already exists; refusing to overwrite a backup")
        try:
            self._file = open(partial, "xb", opener=_private)  # noqa: SIM115 - closed by commit/abort
        except FileExistsError:
            raise StorageError(
                f"{partial} exists: another run is writing this backup right now"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot create {partial}: {describe_os_error(exc)}") from None
        open_partials.add(partial)

    def write_blocking(self, data: bytes) -> None:
        """Append to the partial file; blocks (for the pump thread)."""
        assert self._file is not None, "sink not open"
        try:
            self._file.write(data)
        except OSError as exc:
            raise StorageError(
                f"writing {self.target.partial_path}: {describe_os_error(exc)}"
            ) from None

    async def write(self, data: bytes) -> None:
        if data:
            await asyncio.to_thread(self.write_blocking, data)

    async def flush(self) -> None:
        """Make everything written so far visible to readers of the partial file."""
        await asyncio.to_thread(self._flush)

    def _flush(self) -> None:
        assert self._file is not None, "sink not open"
        try:
            self._file.flush()
        except OSError as exc:
            raise StorageError(
                f"writing {self.target.partial_path}: {describe_os_error(exc)}"
            ) from None

    async def commit(self) -> Path:
        """Flush to disk and move into place under the final name."""
        return await asyncio.to_thread(self._commit)

    def _commit(self) -> Path:
        assert self._file is not None, "sink not open"
        partial, final = self.target.partial_path, self.target.final_path
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(partial, final)
            _fsync_directory(self.target.directory)
        except OSError as exc:
            raise StorageError(f"committing {final}: {describe_os_error(exc)}") from None
        open_partials.discard(partial)
        return final

    async def abort(self) -> None:
        """Close and remove the partial file; safe to call in any state."""
        await asyncio.to_thread(self._abort)

    def _abort(self) -> None:
        partial = self.target.partial_path
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        open_partials.discard(partial)

    async def write_sidecar(self, path: Path, data: bytes) -> None:
        await asyncio.to_thread(write_atomically, path, data)


def remove_open_partials_now() -> None:
    """Synchronously delete every partial file still being written (forced exit)."""
    for partial in list(open_partials):
        with contextlib.suppress(OSError):
            partial.unlink()
        open_partials.discard(partial)
