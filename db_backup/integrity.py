"""Is a backup whole? Checks shared by the runner (before commit) and `db-backup verify`.

- plain SQL ends with pg_dump's completion marker;
- gzip streams are complete (every member's CRC and length trailer checks out), zstd streams
  too (every frame's checksum);
- custom-format dumps are read through by `pg_restore --file=/dev/null`. (`pg_restore --list`
  is not enough: it reads only the table of contents, and accepts a dump cut anywhere after it);
- the stored file matches its manifest's size and sha256.

`verify` reads each backup once, as a stream, from any target (a folder or a bucket: no
download to disk first), and runs every check on that one pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import shutil
import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from db_backup import manifest
from db_backup.config.schema import LocalStorage, StorageConfig
from db_backup.errors import DumpError, StorageError, ToolNotFoundError
from db_backup.naming import BACKUP_SUFFIXES
from db_backup.process import Child, spawn
from db_backup.sources.postgres import plain_dump_is_complete
from db_backup.stages import append_tail
from db_backup.storage import Store, ask_targets, open_store
from db_backup.threads import in_thread

READ_SIZE = 1024 * 1024


class RestoreCheck:
    """`pg_restore --file=/dev/null` reading a custom-format dump as it is being stored,
    fed on the job's pump thread: the check needs no local copy (the only target may be S3)
    and costs no second pass."""

    def __init__(self, child: Child) -> None:
        self._child = child
        self._stopped_reading = False

    def write(self, data: bytes) -> None:
        """Feed the next stored bytes; blocks while pg_restore is behind."""
        fd = self._child.stdin_fd
        if self._stopped_reading or fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except BrokenPipeError:
            self._stopped_reading = True  # it exited early: its exit code says why

    async def finish(self) -> None:
        """Send EOF; raise DumpError unless pg_restore read the whole dump."""
        self._child.close_stdin()
        code = await self._child.wait()
        if code != 0:
            raise DumpError(
                "the custom-format dump is incomplete or unreadable (pg_restore could not "
                "read it through)",
                exit_code=code,
                stderr_tail=self._child.stderr_tail(),
            )


@contextlib.asynccontextmanager
async def restore_check(pg_restore: Path) -> AsyncIterator[RestoreCheck]:
    """A running RestoreCheck; on leaving the block pg_restore is gone."""
    argv = [str(pg_restore), "--file=/dev/null"]
    async with spawn(argv, os.environ, capture_stdout=False, feed_stdin=True) as child:
        yield RestoreCheck(child)


def find_pg_restore() -> Path:
    """The newest installed pg_restore (it reads dumps of every older version)."""
    from db_backup.sources.pg_server import installed_clients

    clients = sorted(installed_clients(), key=lambda client: client.major, reverse=True)
    for client in clients:
        candidate = client.sibling("pg_restore")
        if candidate.exists():
            return candidate
    on_path = shutil.which("pg_restore")
    if on_path:
        return Path(on_path)
    raise ToolNotFoundError("pg_restore not found; it is needed to check custom-format dumps")


@dataclass
class Verdict:
    """The outcome of verifying one backup."""

    location: str  # a path or an s3:// URL
    problems: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Decompressed:
    """Decompresses a stored .sql.gz / .sql.zst as it streams past, counting the raw bytes
    and keeping their tail; `close()` raises when the stream was damaged or cut short."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.raw_bytes = 0
        self.tail = b""
        self.error: str | None = None
        self._zstd: Any = None
        self._stream: Any = self._new_stream()

    def _new_stream(self) -> Any:
        if self.kind == "gzip":
            return zlib.decompressobj(wbits=31)  # one gzip member; CRC and length checked
        import zstandard

        self._zstd = self._zstd or zstandard.ZstdDecompressor()
        return self._zstd.decompressobj()

    def feed(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            while data:
                out = self._stream.decompress(data)
                self.raw_bytes += len(out)
                self.tail = append_tail(self.tail, out)
                data = self._stream.unused_data if self._stream.eof else b""
                if data:  # another gzip member or zstd frame follows
                    self._stream = self._new_stream()
        except Exception as exc:  # zlib.error, or zstandard.ZstdError (imported lazily)
            self.error = str(exc)

    def close(self) -> None:
        if self.error is None and not self._stream.eof:
            self.error = f"the {self.kind} stream ends before its last " + (
                "member is complete" if self.kind == "gzip" else "frame is complete"
            )


class _StreamCheck:
    """Everything verify learns from one pass over the stored bytes."""

    def __init__(self, name: str, restore: RestoreCheck | None) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.tail = b""
        kind = {".sql.gz": "gzip", ".sql.zst": "zstd"}.get(_suffix(name))
        self.decompressed = _Decompressed(kind) if kind else None
        self.restore = restore

    def feed(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)
        self.tail = append_tail(self.tail, chunk)
        if self.decompressed is not None:
            self.decompressed.feed(chunk)
        if self.restore is not None:
            self.restore.write(chunk)


def _suffix(name: str) -> str:
    return next((suffix for suffix in BACKUP_SUFFIXES if name.endswith(suffix)), "")


def _read_manifest(store: Store, name: str, verdict: Verdict) -> manifest.Manifest | None:
    manifest_name = f"{name}.json"
    if not store.exists(manifest_name):
        verdict.problems.append(f"no manifest ({manifest_name}): not a finished backup")
        return None
    try:
        return manifest.decode(store.read(manifest_name))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        verdict.problems.append(f"manifest {manifest_name} is unreadable: {exc}")
    return None


def _pass_over(store: Store, name: str, check: _StreamCheck) -> None:
    with store.open_read(name) as stream:
        while chunk := stream.read(READ_SIZE):
            check.feed(chunk)
    if check.decompressed is not None:
        check.decompressed.close()


def _judge(check: _StreamCheck, record: manifest.Manifest | None, verdict: Verdict) -> None:
    """The manifest comparison, then the stream and the dump inside it, into `verdict`."""
    if record is not None:
        digest = check.sha256.hexdigest()
        if check.size != record.stored_bytes:
            verdict.problems.append(
                f"size is {check.size} bytes, the manifest says {record.stored_bytes}"
            )
        elif digest != record.sha256:
            verdict.problems.append(
                f"sha256 is {digest}, the manifest says {record.sha256}: the file changed"
            )
        else:
            verdict.checks.append("size and sha256 match the manifest")
    if check.restore is not None:
        return  # a custom-format dump: pg_restore's verdict follows
    tail, unpacked = check.tail, check.decompressed
    if unpacked is not None:
        if unpacked.error is not None:
            verdict.problems.append(
                f"the {unpacked.kind} stream is damaged or cut short: {unpacked.error}"
            )
            return
        verdict.checks.append(
            "gzip stream complete (CRC and length ok)"
            if unpacked.kind == "gzip"
            else "zstd stream complete"
        )
        if record is not None and unpacked.raw_bytes != record.raw_bytes:
            verdict.problems.append(
                f"decompresses to {unpacked.raw_bytes} bytes, the manifest says {record.raw_bytes}"
            )
        tail = unpacked.tail
    globals_only = record is not None and record.kind == "globals"
    if plain_dump_is_complete(tail, globals_only=globals_only):
        verdict.checks.append("dump complete (ends with pg_dump's marker)")
    else:
        verdict.problems.append("the SQL dump does not end with pg_dump's completion marker")


async def verify_backup(store: Store, name: str, pg_restore: Path | None) -> Verdict:
    """Every check that applies to backup `name` on `store`, in one pass over its bytes:
    size and sha256 against the manifest, the compressed stream, the dump inside (its end
    marker, or a pg_restore read-through for custom format)."""
    verdict = Verdict(store.location(name))
    try:
        record = await in_thread(_read_manifest, store, name, verdict)
        if not await in_thread(store.exists, name):
            verdict.problems.append("the backup file is missing (only its manifest exists)")
            return verdict
        custom = name.endswith(".dump")
        if custom and pg_restore is None:
            verdict.problems.append("pg_restore not found: cannot read the custom-format dump")
            return verdict
        async with contextlib.AsyncExitStack() as stack:
            restore = None
            if custom:
                assert pg_restore is not None
                restore = await stack.enter_async_context(restore_check(pg_restore))
            check = _StreamCheck(name, restore)
            await in_thread(_pass_over, store, name, check)
            _judge(check, record, verdict)
            if restore is not None:
                try:
                    await restore.finish()
                except DumpError as exc:
                    verdict.problems.append(str(exc))
                else:
                    verdict.checks.append("custom-format dump read through by pg_restore")
    except StorageError as exc:
        verdict.problems.append(str(exc))
    return verdict


def backup_names(names: Iterable[str]) -> list[str]:
    """The backups among a folder's file names: data files, and manifests' data files."""
    found = set()
    for name in names:
        if name.endswith(BACKUP_SUFFIXES):
            found.add(name)
        elif name.endswith(tuple(f"{suffix}.json" for suffix in BACKUP_SUFFIXES)):
            found.add(name.removesuffix(".json"))
    return sorted(found)


def backups_in(paths: Iterable[Path]) -> list[tuple[Store, str]]:
    """Backups named by local `paths`: files (data or .json manifest) or folders to scan."""
    found: set[tuple[Path, str]] = set()
    for path in paths:
        if path.is_dir():
            found |= {(path, name) for name in backup_names(p.name for p in path.iterdir())}
        else:
            found.add((path.parent, path.name.removesuffix(".json")))
    return [
        (open_store(LocalStorage(path=str(folder.absolute()))), name)
        for folder, name in sorted(found)
    ]


async def backups_on(
    storages: Iterable[StorageConfig],
) -> tuple[list[tuple[Store, str]], dict[str, str]]:
    """Every backup (or manifest) on these targets, listed at once, and the targets that
    could not be listed (label → why)."""
    stores = {store.label: store for store in map(open_store, storages)}
    listings, errors = await ask_targets(
        {label: functools.partial(store.names, "") for label, store in stores.items()}
    )
    found = [
        (stores[label], name) for label, names in listings.items() for name in backup_names(names)
    ]
    return found, errors


async def verify_all(backups: Sequence[tuple[Store, str]], concurrency: int = 2) -> list[Verdict]:
    """Verify backups concurrently, in the order given."""
    pg_restore: Path | None = None
    if any(name.endswith(".dump") for _, name in backups):
        with contextlib.suppress(ToolNotFoundError):
            pg_restore = await in_thread(find_pg_restore)
    slots = asyncio.Semaphore(concurrency)

    async def one(store: Store, name: str) -> Verdict:
        async with slots:
            return await verify_backup(store, name, pg_restore)

    return list(await asyncio.gather(*(one(store, name) for store, name in backups)))
