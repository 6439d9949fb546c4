"""The commit rule, in-process: the real job and orchestrator against stores in memory that
fail on cue and an engine whose dump is a real child process (tests/memory.py).

A job succeeds only if every target committed; a target that fails is dropped and the others
carry on, so the backup is kept wherever it could be, and the job fails naming each target
that did not take it. Nothing incomplete is ever left under a final name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import msgspec
import pytest

from db_backup import manifest
from db_backup.config.load import parse_config
from db_backup.model import JobStatus, RunReport
from db_backup.orchestrator import Orchestrator
from db_backup.plan import build_plan
from db_backup.runtime import Runtime, using
from db_backup.stages.unpack import Unstaging
from tests.memory import END_MARKER, MemoryStore, ScriptSource, stores_by_label

NOW = datetime(2026, 12, 1, 3, 0, 0, tzinfo=UTC)
CONFIG = """\
backups:
  - name: shop
    database: shop
    storage: [{path: /first}, {path: /second}]
"""


@pytest.fixture
def stores() -> tuple[MemoryStore, MemoryStore]:
    return MemoryStore("/first"), MemoryStore("/second")


@pytest.fixture
def source() -> ScriptSource:
    return ScriptSource()


@pytest.fixture
def runtime(stores: tuple[MemoryStore, MemoryStore], source: ScriptSource) -> Iterator[Runtime]:
    with using(
        Runtime(
            clock=lambda: NOW, make_store=stores_by_label(*stores), find_source=lambda _: source
        )
    ) as current:
        yield current


async def run(config: str = CONFIG) -> RunReport:
    plan = build_plan(parse_config(config, environ={}), NOW)
    return await Orchestrator(plan).run()


def files_in(store: MemoryStore) -> list[str]:
    return sorted(store.files)


async def test_every_target_commits_the_same_bytes_with_a_manifest(
    runtime: Runtime, stores: tuple[MemoryStore, MemoryStore]
) -> None:
    report = await run()
    (result,) = report.results
    assert result.status is JobStatus.SUCCEEDED
    assert result.error is None
    name = "shop_20261201T030000Z.sql.gz"
    for store in stores:
        assert files_in(store) == [name, f"{name}.json"]
        manifest = json.loads(store.files[f"{name}.json"])
        assert manifest["file"] == name
        assert manifest["engine"] == "fake"
        assert manifest["checks"] == ["sha256", "end marker"]
        assert manifest["started_at"] == manifest["finished_at"] == "2026-12-01T03:00:00Z"
    assert stores[0].files[name] == stores[1].files[name]
    assert [copy.target for copy in result.copies] == ["local:/first", "local:/second"]


@pytest.mark.parametrize("fault", ["fail_write", "fail_commit"])
async def test_a_target_that_fails_is_dropped_and_the_other_keeps_the_backup(
    runtime: Runtime, stores: tuple[MemoryStore, MemoryStore], fault: str
) -> None:
    first, second = stores
    setattr(first, fault, 1 if fault == "fail_write" else True)
    (result,) = (await run()).results
    assert result.status is JobStatus.FAILED
    assert result.error_kind == "targets"
    assert result.error is not None
    assert result.error.startswith("target local:/first failed: ")
    assert result.error.endswith(
        "stored on the other targets as memory:///second/shop_20261201T030000Z.sql.gz"
    )
    assert files_in(first) == []
    assert first.aborted == ["shop_20261201T030000Z.sql.gz"]
    assert len(files_in(second)) == 2
    assert [target for target, _ in result.failed_targets] == ["local:/first"]
    assert [copy.target for copy in result.copies] == ["local:/second"]


async def test_a_manifest_that_cannot_be_written_takes_its_data_file_with_it(
    runtime: Runtime, stores: tuple[MemoryStore, MemoryStore]
) -> None:
    first, second = stores
    first.fail_put = True
    (result,) = (await run()).results
    assert result.status is JobStatus.FAILED
    assert files_in(first) == []  # a data file without its manifest is not a backup
    assert len(files_in(second)) == 2
    ((label, why),) = result.failed_targets
    assert label == "local:/first"
    assert "the disk said no (the dump was stored without it and is removed)" in why


async def test_when_every_target_fails_nothing_is_kept_and_each_is_named(
    runtime: Runtime, stores: tuple[MemoryStore, MemoryStore]
) -> None:
    stores[0].fail_write = 1
    stores[1].fail_commit = True
    (result,) = (await run()).results
    assert result.status is JobStatus.FAILED
    assert result.error_kind == "targets"
    assert result.copies == ()
    assert [label for label, _ in result.failed_targets] == ["local:/first", "local:/second"]
    assert files_in(stores[0]) == files_in(stores[1]) == []


@pytest.mark.parametrize(
    ("script", "kind", "said"),
    [
        (
            "import sys; sys.stdout.write('-- half a dump\\n'); sys.exit(3)",
            "dump",
            "exited with code 3",
        ),
        (
            "import sys; sys.stdout.write('-- no marker\\n')",
            "dump",
            "without the completion marker",
        ),
    ],
)
async def test_a_dump_that_fails_or_is_cut_short_leaves_nothing_anywhere(
    runtime: Runtime,
    stores: tuple[MemoryStore, MemoryStore],
    source: ScriptSource,
    script: str,
    kind: str,
    said: str,
) -> None:
    source.script = script
    (result,) = (await run()).results
    assert result.status is JobStatus.FAILED
    assert result.error_kind == kind
    assert said in (result.error or "")
    for store in stores:
        assert files_in(store) == []
        assert store.aborted == ["shop_20261201T030000Z.sql.gz"]


async def test_the_stored_bytes_are_the_dump_compressed(
    runtime: Runtime, stores: tuple[MemoryStore, MemoryStore]
) -> None:
    import gzip

    await run()
    raw = gzip.decompress(stores[0].files["shop_20261201T030000Z.sql.gz"])
    assert raw.endswith(END_MARKER + b"\n")
    assert raw.count(b"-- fake dump\n") == 2000


@pytest.mark.parametrize(
    ("compression", "suffix", "stages"),
    [
        (
            "{algorithm: gzip, level: 6}",
            ".gz",
            [{"stage": "compress", "algorithm": "gzip", "level": 6}],
        ),
        ("{algorithm: zstd}", ".zst", [{"stage": "compress", "algorithm": "zstd", "level": 3}]),
        ("{algorithm: none}", "", []),
    ],
)
async def test_the_manifest_lists_every_stage_and_reading_back_by_it_gives_the_dump(
    runtime: Runtime,
    stores: tuple[MemoryStore, MemoryStore],
    compression: str,
    suffix: str,
    stages: list[dict[str, object]],
) -> None:
    report = await run(CONFIG + f"    compression: {compression}\n")
    assert report.results[0].status is JobStatus.SUCCEEDED
    name = f"shop_20261201T030000Z.sql{suffix}"
    record = manifest.decode(stores[0].files[f"{name}.json"])
    assert list(msgspec.to_builtins(record.stages)) == stages
    unstaging = Unstaging.of(manifest.stages_of(record))
    raw = unstaging.feed(stores[0].files[name]) + unstaging.finish()
    assert unstaging.error is None
    assert len(raw) == record.raw_bytes
    assert raw.endswith(END_MARKER + b"\n")
