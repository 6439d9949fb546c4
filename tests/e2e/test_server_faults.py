"""The server dies or drops the connection mid-dump; transient failures are retried.

pg_dump is made to wait, connected, at a deterministic point: the test holds an exclusive lock
on a table, and pg_dump blocks taking its share lock on it until the fault is produced.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    memory_folder,
    pg_dump_processes,
    run_cli,
    server_defaults,
    write_config,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

TABLE = "CREATE TABLE held AS SELECT g FROM generate_series(1, 1000) g;"


@pytest.fixture(scope="module")
def own_server() -> Iterator[ThrowawayCluster]:
    """A server of this module's own, which its tests stop and start."""
    cluster = ThrowawayCluster(parent=memory_folder()).start()
    create_database(cluster, "held_db", TABLE)
    yield cluster
    cluster.stop()


@contextmanager
def table_held(cluster: ThrowawayCluster, database: str) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(**cluster.conninfo(database))
    conn.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
    try:
        yield conn
    finally:
        conn.close()


def waiting_pg_dump(
    cluster: ThrowawayCluster, database: str, process: subprocess.Popen[str]
) -> int:
    """The backend PID of a pg_dump that is connected and waiting for our lock."""

    def find() -> int | None:
        with psycopg.connect(**cluster.conninfo()) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_dump'"
                " AND datname = %s AND wait_event_type = 'Lock'",
                (database,),
            ).fetchone()
        return row[0] if row else None

    pid: int = wait_for(find, what="pg_dump to wait for the lock", process=process)
    return pid


def start(
    start_cli: StartCli, cluster: ThrowawayCluster, tmp_path: Path, database: str, **backup: Any
) -> subprocess.Popen[str]:
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(cluster, tmp_path / "out"),
            "backups": [{"name": "victim", "database": database, **backup}],
        },
    )
    return start_cli("backup", "-c", str(config), "--json", env=cli_env(cluster))


def job_files(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return sorted(p.name for p in out.iterdir() if p.name.startswith("t_victim_"))


def test_backend_terminated_mid_dump_fails_the_job_with_pgdumps_reason(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    create_database(pg, "terminated_db", TABLE)
    with table_held(pg, "terminated_db") as holder:
        process = start(start_cli, pg, tmp_path, "terminated_db")
        backend = waiting_pg_dump(pg, "terminated_db", process)
        holder.execute("SELECT pg_terminate_backend(%s)", (backend,))
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    job = json.loads(stdout)["jobs"][0]
    assert job["error"].startswith("pg_dump exited with code 1: ")
    assert "terminating connection due to administrator command" in job["error"]
    assert job_files(tmp_path) == []


def test_backend_terminated_mid_dump_is_retried(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    create_database(pg, "retried_db", TABLE)
    with table_held(pg, "retried_db") as holder:
        process = start(start_cli, pg, tmp_path, "retried_db", retries=2, retry_delay="0.1s")
        backend = waiting_pg_dump(pg, "retried_db", process)
        holder.execute("SELECT pg_terminate_backend(%s)", (backend,))
    stdout, stderr = process.communicate(timeout=60)  # the lock is gone: attempt 2 can finish
    assert process.returncode == 0, stderr
    assert "retry    victim: attempt 1 of 3 failed: pg_dump exited with code 1: " in stderr
    assert json.loads(stdout)["jobs"][0]["status"] == "succeeded"
    assert len(job_files(tmp_path)) == 2  # the dump and its manifest, from the second attempt


def test_server_crash_mid_dump_fails_cleanly(
    own_server: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    with table_held(own_server, "held_db"):
        process = start(start_cli, own_server, tmp_path, "held_db")
        waiting_pg_dump(own_server, "held_db", process)
        own_server.pause(mode="immediate")
        stdout, stderr = process.communicate(timeout=60)
    own_server.resume()
    assert process.returncode == 1, stderr
    error = json.loads(stdout)["jobs"][0]["error"]
    assert error.startswith("pg_dump exited with code 1: ")
    assert "server closed the connection unexpectedly" in error
    assert job_files(tmp_path) == []
    assert pg_dump_processes(own_server.port) == []


def test_a_server_that_comes_back_is_retried_until_it_answers(
    own_server: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    own_server.pause()
    try:
        process = start(start_cli, own_server, tmp_path, "held_db", retries=6, retry_delay="0.5s")
        assert process.stderr is not None
        first_retry = process.stderr.readline()
    finally:
        own_server.resume()
    stdout, rest = process.communicate(timeout=120)
    assert process.returncode == 0, first_retry + rest
    assert "retry    victim: attempt 1 of 7 failed: connection check: unreachable: " in first_retry
    assert "Connection refused" in first_retry
    assert json.loads(stdout)["jobs"][0]["status"] == "succeeded"


def test_authentication_failures_and_missing_databases_are_never_retried(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    create_database(pg, "auth_db", TABLE)
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out", password="wrong", retries=3),
            "backups": [
                {"name": "victim", "database": "auth_db"},
                {"name": "nodb", "database": "nope", "password": "${TEST_PG_PASSWORD}"},
            ],
        },
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert result.returncode == 1
    assert "retry" not in result.stderr
    errors = [job["error"] for job in json.loads(result.stdout)["jobs"]]
    assert all("attempts" not in error for error in errors)
    assert errors[0].startswith("connection check: auth failed")
    assert errors[1].startswith("connection check: database missing")
