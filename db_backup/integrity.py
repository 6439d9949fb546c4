"""Is a backup whole? Checks shared by the runner (before commit) and `db-backup verify`.

- the dump is complete, as its engine tells it (sources/): its output ends with the engine's
  completion marker (PostgreSQL's plain SQL), or a reader program takes it through
  (`pg_restore --file=/dev/null` for custom format; `pg_restore --list` is not enough: it
  reads only the table of contents, and accepts a dump cut anywhere after it);
- gzip streams are complete (every member's CRC and length trailer checks out), zstd streams
  too (every frame's checksum);
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
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec

from db_backup import manifest, runtime
from db_backup.config.schema import LocalStorage, StorageConfig
from db_backup.errors import BackupError, DumpError, ToolNotFoundError
from db_backup.model import JobKind
from db_backup.naming import BACKUP_SUFFIXES, format_of
from db_backup.process import Child, spawn
from db_backup.sources import source_named
from db_backup.sources.base import Completion, ContentCounter, Source
from db_backup.stages.unpack import (
    NO_KEYS,
    ReadingKeys,
    Unstaging,
    is_encrypted,
    records_from_name,
    unstaging,
)
from db_backup.storage import Store, ask_targets
from db_backup.threads import in_thread, start_in_thread

READ_SIZE = 1024 * 1024


class Writer(Protocol):
    """Where the dump's bytes go as they read back: a reader program, a staging file."""

    def write(self, data: bytes, /) -> object: ...


class ReadThrough:
    """A program fed the dump's bytes on its stdin: a reader that checks them
    (pg_restore --file=/dev/null for custom format: the engine says, see Dump.reader_argv)
    as they go by on the job's pump thread, or as they read back in verify — no local copy
    (the only target may be S3) and no second pass; or a restore program."""

    def __init__(
        self,
        child: Child,
        failure: Callable[[int, str], BackupError],
        output: asyncio.Future[None] | None = None,
    ) -> None:
        self._child = child
        self._failure = failure  # (exit code, stderr tail) → the error to raise
        self._output = output  # the thread reading what it writes, if anyone listens
        self.stopped = False  # it closed its stdin: it exited, its exit code says why

    def write(self, data: bytes) -> None:
        """Feed the dump's next bytes; blocks while the reader is behind."""
        if not self.stopped and not self._child.write_stdin(data):
            self.stopped = True

    async def finish(self) -> None:
        """Send EOF; raise the failure unless the program exited 0."""
        self._child.close_stdin()
        code = await self._child.wait()
        if self._output is not None:
            await self._output
        if code != 0:
            raise self._failure(code, self._child.stderr_tail())


@contextlib.asynccontextmanager
async def read_through(
    argv: Sequence[str], completion: Completion, counter: ContentCounter | None = None
) -> AsyncIterator[ReadThrough]:
    """A running reader that checks a dump's completeness; on leaving the block it is gone.
    With a `counter`, the reader writes the dump as plain SQL and the counter reads it (for
    custom format: pg_restore writes that SQL anyway, to /dev/null when nobody counts)."""

    def failure(code: int, stderr_tail: str) -> BackupError:
        return DumpError(completion.failed, exit_code=code, stderr_tail=stderr_tail)

    async with spawn(
        argv, os.environ, capture_stdout=counter is not None, feed_stdin=True
    ) as child:
        output = None
        if counter is not None:
            assert child.stdout_fd is not None
            # Its own copy of the fd: spawn closes the original when the block ends, and the
            # number may be reused while this thread still reads.
            copy = os.dup(child.stdout_fd)
            output = start_in_thread(_count_from, copy, counter, name="counting")
        try:
            yield ReadThrough(child, failure, output)
        finally:
            if output is not None and not output.done():
                output.cancel()


def _count_from(fd: int, counter: ContentCounter) -> None:
    """Feed the counter what the reader writes, to its end (on a thread of its own); closes
    `fd`, which is this thread's own."""
    try:
        while chunk := os.read(fd, READ_SIZE):
            counter.feed(chunk)
    finally:
        os.close(fd)


@dataclass
class Verdict:
    """The outcome of verifying one backup."""

    location: str  # a path or an s3:// URL
    problems: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why

    @property
    def ok(self) -> bool:
        return not self.problems


class StreamCheck:
    """Everything one pass over the stored bytes tells: their size and sha256, and —
    through the inverse of every stage they went through — the dump's own bytes, which go on
    to `writer` (a reader program, a restore program, a staging file) if there is one."""

    def __init__(self, unstaging: Unstaging, writer: Writer | None = None) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.unstaging = unstaging
        self.writer = writer

    def feed(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)
        self._dump_bytes(self.unstaging.feed(chunk))

    def finish(self) -> None:
        self._dump_bytes(self.unstaging.finish())

    def _dump_bytes(self, raw: bytes) -> None:
        if raw and self.writer is not None:
            self.writer.write(raw)

    def against(self, record: manifest.Manifest) -> str | None:
        """How the bytes read differ from what the manifest recorded, or None."""
        if self.size != record.stored_bytes:
            return f"size is {self.size} bytes, the manifest says {record.stored_bytes}"
        digest = self.sha256.hexdigest()
        if digest != record.sha256:
            return f"sha256 is {digest}, the manifest says {record.sha256}: the file changed"
        return None


UNCHECKED_SEALED = (
    "content not checked: the backup is encrypted (give an identity with --identity FILE "
    "to decrypt and check it)"
)


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


def pass_over(
    store: Store,
    name: str,
    check: StreamCheck,
    on_bytes: Callable[[int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Read a stored file once, through `check` (blocking: on a worker thread); `on_bytes`
    hears how many stored bytes went by; `stop` ends the reading early."""
    with store.open_read(name) as stream:
        while not stop() and (chunk := stream.read(READ_SIZE)):
            check.feed(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    check.finish()


def _judge_stored(check: StreamCheck, record: manifest.Manifest | None, verdict: Verdict) -> None:
    """The stored bytes' size and sha256 against the manifest, into `verdict`."""
    if record is None:
        return  # said already (_read_manifest)
    if (mismatch := check.against(record)) is None:
        verdict.checks.append("size and sha256 match the manifest")
    else:
        verdict.problems.append(mismatch)


def _judge(
    check: StreamCheck,
    record: manifest.Manifest | None,
    completion: Completion,
    verdict: Verdict,
) -> None:
    """The manifest comparison, then the stream and the dump inside it, into `verdict`."""
    _judge_stored(check, record, verdict)
    unstaging = check.unstaging
    if unstaging.error is not None:
        verdict.problems.append(unstaging.error)
        return
    if unstaging.undoes_anything:
        verdict.checks += unstaging.checks
        if record is not None and unstaging.raw_bytes != record.raw_bytes:
            verdict.problems.append(
                f"decompresses to {unstaging.raw_bytes} bytes, the manifest says {record.raw_bytes}"
            )
    if check.writer is not None:
        return  # read through: the reader's verdict follows
    if completion.ends_whole(unstaging.tail):
        verdict.checks.append(completion.passed)
    else:
        verdict.problems.append(completion.failed)


async def _verify_sealed(
    store: Store, name: str, record: manifest.Manifest | None, verdict: Verdict
) -> None:
    """An encrypted backup without an identity: only its size and sha256 can be checked."""
    check = StreamCheck(Unstaging([]))
    await in_thread(pass_over, store, name, check)
    _judge_stored(check, record, verdict)
    verdict.notes.append(UNCHECKED_SEALED)


def _completion_of(name: str, record: manifest.Manifest | None) -> tuple[Source, Completion]:
    """The engine that made a stored dump and how its completeness is told: from its
    manifest, or (without one) from its file name and the manifests' default engine."""
    source = source_named(record.engine if record else manifest.DEFAULT_ENGINE)
    kind = JobKind(record.kind) if record else JobKind.DATABASE
    return source, source.completion(record.format if record else format_of(name), kind)


async def verify_backup(store: Store, name: str, readers: Readers) -> Verdict:
    """Every check that applies to backup `name` on `store`, in one pass over its bytes:
    size and sha256 against the manifest, the compressed stream, the dump inside (its end
    marker, or a read-through by the engine's reader)."""
    verdict = Verdict(store.location(name))
    try:
        record = await in_thread(_read_manifest, store, name, verdict)
        if not await in_thread(store.exists, name):
            verdict.problems.append("the backup file is missing (only its manifest exists)")
            return verdict
        source, completion = _completion_of(name, record)
        stages = manifest.stages_of(record) if record else records_from_name(name)
        if is_encrypted(stages) and readers.keys.identity_file is None:
            await _verify_sealed(store, name, record, verdict)
            return verdict
        reader = None
        if completion.read_through:
            reader = await readers.argv(source)
            if reader is None:
                verdict.problems.append(f"{readers.missing[source.name]}: cannot read it through")
                return verdict
        async with contextlib.AsyncExitStack() as stack:
            reading = None
            if reader is not None:
                reading = await stack.enter_async_context(read_through(reader, completion))
            undoing = await stack.enter_async_context(unstaging(stages, readers.keys))
            check = StreamCheck(undoing, reading)
            await in_thread(pass_over, store, name, check)
            _judge(check, record, completion, verdict)
            if reading is not None:
                try:
                    await reading.finish()
                except DumpError as exc:
                    verdict.problems.append(str(exc))
                else:
                    verdict.checks.append(completion.passed)
    except BackupError as exc:  # a store, age, a reader: this backup's verdict
        verdict.problems.append(str(exc))
    return verdict


@dataclass
class Readers:
    """Each engine's reader program, found once per verify run."""

    keys: ReadingKeys = NO_KEYS  # decrypt encrypted backups (none: check sha256 only)
    found: dict[str, list[str] | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # engine → why there is none
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def argv(self, source: Source) -> list[str] | None:
        async with self._lock:
            if source.name not in self.found:
                try:
                    self.found[source.name] = await source.reader_argv()
                except ToolNotFoundError as exc:
                    self.found[source.name] = None
                    self.missing[source.name] = str(exc)
            return self.found[source.name]


def archive_names(names: Iterable[str]) -> list[str]:
    """The backups among a folder's file names: data files, and manifests' data files."""
    found = set()
    for name in names:
        if name.endswith(BACKUP_SUFFIXES):
            found.add(name)
        elif name.endswith(tuple(f"{suffix}.json" for suffix in BACKUP_SUFFIXES)):
            found.add(name.removesuffix(".json"))
    return sorted(found)


def archives_in(paths: Iterable[Path]) -> list[tuple[Store, str]]:
    """Backups named by local `paths`: files (data or .json manifest) or folders to scan."""
    found: set[tuple[Path, str]] = set()
    for path in paths:
        if path.is_dir():
            found |= {(path, name) for name in archive_names(p.name for p in path.iterdir())}
        else:
            found.add((path.parent, path.name.removesuffix(".json")))
    return [
        (runtime.current().store(LocalStorage(path=str(folder.absolute()))), name)
        for folder, name in sorted(found)
    ]


async def archives_on(
    storages: Iterable[StorageConfig],
) -> tuple[list[tuple[Store, str]], dict[str, str]]:
    """Every backup (or manifest) on these targets, listed at once, and the targets that
    could not be listed (label → why)."""
    stores = {store.label: store for store in map(runtime.current().store, storages)}
    listings, errors = await ask_targets(
        {label: functools.partial(store.names, "") for label, store in stores.items()}
    )
    found = [
        (stores[label], name) for label, names in listings.items() for name in archive_names(names)
    ]
    return found, errors


async def verify_all(
    backups: Sequence[tuple[Store, str]], concurrency: int = 2, keys: ReadingKeys = NO_KEYS
) -> list[Verdict]:
    """Verify backups concurrently, in the order given; `keys` decrypt encrypted ones."""
    readers = Readers(keys=keys)
    slots = asyncio.Semaphore(concurrency)

    async def one(store: Store, name: str) -> Verdict:
        async with slots:
            return await verify_backup(store, name, readers)

    return list(await asyncio.gather(*(one(store, name) for store, name in backups)))


async def check_repositories(
    storages: Sequence[StorageConfig],
) -> tuple[dict[str, str], dict[str, str]]:
    """Each target's whole-repository check where its kind has one (`restic check`), at
    once: what was checked (label → summary), and the targets that failed it (label → why)."""
    stores = {storage.label: runtime.current().store(storage) for storage in storages}
    checked, failed = await ask_targets(
        {label: store.check_repository for label, store in stores.items()}
    )
    return {label: what for label, what in checked.items() if what is not None}, failed
