"""Dumps really overlap, and never more than `max_per_host` run against one server.

Shown from the start/end times each manifest records for its pg_dump, not from sleeps.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    run_cli,
    server_defaults,
    write_config,
)
from tests.fakes import gated_pg_dump
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

ROWS = """
CREATE TABLE items AS
SELECT g AS id, md5(g::text) AS a, md5((g * 7)::text) AS b, now() AS at
FROM generate_series(1, 60000) g;
"""
DATABASES = [f"conc_{i}" for i in range(6)]


@pytest.fixture(scope="module")
def databases(pg: ThrowawayCluster) -> list[str]:
    for name in DATABASES:
        create_database(pg, name, ROWS)
    return DATABASES


def intervals(report: dict) -> list[tuple[str, datetime, datetime]]:  # type: ignore[type-arg]
    spans = []
    for job in report["jobs"]:
        assert job["status"] == "succeeded", job
        manifest = json.loads(Path(job["manifest"]).read_text())
        spans.append(
            (
                manifest["server"],
                datetime.fromisoformat(manifest["started_at"]),
                datetime.fromisoformat(manifest["finished_at"]),
            )
        )
    return spans


def peak_overlap(spans: list[tuple[str, datetime, datetime]], server: str | None = None) -> int:
    """The most intervals (of one server, or all) that were open at the same instant."""
    edges = []
    for name, start, end in spans:
        if server is None or name == server:
            edges += [(start, 1), (end, -1)]
    running = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        running += step
        peak = max(peak, running)
    return peak


def test_dumps_overlap_but_respect_max_per_host(
    pg: ThrowawayCluster, databases: list[str], tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "backup.yml",
        {
            "concurrency": 6,
            "defaults": server_defaults(pg, tmp_path / "out", max_per_host=2),
            "backups": [{"name": name, "database": name} for name in databases],
        },
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    spans = intervals(json.loads(result.stdout))
    assert len(spans) == len(databases)
    assert peak_overlap(spans) == 2  # overlapping (>1), yet never above the server's limit


def test_global_concurrency_and_per_server_limits_combine(
    pg: ThrowawayCluster, databases: list[str], tmp_path: Path
) -> None:
    """Two names for one server count as two servers: one dump each at a time, two overall."""
    defaults = server_defaults(pg, tmp_path / "out", max_per_host=1)
    backups = [
        {"name": f"{host}-{name}", "database": name, "host": host}
        for host in ("127.0.0.1", "localhost")
        for name in databases[:3]
    ]
    config = write_config(
        tmp_path / "backup.yml", {"concurrency": 4, "defaults": defaults, "backups": backups}
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    spans = intervals(json.loads(result.stdout))
    assert peak_overlap(spans, f"127.0.0.1:{pg.port}") == 1
    assert peak_overlap(spans, f"localhost:{pg.port}") == 1
    assert peak_overlap(spans) == 2


def test_jobs_flag_caps_concurrency(
    pg: ThrowawayCluster, databases: list[str], tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "backup.yml",
        {
            "concurrency": 6,
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [{"name": name, "database": name} for name in databases],
        },
    )
    result = run_cli("backup", "-c", str(config), "-j", "1", "--json", env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    assert peak_overlap(intervals(json.loads(result.stdout))) == 1


def test_more_jobs_than_the_default_thread_pool_all_stream_at_once(
    pg: ThrowawayCluster, databases: list[str], tmp_path: Path, start_cli: StartCli
) -> None:
    """Each dump's data path holds a thread for the whole dump. With 8 jobs at once, the last
    two to start must stream to the end while the first six are still held: a shared pool of
    6 threads (asyncio's default on two cores) would leave their output unread, their pipes
    full, and them stuck."""
    gate, started = tmp_path / "gate", tmp_path / "started"
    wrapper = gated_pg_dump(tmp_path, pg.client_bin("pg_dump"), gate, started)
    jobs = 8
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "backup.yml",
        {
            "concurrency": jobs,
            "defaults": server_defaults(pg, out, pg_dump_path=str(wrapper)),
            "backups": [
                {"name": f"j{i}", "database": databases[i % len(databases)]} for i in range(jobs)
            ],
        },
    )
    process = start_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    log = Path(f"{started}.all")

    def dumps_started() -> int:
        return len(log.read_text().split()) if log.exists() else 0

    wait_for(lambda: dumps_started() == jobs, what=f"{jobs} dumps to start", process=process)
    for order in (jobs - 2, jobs - 1):
        Path(f"{gate}.{order}").touch()

    def finished() -> int:
        return len(list(out.glob("*.sql.gz.json")))

    wait_for(lambda: finished() == 2, what="the two released dumps to finish", process=process)
    assert dumps_started() == jobs  # and the other six are still held at their gates
    gate.touch()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert json.loads(stdout)["succeeded"] == jobs
