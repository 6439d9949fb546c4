"""The `db-backup` command as a user meets it: commands, exit codes, output, signals."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from db_backup import __version__
from db_backup.lock import LOCK_NAME
from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    is_gone,
    pg_dump_processes,
    run_cli,
    server_defaults,
    write_config,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cli_db(pg: ThrowawayCluster) -> str:
    create_database(
        pg, "cli_db", "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 5000) g;"
    )
    return "cli_db"


def config_for(
    pg: ThrowawayCluster, tmp_path: Path, backups: list[dict[str, Any]], **top: Any
) -> Path:
    return write_config(
        tmp_path / "backup.yml",
        {**top, "defaults": server_defaults(pg, tmp_path / "out"), "backups": backups},
    )


def test_version_and_help_name_the_exit_codes() -> None:
    version = run_cli("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"db-backup {__version__}")
    helptext = run_cli("--help")
    assert helptext.returncode == 0
    for command in ("generate", "validate", "backup", "demo"):
        assert command in helptext.stdout
    assert "2 usage or config error" in helptext.stdout
    assert "130" in helptext.stdout
    assert "143" in helptext.stdout


def test_python_dash_m_and_console_script_agree() -> None:
    script = Path(sys.executable).with_name("db-backup")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == f"db-backup {__version__}"


def test_generate_writes_a_sample_that_validates_and_refuses_to_overwrite(tmp_path: Path) -> None:
    printed = run_cli("generate")
    assert printed.returncode == 0
    assert "backups:" in printed.stdout
    target = tmp_path / "backup.yml"
    assert run_cli("generate", "-o", str(target)).returncode == 0
    assert target.read_text() == printed.stdout
    validated = run_cli("validate", "-c", str(target))
    assert validated.returncode == 0, validated.stderr
    assert "OK, 3 backups" in validated.stdout

    target.write_text("# mine\n")
    refused = run_cli("generate", "-o", str(target))
    assert refused.returncode == 2
    assert "exists; use --force" in refused.stderr
    assert target.read_text() == "# mine\n"
    assert run_cli("generate", "-o", str(target), "--force").returncode == 0
    assert target.read_text() == printed.stdout


def test_the_example_config_is_the_generated_sample() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "backup.yml"
    assert example.read_text() == run_cli("generate").stdout
    assert run_cli("validate", "-c", str(example)).returncode == 0


def test_config_errors_exit_2_with_positions_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yml"
    config.write_text(
        "backups:\n  - name: a\n    database: a\n    port: abc\n    storage: {path: /x}\n"
        "  - name: a\n    databse: b\n    storage: {path: /x}\n"
    )
    for command in (["validate"], ["backup"], ["backup", "--dry-run"]):
        result = run_cli(*command, "-c", str(config))
        assert result.returncode == 2
        assert f'{config}:4:11: backups[0].port: expected int, got "abc"' in result.stderr
        assert (
            f"{config}:7:5: backups[1].databse: unknown key 'databse'; did you mean 'database'?"
            in result.stderr
        )
        assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli("validate").returncode == 2  # -c missing
    missing = run_cli("validate", "-c", str(tmp_path / "none.yml"))
    assert missing.returncode == 2
    assert "file not found" in missing.stderr
    bad_level = run_cli("--log-level", "loud", "validate", "-c", "x")
    assert bad_level.returncode == 2
    assert "invalid log level 'loud'" in bad_level.stderr
    assert run_cli("backup", "-c", "x", "-j", "0").returncode == 2


def test_config_path_from_the_environment(
    pg: ThrowawayCluster, cli_db: str, tmp_path: Path
) -> None:
    config = config_for(pg, tmp_path, [{"name": "a", "database": cli_db}])
    result = run_cli("validate", env=cli_env(pg, DB_BACKUP_CONFIG=str(config)))
    assert result.returncode == 0, result.stderr
    assert "OK, 1 backups" in result.stdout


def test_validate_connect_reports_each_job(
    pg: ThrowawayCluster, cli_db: str, tmp_path: Path
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts the TCP handshake, never answers: a server that hangs
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound but not listening: connection refused
    try:
        config = config_for(
            pg,
            tmp_path,
            [
                {"name": "ok", "database": cli_db},
                {"name": "badpw", "database": cli_db, "password": "nope"},
                {"name": "nodb", "database": "missing_db"},
                {
                    "name": "slow",
                    "database": cli_db,
                    "port": silent.getsockname()[1],
                    "connect_timeout": "1s",
                },
                {"name": "down", "database": cli_db, "port": closed.getsockname()[1]},
            ],
        )
        result = run_cli("validate", "-c", str(config), "--connect", env=cli_env(pg))
    finally:
        silent.close()
        closed.close()
    assert result.returncode == 1
    lines = {line.split(":")[0].strip(): line for line in result.stdout.splitlines()[1:]}
    assert lines["ok"].startswith(
        f"  ok: reachable ('{cli_db}' on 127.0.0.1:{pg.port}, PostgreSQL 15."
    )
    assert lines["badpw"].startswith("  badpw: auth failed")
    assert lines["nodb"].startswith("  nodb: database missing")
    assert lines["slow"].startswith("  slow: timed out")
    assert lines["down"].startswith("  down: unreachable")
    assert "nope" not in result.stdout + result.stderr


def test_dry_run_prints_the_plan_and_writes_nothing(
    pg: ThrowawayCluster, cli_db: str, tmp_path: Path
) -> None:
    config = config_for(
        pg,
        tmp_path,
        [
            {"name": "one", "database": cli_db},
            {"name": "all", "database": "*", "exclude": ["postgres", "varied*", "conc_*", "odd*"]},
        ],
    )
    result = run_cli("backup", "-c", str(config), "--dry-run", env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    assert "one" in result.stdout
    assert f"all.{cli_db}" in result.stdout  # "*" was expanded against the server
    assert str(tmp_path / "out" / "t_one_") in result.stdout
    assert not (tmp_path / "out").exists()


def test_a_wildcard_matching_nothing_is_warned_about(pg: ThrowawayCluster, tmp_path: Path) -> None:
    config = config_for(pg, tmp_path, [{"name": "none", "database": "*", "exclude": ["*"]}])
    result = run_cli("backup", "-c", str(config), env=cli_env(pg))
    assert result.returncode == 0
    assert "backup 'none': database \"*\" matched no databases on its server" in result.stderr
    assert "0 succeeded, 0 failed, 0 cancelled" in result.stdout


def test_back_to_back_runs_both_succeed(pg: ThrowawayCluster, cli_db: str, tmp_path: Path) -> None:
    """The second run may start within the second the first ended in: it must not collide."""
    config = config_for(pg, tmp_path, [{"name": "quick", "database": cli_db}])
    files = []
    for _ in range(3):
        result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
        assert result.returncode == 0, result.stderr
        files.append(json.loads(result.stdout)["jobs"][0]["file"])
    assert len(set(files)) == 3


def test_name_selection(pg: ThrowawayCluster, cli_db: str, tmp_path: Path) -> None:
    config = config_for(
        pg, tmp_path, [{"name": "a", "database": cli_db}, {"name": "b", "database": cli_db}]
    )
    result = run_cli("backup", "-c", str(config), "-n", "b", "--json", env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    assert [job["job"] for job in json.loads(result.stdout)["jobs"]] == ["b"]
    unknown = run_cli("backup", "-c", str(config), "-n", "c", env=cli_env(pg))
    assert unknown.returncode == 2
    assert "no backup named 'c'" in unknown.stderr
    assert "backups are: a, b" in unknown.stderr


def test_piped_output_is_plain_lines_and_a_summary(
    pg: ThrowawayCluster, cli_db: str, tmp_path: Path
) -> None:
    config = config_for(
        pg,
        tmp_path,
        [{"name": "good", "database": cli_db}, {"name": "bad", "database": "missing_db"}],
    )
    result = run_cli("backup", "-c", str(config), env=cli_env(pg, NO_COLOR=""))
    assert result.returncode == 1
    assert "\x1b" not in result.stdout + result.stderr
    stderr_lines = result.stderr.splitlines()
    assert any(" start    good (database 'cli_db' on " in line for line in stderr_lines)
    assert any(" done     good: " in line for line in stderr_lines)
    assert any(
        " FAILED   bad (database 'missing_db' on " in line and "database missing" in line
        for line in stderr_lines
    )
    assert "1 succeeded, 1 failed, 0 cancelled" in result.stdout
    assert str(tmp_path / "out" / "t_good_") in result.stdout  # whole paths, not cut

    quiet = run_cli("backup", "-c", str(config), "--quiet", env=cli_env(pg))
    assert quiet.returncode == 1
    assert " start " not in quiet.stderr
    assert " done " not in quiet.stderr
    assert "FAILED   bad" in quiet.stderr


def test_live_progress_on_a_terminal(pg: ThrowawayCluster, cli_db: str, tmp_path: Path) -> None:
    config = config_for(pg, tmp_path, [{"name": f"tty{i}", "database": cli_db} for i in range(3)])
    output = run_in_terminal(
        ["backup", "-c", str(config)], cli_env(pg, NO_COLOR="", TERM="xterm-256color")
    )
    assert "\x1b[" in output  # a live display: escape codes, unlike the piped run
    assert "jobs" in output
    assert "3 succeeded, 0 failed, 0 cancelled" in output


def run_in_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run the CLI with a pseudo-terminal as stdout and stderr; returns all it wrote."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "db_backup", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**env, "COLUMNS": "150"},
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the CLI did not finish within {timeout}s"
            readable, _, _ = select.select([leader], [], [], remaining)
            if not readable:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal closed with the last writer
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=30) == 0
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait()
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def running_backup(
    pg: ThrowawayCluster, big_db: str, tmp_path: Path, start_cli: StartCli
) -> tuple[subprocess.Popen[str], Path]:
    out = tmp_path / "out"
    config = config_for(
        pg,
        tmp_path,
        [{"name": f"big{i}", "database": big_db} for i in range(3)],
        concurrency=2,
    )
    process = start_cli("backup", "-c", str(config), "--json", env=cli_env(pg))

    def streaming() -> bool:  # two dumps are writing into their partial files
        partials = list(out.glob("*.partial")) if out.exists() else []
        return len(partials) == 2 and all(p.stat().st_size > 0 for p in partials)

    wait_for(streaming, what="two dumps to be writing", process=process)
    return process, out


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_cancels_everything_cleanly(
    pg: ThrowawayCluster,
    running_backup: tuple[subprocess.Popen[str], Path],
    sig: signal.Signals,
    code: int,
) -> None:
    process, out = running_backup
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    report = json.loads(stdout)
    assert report["interrupted_by"] == sig.name
    statuses = sorted(job["status"] for job in report["jobs"])
    assert statuses == ["cancelled"] * 3
    assert f"{sig.name} received: cancelling" in stderr
    # No partial, no final file, no manifest: only the lock file, emptied on a clean exit.
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    assert (out / LOCK_NAME).read_text() == ""
    assert pg_dump_processes(pg.port) == []


def test_a_second_sigint_stops_at_once(
    pg: ThrowawayCluster, cli_db: str, tmp_path: Path, start_cli: StartCli
) -> None:
    """The first SIGINT asks children to stop (SIGTERM, 5 s grace); this child ignores that, so
    only the second SIGINT, which kills at once, ends the run quickly."""
    from tests.fakes import fake_pg_dump

    started = tmp_path / "started"
    stubborn = fake_pg_dump(tmp_path, "ignores-sigterm")
    out = tmp_path / "out"
    config = config_for(
        pg, tmp_path, [{"name": "stubborn", "database": cli_db, "pg_dump_path": str(stubborn)}]
    )
    process = start_cli(
        "backup", "-c", str(config), env=cli_env(pg, FAKE_STARTED_FILE=str(started))
    )
    wait_for(started.exists, what="the stubborn child to start", process=process)
    child = int(started.read_text())
    assert process.stderr is not None
    process.send_signal(signal.SIGINT)
    while "SIGINT received" not in process.stderr.readline():
        pass
    assert Path(f"/proc/{child}").exists()  # SIGTERM did not stop it
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "SIGINT again: stopped immediately" in rest
    wait_for(lambda: is_gone(child), what="the child to be killed")
    assert [p.name for p in out.iterdir() if p.name.endswith(".partial")] == []


def test_validate_warns_about_an_exposed_literal_password(tmp_path: Path) -> None:
    config = tmp_path / "backup.yml"
    config.write_text(
        "backups:\n  - name: a\n    database: a\n    password: hunter2\n    storage: {path: /x}\n"
    )
    config.chmod(0o644)
    result = run_cli("validate", "-c", str(config))
    assert result.returncode == 0
    assert f"db-backup: warning: {config} is readable by other users (mode 0644)" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
