"""Compression stages: output the standard tools read, counts and sha256, bounded memory."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import subprocess
import threading
import zlib
from typing import Any

import msgspec
import pytest

from db_backup.config.schema import CompressionConfig
from db_backup.stages import PassthroughStage, Pipeline, Stage
from db_backup.stages.compress import (
    GzipStage,
    ParallelBlocksStage,
    ZstdStage,
    compressor_for,
    gzip_block_compressor,
)

# Dump-like input: compressible rows with some random bytes, 5.3 MB in 40 uneven chunks. The
# same bytes every run: a byte flipped in a deflate stream can leave its output unchanged
# (about 1 position in 400 here, e.g. an unused code length), so the flip below must land
# where it matters every time, not most times.
_NOISE = random.Random(20261202)
CHUNKS = [
    _NOISE.randbytes(3000) + (f"{i}\tsome row text\t2026-11-26\n" * 4000).encode()
    for i in range(40)
]
RAW = b"".join(CHUNKS)


def run(stage: Stage, chunks: list[bytes] = CHUNKS) -> bytes:
    pipeline = Pipeline(stage)
    stored = b"".join(pipeline.feed(c) for c in chunks) + pipeline.finish()
    assert pipeline.raw_bytes == sum(len(c) for c in chunks)
    assert pipeline.stored_bytes == len(stored)
    assert pipeline.sha256 == hashlib.sha256(stored).hexdigest()

    pipeline.close()
    return stored


def tool(argv: list[str], data: bytes) -> bytes:
    """Decompress with a standard command-line tool; fails the test if it complains."""
    result = subprocess.run(argv, input=data, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("level", [1, 3, 6, 9])
def test_gzip_levels_give_standard_gzip(level: int) -> None:
    stored = run(GzipStage(level))
    assert tool(["gunzip", "-c"], stored) == RAW
    assert gzip.decompress(stored) == RAW


def test_parallel_gzip_is_a_series_of_members_that_gunzip_reads() -> None:
    stored = run(ParallelBlocksStage(gzip_block_compressor(6), threads=2, block_bytes=256 * 1024))
    assert tool(["gunzip", "-c"], stored) == RAW
    members = 0
    rest = stored
    while rest:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        decompressor.decompress(rest)
        assert decompressor.eof
        rest = decompressor.unused_data
        members += 1
    # chunks are ~124 KiB: each member gathers the fewest chunks that reach 256 KiB
    per_member = -(-256 * 1024 // len(CHUNKS[0]))
    assert members == -(-len(CHUNKS) // per_member)
    assert len(stored) < len(run(GzipStage(6))) * 1.01  # independent blocks cost < 1 %


def test_an_empty_parallel_stream_is_still_valid_gzip() -> None:
    stored = run(ParallelBlocksStage(gzip_block_compressor(1), threads=2), chunks=[])
    assert tool(["gunzip", "-c"], stored) == b""


def test_a_slow_compressor_holds_the_feeder_back_after_two_blocks_per_thread() -> None:
    """Back-pressure, seen from outside: while compression is held, `feed` takes two blocks
    per thread (each chunk here is one block) and then waits, so memory cannot grow."""
    release = threading.Event()
    compress = gzip_block_compressor(1)

    def held(block: bytes) -> bytes:
        release.wait()
        return compress(block)

    stage = ParallelBlocksStage(held, threads=2, block_bytes=64 * 1024)
    fed: list[bytes] = []
    output: list[bytes] = []

    def feeder() -> None:
        for chunk in CHUNKS:
            output.append(stage.feed(chunk))
            fed.append(chunk)
        output.append(stage.flush())

    thread = threading.Thread(target=feeder, daemon=True)
    thread.start()
    try:
        # Without back-pressure the feeder would be through all 40 chunks at once.
        thread.join(timeout=0.5)
        assert thread.is_alive()
        assert len(fed) == 2 * 2
    finally:
        release.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(fed) == len(CHUNKS)
    assert gzip.decompress(b"".join(output)) == RAW


def test_zstd_is_read_by_the_zstd_tool_and_carries_a_checksum() -> None:
    for threads in (1, 2):
        stored = run(ZstdStage(3, threads))
        assert tool(["zstd", "-d", "-c"], stored) == RAW
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0x40
    result = subprocess.run(
        ["zstd", "-d", "-c"], input=bytes(damaged), capture_output=True, check=False
    )
    assert result.returncode != 0


def test_tail_spans_small_chunks() -> None:
    pipeline = Pipeline(PassthroughStage())
    data = bytes(i % 251 for i in range(1000))
    stored = b"".join(pipeline.feed(data[i : i + 3]) for i in range(0, len(data), 3))
    assert stored + pipeline.finish() == data
    assert pipeline.raw_tail == data[-256:]


@pytest.mark.parametrize(
    ("settings", "custom", "expected"),
    [
        ({"algorithm": "gzip", "level": 6, "threads": 1}, False, GzipStage),
        ({"algorithm": "gzip", "level": 6, "threads": 2}, False, ParallelBlocksStage),
        ({"algorithm": "gzip"}, True, PassthroughStage),
        ({"algorithm": "zstd", "threads": 2}, False, ZstdStage),
        ({"algorithm": "none"}, False, PassthroughStage),
    ],
)
def test_compressor_choice(settings: dict[str, object], custom: bool, expected: type) -> None:
    stage = compressor_for(CompressionConfig(**settings), dump_compresses_itself=custom)  # type: ignore[arg-type]
    assert isinstance(stage, expected)
    stage.close()


def test_default_levels() -> None:
    assert CompressionConfig().effective_level == 1
    assert CompressionConfig(algorithm="zstd").effective_level == 3
    assert CompressionConfig(level=9).effective_level == 9


@pytest.mark.parametrize(
    ("settings", "cores_per_job", "threads"),
    [
        ({}, 2, 1),  # the default, isal gzip-1: one thread outruns pg_dump
        ({"level": 3}, 4, 1),
        ({"level": 6}, 2, 2),  # zlib levels: the job's share of the cores
        ({"level": 6}, 1, 1),
        ({"algorithm": "zstd"}, 2, 2),
        ({"level": 1, "threads": 3}, 1, 3),  # as configured
    ],
)
def test_default_compression_threads(
    settings: dict[str, object], cores_per_job: int, threads: int
) -> None:
    from db_backup.stages.compress import compression_threads

    assert compression_threads(CompressionConfig(**settings), cores_per_job) == threads  # type: ignore[arg-type]


def test_a_chain_of_stages_feeds_each_into_the_next_and_names_its_suffixes() -> None:
    class Tagging:
        """A stage that brackets the stream, to show order and flushing."""

        record = None

        def __init__(self, tag: bytes, suffix: str) -> None:
            self.tag, self.suffix = tag, suffix

        def feed(self, data: bytes) -> bytes:
            return self.tag + data

        def flush(self) -> bytes:
            return self.tag + b"end"

        def close(self) -> None:
            pass

    pipeline = Pipeline(Tagging(b"<a>", ".a"), Tagging(b"<b>", ".b"))
    stored = pipeline.feed(b"x") + pipeline.finish()
    # x through a then b; a's last bytes through b; then b's own.
    assert stored == b"<b><a>x" + b"<b><a>end" + b"<b>end"
    assert pipeline.suffix == ".a.b"
    assert pipeline.stored_bytes == len(stored)
    assert pipeline.sha256 == hashlib.sha256(stored).hexdigest()


def test_reading_back_undoes_the_stages_last_first() -> None:
    from db_backup.stages.unpack import Unstaging

    class Untagging:
        """The inverse of a stage that put `tag` before every chunk and `tag + end` last."""

        complete = "ok"

        def __init__(self, tag: bytes) -> None:
            self.tag, self.name = tag, f"{tag!r} stream"

        def feed(self, data: bytes) -> bytes:
            assert data.startswith(self.tag), (self.tag, data)  # the outer tag comes first
            return data.replace(self.tag + b"end", b"").replace(self.tag, b"")

        def finish(self) -> bytes:
            return b""

    # What the chain above stores for b"x": b's tags outside a's.
    unstaging = Unstaging([Untagging(b"<a>"), Untagging(b"<b>")])
    assert (
        unstaging.feed(b"<b><a>x") + unstaging.feed(b"<b><a>end<b>end") + unstaging.finish() == b"x"
    )
    assert unstaging.error is None
    assert unstaging.raw_bytes == 1


def compressed(algorithm: str) -> tuple[Pipeline, bytes]:
    """RAW through the compression stage `algorithm`: the (closed) pipeline, the stored bytes."""
    config = CompressionConfig(algorithm=algorithm)  # type: ignore[arg-type]
    pipeline = Pipeline(compressor_for(config, dump_compresses_itself=False))
    stored = pipeline.feed(RAW) + pipeline.finish()
    pipeline.close()
    return pipeline, stored


@pytest.mark.parametrize("algorithm", ["gzip", "zstd"])
def test_what_a_stage_writes_its_inverse_reads_back_by_its_record(algorithm: str) -> None:
    from db_backup.stages.unpack import Unstaging, records_from_name

    pipeline, stored = compressed(algorithm)
    # By the records a manifest lists, and (no manifest) by the file name's suffix.
    name = f"shop_20261201T000000Z.sql{pipeline.suffix}"
    for records in (pipeline.records, records_from_name(name)):
        unstaging = Unstaging.of(records)
        half = len(stored) // 2
        raw = unstaging.feed(stored[:half]) + unstaging.feed(stored[half:]) + unstaging.finish()
        assert unstaging.error is None
        assert raw == RAW
        assert unstaging.raw_bytes == len(RAW)
        assert unstaging.tail == RAW[-len(unstaging.tail) :]
    assert records_from_name("shop_20261201T000000Z.sql") == ()


@pytest.mark.parametrize("algorithm", ["gzip", "zstd"])
def test_an_inverse_reports_a_stream_cut_short_or_changed(algorithm: str) -> None:
    from db_backup.stages.unpack import Unstaging

    pipeline, stored = compressed(algorithm)
    cut = Unstaging.of(pipeline.records)
    cut.feed(stored[:-8])
    cut.finish()
    assert cut.error is not None
    assert f"the {algorithm} stream is damaged or cut short" in cut.error
    changed = Unstaging.of(pipeline.records)
    flipped = bytearray(stored)
    flipped[len(stored) // 2] ^= 0xFF
    changed.feed(bytes(flipped))
    changed.finish()
    assert changed.error is not None


@pytest.mark.parametrize(
    ("compression", "threads", "described"),
    [
        ({"algorithm": "gzip"}, 1, ("gzip", 1)),
        ({"algorithm": "gzip", "level": 6}, 2, ("gzip", 6)),
        ({"algorithm": "zstd", "level": 7}, 2, ("zstd", 7)),
        ({"algorithm": "none"}, 1, ("none", None)),
    ],
)
def test_each_compression_stage_describes_itself_for_the_manifest(
    compression: dict[str, Any], threads: int, described: tuple[str, int | None]
) -> None:
    config = CompressionConfig(**compression, threads=threads)
    pipeline = Pipeline(compressor_for(config, dump_compresses_itself=False))
    assert (pipeline.compression.algorithm, pipeline.compression.level) == described
    pipeline.close()


@pytest.mark.parametrize(
    ("compression", "stages"),
    [
        (
            {"algorithm": "gzip", "level": 1},
            [{"stage": "compress", "algorithm": "gzip", "level": 1}],
        ),
        (
            {"algorithm": "zstd", "level": 3},
            [{"stage": "compress", "algorithm": "zstd", "level": 3}],
        ),
        ({"algorithm": "pg_dump", "level": None}, []),
        ({"algorithm": "none", "level": None}, []),
    ],
)
def test_a_manifest_written_before_stages_were_listed_reads_back_by_its_compression(
    compression: dict[str, Any], stages: list[dict[str, Any]]
) -> None:
    from db_backup import manifest

    old = {
        "manifest_version": 1, "tool": "db-backup", "tool_version": "0.1.0", "job": "shop",
        "backup": "shop", "kind": "database", "database": "shop", "server": "db:5432",
        "server_version": "15.18", "client": "pg_dump 15.18", "format": "plain",
        "compression": compression, "file": "shop_20261101T000000Z.sql.gz", "raw_bytes": 10,
        "stored_bytes": 5, "sha256": "0" * 64, "started_at": "2026-11-01T00:00:00Z",
        "finished_at": "2026-11-01T00:00:01Z", "duration_seconds": 1.0,
    }  # fmt: skip
    record = manifest.decode(json.dumps(old).encode())
    assert record.stages == ()
    assert [msgspec.to_builtins(stage) for stage in manifest.stages_of(record)] == stages


def test_an_encrypted_files_name_says_its_stages() -> None:
    from db_backup.manifest import Compressed, Encrypted
    from db_backup.naming import BACKUP_SUFFIXES, format_of
    from db_backup.stages.unpack import records_from_name

    assert records_from_name("t_shop_20261202T010203Z.sql.gz.age") == (
        Compressed(algorithm="gzip", level=None),
        Encrypted(recipients=()),
    )
    assert records_from_name("t_shop_20261202T010203Z.dump.age") == (Encrypted(recipients=()),)
    assert records_from_name("t_shop_20261202T010203Z.sql.zst") == (
        Compressed(algorithm="zstd", level=None),
    )
    assert format_of("x.dump.age") == "custom"
    assert format_of("x.sql.age") == "plain"
    assert "x.sql.zst.age".endswith(BACKUP_SUFFIXES)
