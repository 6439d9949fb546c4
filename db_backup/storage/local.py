"""A local folder as a backup target: write `<final>.partial`, then fsync + rename.

Nothing appears under a final name unless `commit()` ran; `abort()` removes the partial file.
Files are created 0600 and missing folders 0700, whatever the umask allows beyond that.
A run that was killed leaves its `.partial`; the next run of that job removes it.

The folder may be one other users can write to, so nothing here trusts a name in it: every
file db-backup creates is created new (O_EXCL) and never through a symbolic link
(O_NOFOLLOW); files are read only if they are regular files (a FIFO with a backup's name
would block a reader forever). A folder every user may write to without the sticky bit is
refused unless the config allows it: anyone could delete or replace the backups in it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from db_backup.config.schema import TEMPORARY_TOKEN_BYTES, LocalStorage
from db_backup.errors import StorageError
from db_backup.naming import leftovers
from db_backup.place import shared_folder_risk

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700

# Partial files being written right now, so a forced exit can still remove them.
open_partials: set[Path] = set()


def _private(path: str, flags: int) -> int:
    """open()'s opener for the files we create: 0600, and never through a symlink."""
    return os.open(path, flags | os.O_NOFOLLOW, FILE_MODE)


def open_regular(path: Path) -> BinaryIO:
    """Open `path` for reading if it is a regular file — not a FIFO or device (opened without
    blocking, then refused) and not a symbolic link someone planted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {describe_os_error(exc)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StorageError(f"{path} is not a regular file; not reading it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def describe_os_error(exc: OSError) -> str:
    """The OS's reason ("No space left on device") without Python's decoration."""
    if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
        return "it is a symbolic link (not followed: db-backup never writes through one)"
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
    """Write a small file so that readers see all of it or none of it: a new file under a
    name nobody can guess, then renamed over `path` (a rename replaces a symlink there, it
    does not follow it)."""
    temporary = path.with_name(f"{path.name}.{secrets.token_hex(TEMPORARY_TOKEN_BYTES)}.partial")
    created = False
    try:
        with open(temporary, "xb", opener=_private) as handle:
            created = True
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        if created:
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
        if os.path.lexists(self.final):
            raise StorageError(f"{self.final} already exists; refusing to overwrite a backup")
        try:
            self._file: BinaryIO | None = open(self.partial, "xb", opener=_private)  # noqa: SIM115
        except FileExistsError:
            what = "a symbolic link" if self.partial.is_symlink() else "a file"
            raise StorageError(
                f"{self.partial} exists ({what} we did not create): another run writing this "
                "backup, or something put there; not writing through it"
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
        self._allow_world_writable = config.allow_world_writable

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
        self._refuse_if_shared()

    def _refuse_if_shared(self) -> None:
        risk = shared_folder_risk(self.directory)
        if risk is not None and risk[0] and not self._allow_world_writable:
            raise StorageError(
                f"{risk[1]}; chmod o-w (or +t) it, or set allow_world_writable: true on this target"
            )

    def names(self, prefix: str) -> list[str]:
        if not self.directory.is_dir():
            return []
        try:
            return [
                path.name
                for path in self.directory.glob(f"{glob_escape(prefix)}*")
                if not path.name.endswith(".partial") and stat.S_ISREG(path.lstat().st_mode)
            ]
        except OSError as exc:
            raise StorageError(f"cannot list {self.directory}: {describe_os_error(exc)}") from None

    def read(self, name: str) -> bytes:
        with self.open_read(name) as handle:
            return handle.read(-1)

    def exists(self, name: str) -> bool:
        return os.path.lexists(self.directory / name)

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[_Translated]:
        path = self.directory / name
        with open_regular(path) as handle:
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

    def open_upload(self, name: str, labels: Mapping[str, str] | None = None) -> LocalUpload:
        self._refuse_if_shared()
        return LocalUpload(self.directory, name)

    def tidy(self) -> None:
        pass  # deletes at once

    def check_repository(self) -> str | None:
        return None

    def clean_incomplete(self, file_prefixes: list[str]) -> list[str]:
        if not self.directory.is_dir():
            return []
        try:
            present = {path.name for path in self.directory.iterdir()}
        except OSError as exc:
            raise StorageError(f"cannot list {self.directory}: {describe_os_error(exc)}") from None
        removed = []
        for name in sorted(leftovers(present, file_prefixes)):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
                removed.append(str(self.directory / name))
        return removed


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def remove_open_partials_now() -> None:
    """Synchronously delete every partial file still being written (forced exit)."""
    for partial in list(open_partials):
        with contextlib.suppress(OSError):
            partial.unlink()
        open_partials.discard(partial)
