"""Is a backup whole? Checks shared by the runner (before commit) and `db-backup verify`.

- plain SQL ends with pg_dump's completion marker;
- gzip streams are complete (every member's CRC and length trailer checks out);
- custom-format dumps are read through by `pg_restore --file=/dev/null`. (`pg_restore --list`
  is not enough: it reads only the table of contents, and accepts a dump cut anywhere after it);
- the stored file matches its manifest's size and sha256.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import shutil
import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from db_backup import manifest
from db_backup.errors import DumpError, ToolNotFoundError
from db_backup.process import Child, spawn
from db_backup.sources.postgres import plain_dump_is_complete
from db_backup.stages import TAIL_BYTES, append_tail

READ_SIZE = 1024 * 1024
BACKUP_SUFFIXES = (".sql.gz", ".sql.zst", ".sql", ".dump")


async def check_custom_dump(pg_restore: Path, path: Path) -> None:
    """Raise DumpError unless pg_restore can read the whole custom-format dump at `path`."""
    argv = [str(pg_restore), "--file=/dev/null", str(path)]
    async with spawn(argv, os.environ, capture_stdout=False) as child:
        code = await child.wait()
        tail = child.stderr_tail()
    if code != 0:
        raise DumpError(
            "the custom-format dump is incomplete or unreadable (pg_restore could not read "
            "it through)",
            exit_code=code,
            stderr_tail=tail,
        )


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

    path: Path
    problems: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _digest_and_size(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(READ_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _read_gzip(path: Path) -> tuple[int, bytes]:
    """Decompress a whole .gz (all members); returns raw size and tail. Raises on damage."""
    size = 0
    tail = b""
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(READ_SIZE):
            size += len(chunk)
            tail = append_tail(tail, chunk)
    return size, tail


def _read_zstd(path: Path) -> tuple[int, bytes]:
    """Decompress a whole .zst (all frames); returns raw size and tail. Raises when damaged
    (frames carry a checksum) or cut short."""
    import zstandard

    size = 0
    tail = b""
    decompressor = zstandard.ZstdDecompressor()
    stream = decompressor.decompressobj()
    try:
        with path.open("rb") as handle:
            pending = b""
            while chunk := pending or handle.read(READ_SIZE):
                pending = b""
                out = stream.decompress(chunk)
                size += len(out)
                tail = append_tail(tail, out)
                if stream.eof and stream.unused_data:  # another frame follows
                    pending = stream.unused_data
                    stream = decompressor.decompressobj()
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from None
    if not stream.eof:
        raise EOFError("the zstd stream ends before its last frame is complete")
    return size, tail


def _read_tail(path: Path) -> tuple[int, bytes]:
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(max(0, size - TAIL_BYTES))
        return size, handle.read()


def _check_stored_file(path: Path, verdict: Verdict) -> tuple[bool, manifest.Manifest | None]:
    """Check the file against its manifest; returns (file exists, manifest if readable)."""
    manifest_path = path.with_name(path.name + ".json")
    if not path.exists():
        verdict.problems.append("the backup file is missing (only its manifest exists)")
        return False, None
    record: manifest.Manifest | None = None
    try:
        record = manifest.decode(manifest_path.read_bytes())
    except FileNotFoundError:
        verdict.problems.append(f"no manifest ({manifest_path.name}): not a finished backup")
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        verdict.problems.append(f"manifest {manifest_path.name} is unreadable: {exc}")
    digest, size = _digest_and_size(path)
    if record is not None:
        if size != record.stored_bytes:
            verdict.problems.append(
                f"size is {size} bytes, the manifest says {record.stored_bytes}"
            )
        elif digest != record.sha256:
            verdict.problems.append(
                f"sha256 is {digest}, the manifest says {record.sha256}: the file changed"
            )
        else:
            verdict.checks.append("size and sha256 match the manifest")
    return True, record


def _check_content(path: Path, record: manifest.Manifest | None, verdict: Verdict) -> bool:
    """Check the stream and the dump inside; True when a pg_restore read-through is needed."""
    name = path.name
    if name.endswith(".dump"):
        return True
    if name.endswith((".sql.gz", ".sql.zst")):
        kind, reader = ("gzip", _read_gzip) if name.endswith(".gz") else ("zstd", _read_zstd)
        try:
            raw_size, tail = reader(path)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            verdict.problems.append(f"the {kind} stream is damaged or cut short: {exc}")
            return False
        verdict.checks.append(
            "gzip stream complete (CRC and length ok)" if kind == "gzip" else "zstd stream complete"
        )
        if record is not None and raw_size != record.raw_bytes:
            verdict.problems.append(
                f"decompresses to {raw_size} bytes, the manifest says {record.raw_bytes}"
            )
    else:
        raw_size, tail = _read_tail(path)
    globals_only = record is not None and record.kind == "globals"
    if plain_dump_is_complete(tail, globals_only=globals_only):
        verdict.checks.append("dump complete (ends with pg_dump's marker)")
    else:
        verdict.problems.append("the SQL dump does not end with pg_dump's completion marker")
    return False


async def verify_backup(path: Path, pg_restore: Path | None) -> Verdict:
    """Every check that applies to the backup at `path` (its data file, not the manifest)."""
    verdict = Verdict(path)
    exists, record = await asyncio.to_thread(_check_stored_file, path, verdict)
    if not exists:
        return verdict
    if await asyncio.to_thread(_check_content, path, record, verdict):
        if pg_restore is None:
            verdict.problems.append("pg_restore not found: cannot read the custom-format dump")
            return verdict
        try:
            await check_custom_dump(pg_restore, path)
        except DumpError as exc:
            verdict.problems.append(str(exc))
        else:
            verdict.checks.append("custom-format dump read through by pg_restore")
    return verdict


def backups_in(paths: Iterable[Path]) -> list[Path]:
    """Backup files named by `paths`: files (data or .json manifest) or folders to scan."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            for child in path.iterdir():
                if child.name.endswith(BACKUP_SUFFIXES):
                    found.add(child)
                elif child.name.endswith(tuple(s + ".json" for s in BACKUP_SUFFIXES)):
                    found.add(child.with_name(child.name.removesuffix(".json")))
        elif path.name.endswith(".json"):
            found.add(path.with_name(path.name.removesuffix(".json")))
        else:
            found.add(path)
    return sorted(found)


async def verify_all(paths: Sequence[Path], concurrency: int = 2) -> list[Verdict]:
    """Verify backups concurrently, in `paths` order."""
    needs_restore = any(p.name.endswith(".dump") for p in paths)
    pg_restore: Path | None = None
    if needs_restore:
        try:
            pg_restore = await asyncio.to_thread(find_pg_restore)
        except ToolNotFoundError:
            pg_restore = None
    slots = asyncio.Semaphore(concurrency)

    async def one(path: Path) -> Verdict:
        async with slots:
            return await verify_backup(path, pg_restore)

    return list(await asyncio.gather(*(one(path) for path in paths)))
