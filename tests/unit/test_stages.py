"""The compression pipeline: standard gzip out, counts and sha256 of what is stored."""

from __future__ import annotations

import gzip
import hashlib
import os

from db_backup.config.schema import CompressionConfig
from db_backup.stages import GzipStage, PassthroughStage, Pipeline, compressor_for


def run(pipeline: Pipeline, chunks: list[bytes]) -> bytes:
    return b"".join(pipeline.feed(c) for c in chunks) + pipeline.finish()


def test_gzip_pipeline_output_is_standard_gzip_with_matching_counts_and_digest() -> None:
    chunks = [os.urandom(1000) + b"row\n" * 5000 for _ in range(20)]
    pipeline = Pipeline(GzipStage(6))
    stored = run(pipeline, chunks)
    assert gzip.decompress(stored) == b"".join(chunks)
    assert pipeline.raw_bytes == sum(len(c) for c in chunks)
    assert pipeline.stored_bytes == len(stored)
    assert pipeline.sha256 == hashlib.sha256(stored).hexdigest()
    assert pipeline.raw_tail == b"".join(chunks)[-256:]


def test_tail_spans_small_chunks() -> None:
    pipeline = Pipeline(PassthroughStage())
    data = b"".join(bytes([i % 251]) for i in range(1000))
    stored = run(pipeline, [data[i : i + 3] for i in range(0, len(data), 3)])
    assert stored == data
    assert pipeline.raw_tail == data[-256:]


def test_compressor_choice() -> None:
    gzip6 = CompressionConfig(algorithm="gzip", level=6)
    assert isinstance(compressor_for(gzip6, dump_compresses_itself=False), GzipStage)
    assert isinstance(compressor_for(gzip6, dump_compresses_itself=True), PassthroughStage)
    none = CompressionConfig(algorithm="none")
    assert isinstance(compressor_for(none, dump_compresses_itself=False), PassthroughStage)
