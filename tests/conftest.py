"""Shared fixtures: one throwaway PostgreSQL per test session, a CLI runner, config writers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from db_backup.mariadbcluster import ThrowawayMariaDB
from db_backup.pgcluster import ThrowawayCluster
from tests.seaweed import SeaweedServer

REPO = Path(__file__).resolve().parent.parent
# Per-machine state of the CLIs the suite runs (the locks of S3 targets): the suite's own.
STATE_DIR = Path(tempfile.mkdtemp(prefix="db-backup-test-state-"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: nothing may be skipped silently."""
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if reporter and skipped:
        reporter.write_line(f"CI=true: {len(skipped)} skipped test(s) count as failures", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def memory_folder() -> Path | None:
    """/dev/shm when it is there: a throwaway server's files need no disk, and on a busy shared
    disk CREATE DATABASE alone was 17x slower (250 ms against 15 ms a database)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 << 30:
        return shm
    return None


@pytest.fixture(scope="session")
def pg() -> Iterator[ThrowawayCluster]:
    """The session's PostgreSQL server (scram-sha-256, superuser `postgres`)."""
    cluster = ThrowawayCluster(parent=memory_folder()).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[ThrowawayMariaDB]:
    """The session's MariaDB server (superuser `root`, a password over TCP)."""
    server = ThrowawayMariaDB(parent=memory_folder()).start()
    try:
        yield server
    finally:
        server.stop()


def mariadb_defaults(server: ThrowawayMariaDB, storage: Path, **extra: Any) -> dict[str, Any]:
    """Settings of a `type: mariadb` backup on the session's server; the password comes
    from the environment (cli_env(..., mariadb=server))."""
    return {
        "type": "mariadb",
        "host": server.host,
        "port": server.port,
        "username": server.superuser,
        "password": "${TEST_MARIADB_PASSWORD}",
        "storage": {"path": str(storage), "prefix": "t"},
        **extra,
    }


@pytest.fixture(scope="session")
def s3() -> Iterator[SeaweedServer]:
    """The session's S3-compatible server (SeaweedFS) with an empty bucket `backups`."""
    server = SeaweedServer(parent=memory_folder()).start()
    try:
        yield server
    finally:
        server.remove()


def s3_storage(server: SeaweedServer, prefix: str, **extra: Any) -> dict[str, Any]:
    """A `kind: s3` target on the session's server; credentials come from the environment
    (see `cli_env(..., s3=server)`), as a real config should take them."""
    return {
        "kind": "s3",
        "bucket": server.bucket,
        "prefix": prefix,
        "endpoint_url": server.endpoint,
        "path_style": True,
        "access_key_id": "${AWS_ACCESS_KEY_ID}",
        "secret_access_key": "${AWS_SECRET_ACCESS_KEY}",
        "part_size": "5MiB",
        **extra,
    }


def create_database(cluster: ThrowawayCluster, name: str, script: str = "") -> None:
    """(Re)create database `name` and run `script` in it."""
    import psycopg  # here: the unit tests need neither a server nor its driver
    from psycopg import sql

    with psycopg.connect(**cluster.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    if script:
        with psycopg.connect(**cluster.conninfo(name)) as conn:
            conn.execute(script.encode())


@pytest.fixture
def make_database(pg: ThrowawayCluster) -> Iterator[Any]:
    """Create databases for one test; dropped afterwards."""
    created: list[str] = []

    def make(name: str, script: str = "") -> str:
        create_database(pg, name, script)
        created.append(name)
        return name

    yield make
    import psycopg
    from psycopg import sql

    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def big_db(pg: ThrowawayCluster) -> str:
    """Large enough (~110 MB of SQL) that a dump is still running when a test acts on it."""
    create_database(
        pg,
        "big",
        "CREATE TABLE t AS SELECT g, md5(g::text) a, md5((g+1)::text) b, md5((g+2)::text) c "
        "FROM generate_series(1, 600000) g;",
    )
    return "big"


def _state(pid: int | str) -> str | None:
    """The process's state letter from /proc (Z for a zombie), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def is_gone(pid: int) -> bool:
    """Has the process ended? (A zombie has: only its exit status waits to be collected.)"""
    return _state(pid) in (None, "Z")


def pg_dump_processes(port: int) -> list[int]:
    """PIDs of live pg_dump processes talking to the server on `port`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # argv[0], or argv[1] for a script run through its interpreter (the test wrappers)
        named = any(arg.endswith(b"pg_dump") for arg in argv[:2])
        if named and f"--port={port}".encode() in argv and not is_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def write_config(path: Path, document: dict[str, Any]) -> Path:
    """Write a config; JSON is valid YAML, and keeps tests free of YAML quoting puzzles."""
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


def server_defaults(cluster: ThrowawayCluster, storage: Path, **extra: Any) -> dict[str, Any]:
    """`defaults:` pointing at the session server; the password comes from the environment."""
    return {
        "host": cluster.host,
        "port": cluster.port,
        "username": cluster.superuser,
        "password": "${TEST_PG_PASSWORD}",
        "storage": {"path": str(storage), "prefix": "t"},
        **extra,
    }


def cli_env(
    cluster: ThrowawayCluster | None = None,
    *,
    s3: SeaweedServer | None = None,
    mariadb: ThrowawayMariaDB | None = None,
    **extra: str,
) -> dict[str, str]:
    # JOB_COMPLETION_INDEX: Kubernetes' shard index, were the suite itself run in an Indexed Job
    unwanted = ("DB_BACKUP_", "PG", "AWS_", "JOB_COMPLETION_INDEX")
    env = {k: v for k, v in os.environ.items() if not k.startswith(unwanted)}
    env["NO_COLOR"] = "1"
    env["DB_BACKUP_STATE_DIR"] = str(STATE_DIR)
    if cluster is not None:
        env["TEST_PG_PASSWORD"] = cluster.password
    if mariadb is not None:
        env["TEST_MARIADB_PASSWORD"] = mariadb.password
    if s3 is not None:
        env.update(s3.environment())
    env.update(extra)
    return env


StartCli = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def start_cli() -> Iterator[StartCli]:
    """Start the CLI in the background, stdout and stderr piped. Whatever is still running when
    the test ends, passed or failed, is killed (its children die with it) and reaped."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "db_backup", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `db-backup` CLI in a child process (stdout/stderr piped, not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "db_backup", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(),
        timeout=timeout,
        check=False,
    )
