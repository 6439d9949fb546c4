"""Sans-I/O stream stages: bytes in, bytes out, no file or socket in sight.

A `Pipeline` is what a job feeds each chunk of dump output through: it counts raw bytes, keeps
the raw tail (to check pg_dump's completion marker), compresses, and hashes and counts what will
be stored. It is CPU work, so jobs call it on a worker thread; zlib, isal and zstd release the
GIL, so jobs — and the blocks of one parallel stream — compress on several cores at once.
New stages (encryption) implement `Stage` and slot in through the Pipeline.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

# Enough of a stream's end to hold pg_dump's completion marker, with room to spare.
TAIL_BYTES = 256


def append_tail(tail: bytes, chunk: bytes) -> bytes:
    """The last TAIL_BYTES of a stream, after `chunk` was appended to it."""
    return (tail + chunk[-TAIL_BYTES:])[-TAIL_BYTES:]


class Stage(Protocol):
    """A streaming transform: `feed` any number of times, then `flush` once; `close` frees
    any worker threads (safe to call at any time, also after an error)."""

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def close(self) -> None: ...


class PassthroughStage:
    """No transformation: `compression: none`, or pg_dump's own compression (custom format)."""

    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


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
        self.raw_tail = append_tail(self.raw_tail, chunk)
        return self._account(self._compressor.feed(chunk))

    def finish(self) -> bytes:
        return self._account(self._compressor.flush())

    def close(self) -> None:
        self._compressor.close()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def _account(self, stored: bytes) -> bytes:
        self._sha256.update(stored)
        self.stored_bytes += len(stored)
        return stored
