"""200 small databases on one server: all succeed, the server never sees more than
`max_per_host` of our connections at once, and the runner's memory does not grow with the
number of jobs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import cli_env, create_database, run_cli, server_defaults, write_config

pytestmark = pytest.mark.e2e

COUNT = 200
MAX_PER_HOST = 4


@pytest.fixture(scope="module")
def many_databases(pg: ThrowawayCluster) -> Iterator[list[str]]:
    create_database(
        pg,
        "load_template",
        "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 200) g;",
    )
    names = [f"load_{i:03d}" for i in range(COUNT)]
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        for name in names:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE load_template").format(sql.Identifier(name))
            )
    yield names
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        for name in [*names, "load_template"]:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


class ConnectionSampler(threading.Thread):
    """Counts pg_dump sessions in pg_stat_activity until stopped.

    Only pg_dump's: a connection check's session, closed by us just before the same job starts
    pg_dump, can still be listed for a few milliseconds while the server retires it (seen:
    job l88's check session, idle and client-less, beside its own pg_dump)."""

    def __init__(self, cluster: ThrowawayCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(**self.cluster.conninfo(), autocommit=True) as conn:
            while not self.done.wait(0.005):  # the sampling interval
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'"
                ).fetchone()
                assert row is not None
                self.samples.append(row[0])


def run_many(pg: ThrowawayCluster, tmp_path: Path, names: list[str]) -> dict:  # type: ignore[type-arg]
    config = write_config(
        tmp_path / f"backup-{len(names)}.yml",
        {
            "concurrency": 8,
            "defaults": server_defaults(
                pg, tmp_path / f"out-{len(names)}", max_per_host=MAX_PER_HOST
            ),
            "backups": [{"name": name, "database": name} for name in names],
        },
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report: dict = json.loads(result.stdout)  # type: ignore[type-arg]
    return report


def test_two_hundred_databases_within_the_per_server_limit(
    pg: ThrowawayCluster, many_databases: list[str], tmp_path: Path
) -> None:
    sampler = ConnectionSampler(pg)
    sampler.start()
    try:
        report = run_many(pg, tmp_path, many_databases)
    finally:
        sampler.done.set()
        sampler.join()
    assert report["succeeded"] == COUNT
    assert len(list((tmp_path / f"out-{COUNT}").glob("*.sql.gz"))) == COUNT
    assert len(sampler.samples) > 50
    assert max(sampler.samples) <= MAX_PER_HOST
    assert max(sampler.samples) >= 2  # the sampler saw concurrency, so the bound means something

    small = run_many(pg, tmp_path, many_databases[:20])
    growth = report["peak_rss_bytes"] - small["peak_rss_bytes"]
    assert report["peak_rss_bytes"] < (50 + 5 * 8) * 1024 * 1024
    assert growth < 10 * 1024 * 1024, (small["peak_rss_bytes"], report["peak_rss_bytes"])
    print(  # shown with -s: the figures behind the assertions
        f"peak RSS {small['peak_rss_bytes'] >> 20} MiB for 20 jobs, "
        f"{report['peak_rss_bytes'] >> 20} MiB for {COUNT}; "
        f"peak sessions {max(sampler.samples)} in {len(sampler.samples)} samples"
    )
