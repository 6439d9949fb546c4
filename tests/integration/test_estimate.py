"""The size behind a job's ETA (its JobStarted event): the newest earlier backup of the same
job on its target, else what the engine expects (for PostgreSQL: the database's size, for
plain SQL only)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from db_backup import manifest
from db_backup.config.load import parse_config
from db_backup.manifest import CompressionInfo, Manifest
from db_backup.model import JobEvent, JobStarted
from db_backup.orchestrator import Orchestrator
from db_backup.plan import build_plan
from db_backup.runtime import Runtime, using
from db_backup.sources.postgres import ClientBinary, dump_command, expected_bytes
from tests.memory import MemoryStore, ScriptSource, stores_by_label

NOW = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)
CONFIG = """\
defaults: {storage: {path: /store, prefix: n}}
backups:
  - {name: shop, database: shop}
  - {name: shop_eu, database: eu}
  - {name: big, database: big, format: custom}
"""


def remember_backup(
    store: MemoryStore, job: str, stamp: str, raw: int, *, backup: str | None = None
) -> None:
    """A backup of `job` (of config backup `backup`, by default the job's name) taken at
    `stamp`, with its manifest, in `store`."""
    record = Manifest(
        tool_version="0",
        job=job,
        backup=backup or job,
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
    store.files[f"n_{job}_{stamp}.sql.gz.json"] = manifest.encode(record)
    store.files[f"n_{job}_{stamp}.sql.gz"] = b""  # a manifest needs its file


async def estimates(store: MemoryStore, source: ScriptSource) -> dict[str, int | None]:
    started: dict[str, int | None] = {}

    def listen(event: JobEvent) -> None:
        if isinstance(event, JobStarted):
            started[event.job.name] = event.estimated_bytes

    runtime = Runtime(
        clock=lambda: NOW, make_store=stores_by_label(store), find_source=lambda _: source
    )
    with using(runtime):
        plan = build_plan(parse_config(CONFIG, environ={}), NOW, names=["shop"])
        await Orchestrator(plan, [listen]).run()
    return started


async def test_without_history_the_engine_says() -> None:
    assert await estimates(MemoryStore("/store"), ScriptSource(expected_bytes=12345)) == {
        "shop": 12345
    }


async def test_the_newest_own_backup_wins() -> None:
    store = MemoryStore("/store")
    remember_backup(store, "shop", "20261124T030000Z", 100)
    remember_backup(store, "shop", "20261125T030000Z", 200)
    remember_backup(store, "shop_eu", "20261126T010000Z", 999)  # another job, same start
    store.files["n_shop_20261126T020000Z.sql.gz.json"] = b"{not json"  # not a manifest
    store.files["n_shop_20261126T020000Z.sql.gz"] = b""
    assert await estimates(store, ScriptSource(expected_bytes=12345)) == {"shop": 200}


def test_postgresql_expects_the_database_size_for_plain_sql_only() -> None:
    backups = {b.name: b for b in parse_config(CONFIG, environ={}).backups}
    client = ClientBinary(Path("/usr/lib/postgresql/15/bin/pg_dump"), "15.18")
    for name, expected in (("shop", 12345), ("big", None)):
        command = dump_command(client, backups[name], name, globals_only=False)
        assert expected_bytes(command, 12345) == expected
    globals_dump = dump_command(client, backups["shop"], "postgres", globals_only=True)
    assert expected_bytes(globals_dump, 12345) is None
