"""Runners compute the same partition alone (run.sharding over a catalog in memory): a
database one runner's listing missed, a database only one runner found, and tonight's first
commits change nothing; a newcomer falls to the shard its name picks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db_backup.config.load import parse_config
from db_backup.plan import build_plan
from db_backup.run import sharding
from db_backup.runtime import Runtime, using
from db_backup.shard import newcomer_shard
from tests.integration.test_estimate import remember_backup as remember
from tests.memory import MemoryStore, stores_by_label

NIGHT = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
CONFIG = """\
defaults: {storage: {path: /store, prefix: n}, host: db1}
backups:
  - {name: fleet, database: "*"}
  - {name: shop, database: shop}
  - {name: fresh, database: fresh}
"""
LAST_WEEK = {"fleet.a": 900, "fleet.b": 500, "fleet.c": 400, "fleet.d": 300, "shop": 700}


def remember_backup(store: MemoryStore, job: str, stamp: str, raw: int) -> None:
    """A backup of `job` — of config backup "fleet" for "fleet.<database>"."""
    remember(store, job, stamp, raw, backup=job.split(".", 1)[0])


async def partition_seen_by(
    store: MemoryStore, found: list[str], now: datetime
) -> tuple[object, dict[str, int]]:
    config = parse_config(CONFIG, environ={})
    runtime = Runtime(clock=lambda: now, make_store=stores_by_label(store))
    with using(runtime):
        plan = build_plan(config, now, discovered={"fleet": found})
        shares = await sharding(config, plan, 2)
    placed = {job.name: i for i in range(2) for job in plan.jobs if job.name in shares.jobs_of(i)}
    assert set(placed) == {job.name for job in plan.jobs}  # every planned job has a shard
    return shares.partition, placed


async def test_runners_that_see_different_listings_agree_on_every_job() -> None:
    store = MemoryStore("/store")
    for job, raw in LAST_WEEK.items():
        remember_backup(store, job, "20261125T030000Z", raw)

    everything, placed_a = await partition_seen_by(store, ["a", "b", "c", "d", "new"], NIGHT)
    # Runner B listed the server a moment later: "b" was dropped, "new" not yet created.
    missing, placed_b = await partition_seen_by(store, ["a", "c", "d"], NIGHT)
    assert missing == everything
    assert all(placed_b[job] == placed_a[job] for job in placed_b)
    assert placed_a["fleet.new"] == newcomer_shard("fleet.new", 2)
    assert "fresh" in placed_a  # configured, never backed up: in the greedy as the median

    # Tonight's first commits (another shard finished "fleet.a", ten times larger now) and a
    # pod retried two hours later: the same partition.
    remember_backup(store, "fleet.a", "20261202T031000Z", 9000)
    later, _ = await partition_seen_by(store, ["a", "b", "c", "d"], NIGHT + timedelta(hours=2))
    assert later == everything


async def test_sizes_balance_the_shards() -> None:
    store = MemoryStore("/store")
    for job, raw in LAST_WEEK.items():
        remember_backup(store, job, "20261125T030000Z", raw)
    _, placed = await partition_seen_by(store, ["a", "b", "c", "d"], NIGHT)
    # 900, 700, 500, 400, 300 and "fresh" as the median (500): longest first, lightest shard.
    assert placed == {
        "fleet.a": 0, "shop": 1, "fleet.b": 1, "fresh": 0, "fleet.c": 1, "fleet.d": 0,
    }  # fmt: skip
