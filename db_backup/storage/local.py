"""A local folder as a backup target: write `<final>.partial`, then fsync + rename.

Nothing appears under a final name unless `commit()` ran; `abort()` removes the partial file.
Files are created 0600 and missing folders 0700, whatever the umask allows beyond that.
A run that was killed leaves its `.partial`; the next run of that job removes it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from db_backup.config.schema import LocalStorage
from db_backup.errors import StorageError
from db_backup.plan import is_own_file

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


class LocalUpload:
    """One backup file being written into a local folder: `<name>.partial`, then renamed."""

    def __init__(self, directory: Path, name: str) -> None:
        self.final = directory / name
        self.partial = directory / f"{name}.partial"
        self._committed = False
        ensure_directory(directory)
        if self.final.exists():
            raise StorageError(f"{self.final} already exists; refusing to overwrite a backup")
        try:
            self._file: BinaryIO | None = open(self.partial, "xb", opener=_private)  # noqa: SIM115
        except FileExistsError:
            raise StorageError(
                f"{self.partial} exists: another run is writing this backup right now"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot create {self.partial}: {describe_os_error(exc)}") from None
        open_partials.add(self.partial)

    def write(self, data: bytes) -> None:
        assert self._file is not None, "upload already finished"
        try:
            self._file.write(data)
        except OSError as exc:
            raise StorageError(f"writing {self.partial}: {describe_os_error(exc)}") from None

    def commit(self) -> None:
        """fsync, then move into place under the final name."""
        assert self._file is not None, "upload already finished"
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self.partial, self.final)
            self._committed = True
            _fsync_directory(self.final.parent)
        except OSError as exc:
            raise StorageError(f"committing {self.final}: {describe_os_error(exc)}") from None
        open_partials.discard(self.partial)

    def abort(self) -> None:
        """Remove the partial file — or, once committed, the file itself: without its
        manifest it is not a backup, and a cancelled job keeps nothing."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(OSError):
            (self.final if self._committed else self.partial).unlink()
        open_partials.discard(self.partial)


class _Translated:
    """A file being read whose OSErrors arrive as StorageError."""

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self._handle, self._path = handle, path

    def read(self, size: int) -> bytes:
        try:
            return self._handle.read(size)
        except OSError as exc:
            raise StorageError(f"reading {self._path}: {describe_os_error(exc)}") from None


class LocalStore:
    """A local folder as a backup target (see storage.Store)."""

    def __init__(self, config: LocalStorage) -> None:
        self.directory = Path(config.path)
        self.label = config.label

    def location(self, name: str) -> str:
        return str(self.directory / name)

    def check(self) -> None:
        existing = self.directory
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            raise StorageError(f"{existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            what = "storage folder" if existing == self.directory else "parent folder"
            raise StorageError(f"{what} {existing} is not writable by this user")

    def names(self, prefix: str) -> list[str]:
        if not self.directory.is_dir():
            return []
        try:
            return [
                path.name
                for path in self.directory.glob(f"{glob_escape(prefix)}*")
                if not path.name.endswith(".partial") and path.is_file()
            ]
        except OSError as exc:
            raise StorageError(f"cannot list {self.directory}: {describe_os_error(exc)}") from None

    def read(self, name: str) -> bytes:
        with self.open_read(name) as handle:
            return handle.read(-1)

    def exists(self, name: str) -> bool:
        return (self.directory / name).exists()

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[_Translated]:
        path = self.directory / name
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {describe_os_error(exc)}") from None
        with handle:
            yield _Translated(handle, path)

    def put(self, name: str, data: bytes) -> None:
        write_atomically(self.directory / name, data)

    def delete(self, name: str) -> None:
        path = self.directory / name
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {describe_os_error(exc)}") from None

    def open_upload(self, name: str) -> LocalUpload:
        return LocalUpload(self.directory, name)

    def clean_incomplete(self, file_prefixes: list[str]) -> list[str]:
        removed = []
        for path in self.directory.glob("*.partial"):
            if any(is_own_file(path.name, prefix) for prefix in file_prefixes):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(str(path))
        return removed


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def remove_open_partials_now() -> None:
    """Synchronously delete every partial file still being written (forced exit)."""
    for partial in list(open_partials):
        with contextlib.suppress(OSError):
            partial.unlink()
        open_partials.discard(partial)
