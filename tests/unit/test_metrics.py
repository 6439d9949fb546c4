"""The metrics text, from archives and attempts, and the attempts read back from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from db_backup.catalog import Archive
from db_backup.manifest import CompressionInfo, Manifest, RestoreTest
from db_backup.metrics import Attempt, attempts_in, exposition

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def archive(job: str, target: str, age_hours: int, **extra: Any) -> Archive:
    taken = NOW - timedelta(hours=age_hours)
    record = Manifest(
        tool_version="0",
        job=job,
        backup=job,
        kind="database",
        database=f"db of {job}",
        server="db1:5432",
        server_version="15.18",
        client="pg_dump 15.18",
        format="plain",
        compression=CompressionInfo(algorithm="gzip", level=1),
        file=f"{job}_{age_hours}.sql.gz",
        raw_bytes=1000 + age_hours,
        stored_bytes=100 + age_hours,
        sha256="0" * 64,
        started_at=taken,
        finished_at=taken + timedelta(seconds=30),
        duration_seconds=30.5,
    )
    return Archive(
        job=job,
        backup=job,
        database=record.database,
        taken_at=taken,
        stored_bytes=record.stored_bytes,
        raw_bytes=record.raw_bytes,
        target=target,
        name=record.file,
        location=f"{target}{record.file}",
        sha256=record.sha256,
        checks=(),
        store=None,  # type: ignore[arg-type]
        record=record,
        **extra,
    )


def samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_each_job_is_described_by_its_newest_backup_and_each_target_counted() -> None:
    tested = RestoreTest(
        file="x", sha256="0", tested_at=NOW, sandbox="s", duration_seconds=1.0, ok=False
    )
    archives = [
        archive("shop", "local:/b", 1, restore_test=tested),
        archive("shop", "local:/b", 25),
        archive("shop", "s3://v/", 1),
        archive('we"ird\\name', "local:/b", 2),
    ]
    text = exposition(archives, {})
    found = samples(text)
    shop = 'backup="shop",database="db of shop",server="db1:5432"'
    newest = NOW - timedelta(hours=1) + timedelta(seconds=30)
    assert found[f"db_backup_last_success_timestamp_seconds{{{shop}}}"] == newest.timestamp()
    assert found[f"db_backup_last_duration_seconds{{{shop}}}"] == 30.5
    assert found[f'db_backup_last_size_bytes{{{shop},kind="raw"}}'] == 1001
    assert found[f'db_backup_last_size_bytes{{{shop},kind="stored"}}'] == 101
    assert found[f'db_backup_backups{{{shop},target="local:/b"}}'] == 2
    assert found[f'db_backup_backups{{{shop},target="s3://v/"}}'] == 1
    oldest = (NOW - timedelta(hours=25)).timestamp()
    assert found[f'db_backup_oldest_backup_timestamp_seconds{{{shop},target="local:/b"}}'] == oldest
    assert found[f"db_backup_last_restore_test_success{{{shop}}}"] == 0
    assert 'backup="we\\"ird\\\\name"' in text
    for family in ("last_success_timestamp_seconds", "last_attempt_success", "backups"):
        assert f"# TYPE db_backup_{family} gauge" in text


def test_attempts_survive_a_round_trip_through_the_file() -> None:
    attempts = {
        "shop": Attempt("shop", "shop", "db1:5432", NOW.timestamp(), True),
        'we"ird': Attempt('we"ird', "d\nb", "db2:5432", NOW.timestamp() - 60.5, False),
    }
    assert attempts_in(exposition([], attempts)) == attempts
    assert attempts_in("garbage\n# HELP x\n") == {}
