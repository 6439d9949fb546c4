"""The size estimate behind the ETA: previous manifest first, else what the engine expects
(PostgreSQL: the database size, for plain SQL only)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from db_backup import manifest
from db_backup.config.load import parse_config
from db_backup.job import _estimate
from db_backup.manifest import CompressionInfo, Manifest
from db_backup.plan import build_plan
from db_backup.sources.postgres import ClientBinary, dump_command, expected_bytes

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
    client = ClientBinary(Path("/usr/lib/postgresql/15/bin/pg_dump"), "15.18")
    for name, expected in (("shop", 12345), ("big", None)):
        job = by_name[name]
        command = dump_command(client, job.backup, job.database, globals_only=False)
        assert _estimate(job, expected_bytes(command, 12345)) == expected
    globals_dump = dump_command(client, by_name["shop"].backup, "postgres", globals_only=True)
    assert expected_bytes(globals_dump, 12345) is None


def test_the_newest_own_manifest_wins(tmp_path: Path) -> None:
    write_manifest(tmp_path, "shop", "20261124T030000Z", 100)
    write_manifest(tmp_path, "shop", "20261125T030000Z", 200)
    write_manifest(tmp_path, "shop_eu", "20261126T010000Z", 999)  # another job, same start
    (tmp_path / "n_shop_20261126T020000Z.sql.gz.json").write_text("{not json")  # ignored
    (tmp_path / "n_shop_20261126T020000Z.sql.gz").write_bytes(b"")
    assert _estimate(jobs(tmp_path)["shop"], 12345) == 200
