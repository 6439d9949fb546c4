"""The size estimate behind the ETA: previous manifest first, database size only for plain SQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from db_backup import manifest
from db_backup.config.load import parse_config
from db_backup.job import _estimate
from db_backup.manifest import CompressionInfo, Manifest
from db_backup.plan import build_plan

NOW = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)


def jobs(directory: Path):  # type: ignore[no-untyped-def]
    text = (
        f"defaults: {{storage: {{path: {directory}, prefix: n}}}}\n"
        "backups:\n  - {name: shop, database: shop}\n  - {name: shop_eu, database: eu}\n"
        "  - {name: big, database: big, format: custom}\n"
    )
    return {job.name: job for job in build_plan(parse_config(text, environ={}), NOW).jobs}


def write_manifest(directory: Path, job: str, stamp: str, raw: int) -> None:
    record = Manifest(
        tool_version="0",
        job=job,
        backup=job,
        kind="database",
        database=job,
        server="h:1",
        server_version="15",
        client="pg_dump 15",
        format="plain",
        compression=CompressionInfo(algorithm="gzip", level=6),
        file=f"n_{job}_{stamp}.sql.gz",
        raw_bytes=raw,
        stored_bytes=1,
        sha256="0" * 64,
        started_at=datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC),
        finished_at=NOW,
        duration_seconds=0.0,
    )
    (directory / f"n_{job}_{stamp}.sql.gz.json").write_bytes(manifest.encode(record))
    (directory / f"n_{job}_{stamp}.sql.gz").write_bytes(b"")  # a manifest needs its file


def test_without_history_plain_uses_the_database_size_and_custom_has_none(tmp_path: Path) -> None:
    by_name = jobs(tmp_path)
    assert _estimate(by_name["shop"], 12345) == 12345
    assert _estimate(by_name["big"], 12345) is None


def test_the_newest_own_manifest_wins(tmp_path: Path) -> None:
    write_manifest(tmp_path, "shop", "20261124T030000Z", 100)
    write_manifest(tmp_path, "shop", "20261125T030000Z", 200)
    write_manifest(tmp_path, "shop_eu", "20261126T010000Z", 999)  # another job, same start
    (tmp_path / "n_shop_20261126T020000Z.sql.gz.json").write_text("{not json")  # ignored
    (tmp_path / "n_shop_20261126T020000Z.sql.gz").write_bytes(b"")
    assert _estimate(jobs(tmp_path)["shop"], 12345) == 200
