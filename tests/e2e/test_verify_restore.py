"""`db-backup verify --restore`: each backup restored into a throwaway server of its own and
checked against the rows, sequences and large objects its manifest recorded."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    run_cli,
    server_defaults,
    write_config,
)
from tests.e2e.test_backup_restore import VARIED
from tests.e2e.test_restore import databases
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

OWNED = """
CREATE TABLE ledger (id int PRIMARY KEY, amount numeric);
INSERT INTO ledger SELECT g, g * 1.5 FROM generate_series(1, 50) g;
ALTER TABLE ledger OWNER TO proof_owner;
GRANT SELECT ON ledger TO proof_reader;
"""


def sandbox_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("db-backup-pg-*"))


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone


def processes_with(text: bytes) -> list[int]:
    """Live processes whose command line (a server's process title) holds `text`."""
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if text in cmdline(pid)]


def sandbox_processes(folders: set[Path]) -> list[int]:
    """Live servers started from one of these throwaway servers' folders."""
    return [pid for folder in folders for pid in processes_with(str(folder).encode())]


@pytest.fixture(scope="module")
def roles(pg: ThrowawayCluster) -> None:
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        for role in ("proof_owner", "proof_reader"):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))


def configure(pg: ThrowawayCluster, tmp_path: Path, *backups: dict[str, Any]) -> Path:
    return write_config(
        tmp_path / "backup.yml",
        {"defaults": server_defaults(pg, tmp_path / "out"), "backups": list(backups)},
    )


def back_up(config: Path, pg: ThrowawayCluster) -> dict[str, dict[str, Any]]:
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    return {job["job"]: job for job in json.loads(result.stdout)["jobs"]}


def verify_restore(config: Path, pg: ThrowawayCluster, *args: str) -> Any:
    return run_cli("verify", "-c", str(config), "--restore", *args, env=cli_env(pg), timeout=300)


def listed(config: Path) -> dict[str, Any]:
    result = run_cli("list", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    return {Path(e["file"]).name: e for e in json.loads(result.stdout)["backups"]}


def test_good_backups_restore_with_every_row_and_the_result_is_recorded(
    pg: ThrowawayCluster, roles: None, tmp_path: Path
) -> None:
    create_database(pg, "proof_varied", VARIED)
    create_database(pg, "proof_owned", OWNED)
    config = configure(
        pg,
        tmp_path,
        {"name": "varied", "database": "proof_varied", "compression": {"algorithm": "zstd"}},
        {"name": "custom", "database": "proof_varied", "format": "custom"},
        # Owned by a role a fresh server lacks: restores only after the globals.
        {"name": "owned", "database": "proof_owned", "globals": True},
    )
    jobs = back_up(config, pg)
    manifest = json.loads(Path(jobs["varied"]["manifest"]).read_text())
    assert manifest["contents"]["tables"] == {
        '"Weird Schema"."Odd ""Table"" Name"': 3000,
        'public."UPPER"': 2,
    }
    assert manifest["contents"]["sequences"]['"Weird Schema"."counter seq"'] == [4242, True]
    assert manifest["contents"]["large_objects"] == 2
    # Custom format: counted from the SQL the pg_restore read-through makes of it.
    custom = json.loads(Path(jobs["custom"]["manifest"]).read_text())
    assert custom["contents"] == manifest["contents"]
    before = sandbox_folders()

    result = verify_restore(config, pg)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {
        line.split()[1]: line for line in result.stdout.splitlines() if line[:2] in ("OK", "FA")
    }
    assert set(lines) == {jobs[job]["file"] for job in ("varied", "custom", "owned")}
    assert (
        "2 tables, 3002 rows, 3 sequences, 2 large objects as recorded"
        in lines[jobs["varied"]["file"]]
    )
    assert "globals applied first" in lines[jobs["owned"]["file"]]
    assert "2 tables, 3002 rows" in lines[jobs["custom"]["file"]]
    assert "3 restore-tested, 0 failed" in result.stderr
    assert sandbox_folders() == before

    entries = listed(config)
    for job in ("varied", "owned"):
        name = Path(jobs[job]["file"]).name
        tested = entries[name]["restore_test"]
        assert tested["ok"] is True
        assert tested["sandbox"].startswith("throwaway PostgreSQL 15.")
        assert tested["sha256"] == jobs[job]["sha256"]
        assert Path(jobs[job]["file"] + ".verify.json").exists()
    table = run_cli("list", "-c", str(config)).stdout
    assert "restore-tested" in table

    # Retention takes the record with its backup.
    document = json.loads(config.read_text())
    document["backups"][0]["retention"] = {"keep_last": 1}
    config.write_text(json.dumps(document))
    again = back_up(config, pg)
    assert not Path(jobs["varied"]["file"] + ".verify.json").exists()
    assert not Path(jobs["varied"]["file"]).exists()
    assert Path(again["varied"]["file"]).exists()


def test_a_dump_holding_fewer_rows_than_recorded_fails_naming_the_table(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    create_database(pg, "proof_rows", "CREATE TABLE orders AS SELECT generate_series(1, 10) AS n;")
    config = configure(pg, tmp_path, {"name": "rows", "database": "proof_rows"})
    (job,) = back_up(config, pg).values()
    dump = Path(job["file"])
    text = gzip.decompress(dump.read_bytes())
    cut = text.replace(b"8\n9\n10\n\\.\n", b"\\.\n")
    assert cut != text
    dump.write_bytes(gzip.compress(cut))
    manifest_path = Path(job["manifest"])
    record = json.loads(manifest_path.read_text())
    record.update(
        sha256=hashlib.sha256(dump.read_bytes()).hexdigest(),
        stored_bytes=dump.stat().st_size,
        raw_bytes=len(cut),
    )  # everything matches again, except the recorded contents
    manifest_path.write_text(json.dumps(record))

    before = sandbox_folders()
    result = verify_restore(config, pg)
    assert result.returncode == 1
    assert sandbox_folders() == before
    assert f"FAILED  {dump}: public.orders: 10 rows recorded, 7 restored" in result.stdout
    assert "0 restore-tested, 1 failed" in result.stderr
    tested = listed(config)[dump.name]["restore_test"]
    assert tested["ok"] is False
    assert tested["problems"] == ["public.orders: 10 rows recorded, 7 restored"]
    table = " ".join(run_cli("list", "-c", str(config)).stdout.split())
    assert "restore test FAILED" in table


def test_a_dump_that_cannot_restore_on_a_fresh_server_fails_quoting_the_error(
    pg: ThrowawayCluster, roles: None, tmp_path: Path
) -> None:
    create_database(pg, "proof_no_globals", OWNED)
    config = configure(pg, tmp_path, {"name": "lonely", "database": "proof_no_globals"})
    (job,) = back_up(config, pg).values()
    before = sandbox_folders()
    result = verify_restore(config, pg)
    assert result.returncode == 1
    assert sandbox_folders() == before
    assert f"FAILED  {job['file']}: " in result.stdout
    assert 'role "proof_owner" does not exist' in result.stdout


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_a_restore_test_leaves_no_sandbox(
    pg: ThrowawayCluster,
    big_db: str,
    tmp_path: Path,
    start_cli: StartCli,
    stop: signal.Signals,
    code: int,
) -> None:
    config = configure(pg, tmp_path, {"name": "big", "database": big_db})
    back_up(config, pg)
    before = sandbox_folders()
    process = start_cli("verify", "-c", str(config), "--restore", env=cli_env(pg))

    def copying() -> list[int]:
        # A backend's process title: "postgres: postgres db_backup_test_…_restoring_… COPY"
        return [pid for pid in processes_with(b"db_backup_test_") if b"COPY" in cmdline(pid)]

    wait_for(copying, what="the sandbox copying rows", process=process)
    started = sandbox_folders() - before
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert sandbox_folders() == before
    assert sandbox_processes(started) == []
    assert processes_with(b"db_backup_test_") == []


def test_a_configured_scratch_server_gets_a_database_per_test_and_keeps_nothing_else(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    create_database(
        pg,
        "proof_scratch",
        "CREATE TABLE t AS SELECT generate_series(1, 7) AS n;"
        # Inheritance: the parent's COPY holds its own 2 rows, the child's its 3.
        "CREATE TABLE parent (n int); CREATE TABLE child () INHERITS (parent);"
        "INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (3), (4), (5);",
    )
    document = {
        "defaults": server_defaults(pg, tmp_path / "out"),
        "backups": [{"name": "scratch", "database": "proof_scratch"}],
        "verify": {
            "sandbox": {
                "host": pg.host,
                "port": pg.port,
                "username": pg.superuser,
                "password": "${TEST_PG_PASSWORD}",
            }
        },
    }
    config = write_config(tmp_path / "backup.yml", document)
    (job,) = back_up(config, pg).values()

    before, folders = databases(pg), sandbox_folders()
    result = verify_restore(config, pg)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK      {job['file']} restore-tested" in result.stdout
    assert "3 tables, 12 rows" in result.stdout
    assert databases(pg) == before  # its test database is gone, nothing else changed
    assert sandbox_folders() == folders  # no throwaway server was started
    tested = listed(config)[Path(job["file"]).name]["restore_test"]
    assert tested["sandbox"] == f"scratch server {pg.host}:{pg.port}"


def test_a_sandbox_that_cannot_start_fails_each_test_with_the_reason(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    create_database(pg, "proof_nostart", "CREATE TABLE t AS SELECT 1 AS n;")
    config = configure(pg, tmp_path, {"name": "nostart", "database": "proof_nostart"})
    (job,) = back_up(config, pg).values()
    # Server binaries whose initdb fails (readable by `nobody`, who runs it when we are root).
    bindir = Path(tempfile.mkdtemp(prefix="fake-pg-bin-"))
    try:
        bindir.chmod(0o755)
        initdb = bindir / "initdb"
        initdb.write_text("#!/bin/sh\necho 'initdb: error: simulated failure' >&2\nexit 1\n")
        initdb.chmod(0o755)
        env = {**cli_env(pg), "DB_BACKUP_PG_BINDIR": str(bindir)}
        result = run_cli("verify", "-c", str(config), "--restore", env=env)
    finally:
        shutil.rmtree(bindir)
    assert result.returncode == 1
    assert (
        f"FAILED  {job['file']}: the throwaway PostgreSQL did not start: initdb exited with "
        "code 1: initdb: error: simulated failure"
    ) in result.stdout
    assert "Traceback" not in result.stderr
