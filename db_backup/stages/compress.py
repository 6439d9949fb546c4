"""Compression stages: gzip (zlib, or isal for the fast levels), parallel gzip, zstd — and
their inverse, `Decompressor`, which reads them back.

Output is always what the standard tools read: `gunzip` (a parallel stream is a series of
gzip members, which gunzip concatenates, as pigz's independent-block mode does) and `zstd -d`.
The isal and zstandard libraries are imported only when a stage needs them, so commands that
never compress (`--help`, `validate`) do not pay for them.
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from db_backup.config.schema import CompressionConfig
from db_backup.errors import DamagedStreamError
from db_backup.manifest import Compressed
from db_backup.stages import COMPRESSION_SUFFIXES, PassthroughStage, Stage

GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around raw deflate
ISAL_LEVELS = range(1, 4)  # gzip levels 1-3 run on isal's igzip (0-3 in its own terms)
# The least a block holds: large enough that restarting the dictionary per block costs nothing
# measurable (< 1 %), small enough that a few in flight per thread keep memory low.
PARALLEL_BLOCK_BYTES = 512 * 1024
ZSTD_JOB_BYTES = 1024 * 1024


def available_cores() -> int:
    return len(os.sched_getaffinity(0))


def _gzip_module(level: int) -> Any:
    if level in ISAL_LEVELS:
        from isal import isal_zlib

        return isal_zlib
    return zlib


class _StreamStage:
    """A stage around one library compressor object (`compress()` / `flush()`)."""

    suffix: str

    def __init__(self, compressor: Any, record: Compressed) -> None:
        self._compressor = compressor
        self.record = record

    def feed(self, data: bytes) -> bytes:
        out: bytes = self._compressor.compress(data)
        return out

    def flush(self) -> bytes:
        out: bytes = self._compressor.flush()
        return out

    def close(self) -> None:
        pass


class GzipStage(_StreamStage):
    """One gzip member for the whole stream, compressed on the calling thread."""

    suffix = COMPRESSION_SUFFIXES["gzip"]

    def __init__(self, level: int) -> None:
        module = _gzip_module(level)
        compressor = module.compressobj(level, module.DEFLATED, GZIP_WBITS)
        super().__init__(compressor, Compressed(algorithm="gzip", level=level))


class ParallelBlocksStage:
    """Compress independent blocks on a small thread pool and emit them in order.

    At most two blocks per thread are in flight: `feed` waits for the oldest when the pool is
    that far ahead, which is the back-pressure that keeps memory flat.
    """

    def __init__(
        self,
        compress_block: Callable[[bytes], bytes],
        threads: int,
        block_bytes: int = PARALLEL_BLOCK_BYTES,
        suffix: str = COMPRESSION_SUFFIXES["gzip"],  # what the blocks are: gzip members
        record: Compressed | None = None,  # for the manifest
    ) -> None:
        self.suffix = suffix
        self.record = record
        self._compress_block = compress_block
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="db-backup-compress")
        self._in_flight: deque[Future[bytes]] = deque()
        self._limit = 2 * threads
        self._block_bytes = block_bytes
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._submitted = False

    def feed(self, data: bytes) -> bytes:
        # Chunks arrive as the pipe delivers them (up to 1 MiB): each becomes a block as it is,
        # small ones are gathered first. No splitting, so no copies of large chunks.
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= self._block_bytes:
            block = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
            self._buffer, self._buffered = [], 0
            self._submit(block)
        return self._collect(keep=self._limit)

    def flush(self) -> bytes:
        if self._buffered or not self._submitted:  # an empty stream is still one valid member
            self._submit(b"".join(self._buffer))
            self._buffer, self._buffered = [], 0
        out = self._collect(keep=0)
        self.close()
        return out

    def close(self) -> None:
        for future in self._in_flight:
            future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, block: bytes) -> None:
        self._in_flight.append(self._pool.submit(self._compress_block, block))
        self._submitted = True

    def _collect(self, keep: int) -> bytes:
        """Results of finished blocks, in order; waits while more than `keep` are in flight."""
        done = []
        while self._in_flight and (len(self._in_flight) > keep or self._in_flight[0].done()):
            done.append(self._in_flight.popleft().result())
        return b"".join(done)


class ZstdStage(_StreamStage):
    """One zstd frame; with threads > 1, zstd's own worker threads compress it in parallel."""

    suffix = COMPRESSION_SUFFIXES["zstd"]

    def __init__(self, level: int, threads: int) -> None:
        import zstandard

        parameters = zstandard.ZstdCompressionParameters.from_level(
            level,
            threads=threads if threads > 1 else 0,
            # zstd's default job (4x the window, 8 MiB at level 3) per worker made memory grow
            # with the dump; 1 MiB jobs keep it flat at no measurable cost in size.
            job_size=ZSTD_JOB_BYTES if threads > 1 else 0,
            # As the zstd tool does: without it a flipped byte can decompress "fine".
            write_checksum=True,
        )
        compressor = zstandard.ZstdCompressor(compression_params=parameters).compressobj()
        super().__init__(compressor, Compressed(algorithm="zstd", level=level))


def gzip_block_compressor(level: int) -> Callable[[bytes], bytes]:
    """Compress one block into a complete gzip member."""
    module = _gzip_module(level)

    def compress(block: bytes) -> bytes:
        out: bytes = module.compress(block, level, GZIP_WBITS)
        return out

    return compress


def compression_threads(compression: CompressionConfig, cores_per_job: int) -> int:
    """Threads compressing one stream: as configured; else one for isal's fast levels (one
    isal thread, ~740 MB/s on realistic rows, outruns any single pg_dump, ~320 MB/s at best
    here, and a pool only took CPU from it: 2.11 s against 2.25 s on 586 MB of pgbench rows);
    else the cores shared out among the jobs running at once."""
    if compression.threads:
        return compression.threads
    if compression.algorithm == "gzip" and compression.effective_level in ISAL_LEVELS:
        return 1
    return cores_per_job


def compressor_for(
    compression: CompressionConfig, *, dump_compresses_itself: bool, cores_per_job: int = 1
) -> Stage:
    """The compression stage for a job's output."""
    if dump_compresses_itself or compression.algorithm == "none":
        return PassthroughStage()
    level = compression.effective_level
    threads = compression_threads(compression, cores_per_job)
    if compression.algorithm == "zstd":
        return ZstdStage(level, threads)
    if threads > 1:
        record = Compressed(algorithm="gzip", level=level)
        return ParallelBlocksStage(gzip_block_compressor(level), threads, record=record)
    return GzipStage(level)


class Decompressor:
    """The inverse of every stage above: gzip (one member or a series, as the parallel stage
    writes them; each member's CRC and length checked) or zstd (each frame's checksum)."""

    def __init__(self, algorithm: str) -> None:
        self._algorithm = algorithm
        self.name = f"{algorithm} stream"
        self.complete = (
            "gzip stream complete (CRC and length ok)"
            if algorithm == "gzip"
            else "zstd stream complete"
        )
        self._zstd: Any = None
        self._stream: Any = self._new_stream()

    def _new_stream(self) -> Any:
        if self._algorithm == "gzip":
            # isal inflates 2.5x as fast as zlib here (1816 against 722 MB/s out), and
            # checks every member's CRC and length as zlib does.
            from isal import isal_zlib

            return isal_zlib.decompressobj(wbits=GZIP_WBITS)
        import zstandard

        self._zstd = self._zstd or zstandard.ZstdDecompressor()
        return self._zstd.decompressobj()

    def feed(self, data: bytes) -> bytes:
        out = []
        try:
            while data:
                out.append(self._stream.decompress(data))
                data = self._stream.unused_data if self._stream.eof else b""
                if data:  # another gzip member or zstd frame follows
                    self._stream = self._new_stream()
        except Exception as exc:  # isal's IsalError, or zstandard.ZstdError (imported lazily)
            raise DamagedStreamError(str(exc)) from None
        return b"".join(out)

    def finish(self) -> bytes:
        if not self._stream.eof:
            part = "member" if self._algorithm == "gzip" else "frame"
            raise DamagedStreamError(f"the {self.name} ends before its last {part} is complete")
        return b""
