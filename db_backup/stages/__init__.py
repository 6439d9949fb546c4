"""Sans-I/O stream stages: bytes in, bytes out, no file or socket in sight.

A `Pipeline` is what a job feeds each chunk of dump output through: it counts raw bytes, keeps
the raw tail (to check pg_dump's completion marker), compresses, and hashes and counts what will
be stored. It is CPU work, so jobs call it on a worker thread; zlib, isal and zstd release the
GIL, so jobs — and the blocks of one parallel stream — compress on several cores at once.

A stage (compress.py) describes itself for the manifest with a record (manifest.StageRecord),
and has an inverse (`Inverse`) that undoes it when a backup is read back; unpack.py chains the
inverses from a manifest's records. A new stage (encryption) is a module with both halves,
one record type in the manifest and one line in unpack.py's dispatch.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from db_backup.manifest import Compressed, CompressionInfo, StageRecord

# Enough of a stream's end to hold pg_dump's completion marker, with room to spare.
TAIL_BYTES = 256


def append_tail(tail: bytes, chunk: bytes) -> bytes:
    """The last TAIL_BYTES of a stream, after `chunk` was appended to it."""
    return (tail + chunk[-TAIL_BYTES:])[-TAIL_BYTES:]


# What each compression algorithm adds to a file name (the stages below carry it too).
COMPRESSION_SUFFIXES = {"gzip": ".gz", "zstd": ".zst", "none": ""}
# What encryption adds after it.
ENCRYPTED_SUFFIX = ".age"


class Stage(Protocol):
    """A streaming transform: `feed` any number of times, then `flush` once; `close` frees
    any worker threads (safe to call at any time, also after an error). `suffix` is what it
    adds to a file name (".gz")."""

    suffix: str

    @property
    def record(self) -> StageRecord | None:
        """What the manifest lists of it (its inverse is found by it); None: it changes
        nothing, so there is nothing to undo."""
        ...

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def close(self) -> None: ...


class Inverse(Protocol):
    """Undoes one stage as stored bytes stream past: `feed` returns what the stage was given;
    both calls raise DamagedStreamError on bytes the stage cannot have written."""

    name: str  # what it reads, for messages: "gzip stream"
    complete: str  # what verify says when the whole stream checked out

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes:
        """The last bytes; raises DamagedStreamError if the stream was cut short."""
        ...


class PassthroughStage:
    """No transformation: `compression: none`, or pg_dump's own compression (custom format)."""

    suffix = ""
    record = None

    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


class Pipeline:
    """Raw dump bytes → stored bytes through a chain of stages (compression, then whatever
    follows it — encryption), with the counts and checksum a manifest records."""

    def __init__(self, *stages: Stage, hash_raw: bool = False) -> None:
        """`hash_raw`: also a checksum of the raw bytes (for targets given them as they
        are, see StorageConfig.takes_raw)."""
        self._stages = stages
        self._sha256 = hashlib.sha256()
        self._raw_sha256 = hashlib.sha256() if hash_raw else None
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.raw_tail = b""

    @property
    def suffix(self) -> str:
        """What the stages add to the file name, in order: ".gz", or ".gz.age" later."""
        return "".join(stage.suffix for stage in self._stages)

    @property
    def records(self) -> tuple[StageRecord, ...]:
        """Every stage that changes the bytes, in order, for the manifest."""
        return tuple(stage.record for stage in self._stages if stage.record is not None)

    @property
    def compression(self) -> CompressionInfo:
        """How the stored bytes are compressed, for the manifest's `compression`."""
        found = [r for r in self.records if isinstance(r, Compressed)]
        if not found:
            return CompressionInfo(algorithm="none", level=None)
        return CompressionInfo(algorithm=found[0].algorithm, level=found[0].level)

    def feed(self, chunk: bytes) -> bytes:
        self.raw_bytes += len(chunk)
        if self._raw_sha256 is not None:
            self._raw_sha256.update(chunk)
        self.raw_tail = append_tail(self.raw_tail, chunk)
        return self._account(self._through(chunk, 0))

    def finish(self) -> bytes:
        """Flush every stage in order, each one's last bytes through the stages after it."""
        out = b""
        for index, stage in enumerate(self._stages):
            out = self._through(out, index) + stage.flush()
        return self._account(out)

    def close(self) -> None:
        for stage in self._stages:
            stage.close()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def raw_sha256(self) -> str:
        """The raw bytes' checksum (made with `hash_raw`)."""
        assert self._raw_sha256 is not None, "Pipeline(hash_raw=True) keeps it"
        return self._raw_sha256.hexdigest()

    def _through(self, data: bytes, first: int) -> bytes:
        for stage in self._stages[first:]:
            data = stage.feed(data) if data else data
        return data

    def _account(self, stored: bytes) -> bytes:
        self._sha256.update(stored)
        self.stored_bytes += len(stored)
        return stored
