"""One failing job never stops the others, and a failed job leaves no file behind.

The connection checks run against the real server; the faults come from fake pg_dumps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import cli_env, run_cli, server_defaults, write_config
from tests.fakes import fake_pg_dump

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_db(make_database: Any) -> str:
    name: str = make_database(
        "faults_small", "CREATE TABLE t AS SELECT generate_series(1, 1000) AS n;"
    )
    return name


def backup_with(
    pg: ThrowawayCluster, tmp_path: Path, broken: dict[str, Any], database: str
) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, out),
            "backups": [
                {"name": "good-before", "database": database},
                {"name": "broken", "database": database, **broken},
                {"name": "good-after", "database": database},
            ],
        },
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    report = json.loads(result.stdout)
    return result.returncode, {job["job"]: job for job in report["jobs"]}, result.stderr


def files_of(directory: Path, job: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f"t_{job}_"))


@pytest.mark.parametrize(
    ("behaviour", "expected_error"),
    [
        (
            "dies-halfway",
            "pg_dump exited with code 1: pg_dump: error: Dumping the contents of "
            'table "t" failed | pg_dump: detail: server closed the connection',
        ),
        ("truncated-exit-0", "pg_dump exited 0 but its output ends without the completion marker"),
        ("floods-stderr", "pg_dump exited with code 3"),
    ],
)
def test_a_failing_dump_fails_alone_and_leaves_nothing(
    pg: ThrowawayCluster, small_db: str, tmp_path: Path, behaviour: str, expected_error: str
) -> None:
    fake = fake_pg_dump(tmp_path, behaviour)
    code, jobs, stderr = backup_with(pg, tmp_path, {"pg_dump_path": str(fake)}, small_db)
    assert code == 1
    assert jobs["broken"]["status"] == "failed"
    assert jobs["broken"]["error"].startswith(expected_error)
    assert jobs["broken"]["file"] is None
    assert jobs["good-before"]["status"] == jobs["good-after"]["status"] == "succeeded"
    out = tmp_path / "out"
    assert files_of(out, "broken") == []  # neither a final file, nor .partial, nor manifest
    assert len(files_of(out, "good-before")) == 2  # the dump and its manifest
    assert "FAILED   broken" in stderr


def test_the_stderr_tail_is_bounded(pg: ThrowawayCluster, small_db: str, tmp_path: Path) -> None:
    fake = fake_pg_dump(tmp_path, "floods-stderr")
    _, jobs, _ = backup_with(pg, tmp_path, {"pg_dump_path": str(fake)}, small_db)
    error = jobs["broken"]["error"]
    assert error.endswith("pg_dump: error: the last words")
    assert len(error) < 25_000  # 10 MiB were written; a tail of 20 lines is kept


def test_a_hanging_dump_is_stopped_by_its_timeout(
    pg: ThrowawayCluster, small_db: str, tmp_path: Path
) -> None:
    fake = fake_pg_dump(tmp_path, "hangs")
    started = tmp_path / "started"
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, out),
            "backups": [
                {"name": "stuck", "database": small_db, "pg_dump_path": str(fake), "timeout": "1s"},
                {"name": "fine", "database": small_db},
            ],
        },
    )
    result = run_cli(
        "backup", "-c", str(config), "--json", env=cli_env(pg, FAKE_STARTED_FILE=str(started))
    )
    assert result.returncode == 1
    jobs = {job["job"]: job for job in json.loads(result.stdout)["jobs"]}
    assert jobs["stuck"]["error"].startswith("timed out after 1.0s")
    assert jobs["fine"]["status"] == "succeeded"
    assert files_of(out, "stuck") == []
    pid = int(started.read_text())
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped, not left running


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ({"password": "wrong-secret"}, "connection check: auth failed: "),
        ({"database": "no_such_db"}, "connection check: database missing: "),
        ({"port": 1}, "connection check: unreachable: "),
        # A backup's own password_file replaces the password inherited from defaults.
        ({"password_file": "/nonexistent/secret"}, "password_file /nonexistent/secret: No such"),
    ],
)
def test_connection_problems_fail_fast_with_a_reason(
    pg: ThrowawayCluster, small_db: str, tmp_path: Path, broken: dict[str, Any], expected: str
) -> None:
    code, jobs, _ = backup_with(pg, tmp_path, broken, small_db)
    assert code == 1
    assert jobs["broken"]["status"] == "failed"
    assert jobs["broken"]["error"].startswith(expected), jobs["broken"]["error"]
    assert "wrong-secret" not in jobs["broken"]["error"]
    assert jobs["good-before"]["status"] == jobs["good-after"]["status"] == "succeeded"


def test_a_pg_dump_older_than_the_server_is_refused_before_dumping(
    pg: ThrowawayCluster, small_db: str, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    old = fake_pg_dump(tmp_path, "hangs", version="14.10")
    code, jobs, _ = backup_with(pg, tmp_path, {"pg_dump_path": str(old)}, small_db)
    assert code == 1
    assert jobs["broken"]["error"].startswith(
        "the server runs PostgreSQL 15 but no pg_dump of version 15 or newer is installed "
        f"(found: {old} (14.10))"
    )
    assert not started.exists()  # it was never started to dump
    assert jobs["good-before"]["status"] == "succeeded"


def test_without_a_configured_password_libpq_pgpass_applies(
    pg: ThrowawayCluster, small_db: str, tmp_path: Path
) -> None:
    pgpass = tmp_path / "pgpass"
    escaped = pg.password.replace("\\", "\\\\").replace(":", "\\:")
    pgpass.write_text(f"{pg.host}:{pg.port}:*:{pg.superuser}:{escaped}\n")
    pgpass.chmod(0o600)
    defaults = server_defaults(pg, tmp_path / "out")
    del defaults["password"]
    config = write_config(
        tmp_path / "backup.yml",
        {"defaults": defaults, "backups": [{"name": "via-pgpass", "database": small_db}]},
    )
    without = run_cli("backup", "-c", str(config), "--json", env=cli_env())
    assert without.returncode == 1  # no password anywhere: fails, never prompts
    assert "auth failed" in json.loads(without.stdout)["jobs"][0]["error"]
    with_pgpass = run_cli(
        "backup", "-c", str(config), "--json", env=cli_env(PGPASSFILE=str(pgpass))
    )
    assert with_pgpass.returncode == 0, with_pgpass.stdout
