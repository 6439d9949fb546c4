"""Sans-I/O stream stages: bytes in, bytes out, no file or socket in sight.

A `Pipeline` is what a job feeds each chunk of dump output through: it counts raw bytes,
keeps the raw tail (to check pg_dump's completion marker), compresses, and hashes and counts
what will be stored. It is CPU work, so jobs call it on a worker thread; zlib and hashlib
release the GIL, so jobs compress in parallel. New algorithms (zstd) and stages (encryption)
implement `Stage` and slot in through `compressor_for`.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Protocol

from db_backup.config.schema import CompressionConfig

_TAIL_BYTES = 256


class Stage(Protocol):
    """A streaming transform: `feed` any number of times, then `flush` once."""

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class GzipStage:
    """Standard gzip (RFC 1952) output that `gunzip` reads."""

    def __init__(self, level: int) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> bytes:
        return self._compressor.compress(data)

    def flush(self) -> bytes:
        return self._compressor.flush(zlib.Z_FINISH)


class PassthroughStage:
    """No transformation: `compression: none`, or pg_dump's own compression (custom format)."""

    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def compressor_for(compression: CompressionConfig, *, dump_compresses_itself: bool) -> Stage:
    """The compression stage for a job's output."""
    if dump_compresses_itself or compression.algorithm == "none":
        return PassthroughStage()
    return GzipStage(compression.level)


class Pipeline:
    """Raw dump bytes → stored bytes, with the counts and checksum a manifest records."""

    def __init__(self, compressor: Stage) -> None:
        self._compressor = compressor
        self._sha256 = hashlib.sha256()
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.raw_tail = b""

    def feed(self, chunk: bytes) -> bytes:
        self.raw_bytes += len(chunk)
        self.raw_tail = (self.raw_tail + chunk[-_TAIL_BYTES:])[-_TAIL_BYTES:]
        return self._account(self._compressor.feed(chunk))

    def finish(self) -> bytes:
        return self._account(self._compressor.flush())

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def _account(self, stored: bytes) -> bytes:
        self._sha256.update(stored)
        self.stored_bytes += len(stored)
        return stored
