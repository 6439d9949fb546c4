"""Bounded time everywhere: an S3 endpoint that stops answering fails only its target, within
the bound its timeouts give, and a signal stops every command promptly even while a thread is
blocked on it.

Two kinds of silence, both real: a loopback "black hole" that accepts connections and never
answers (a wedged server, a firewall that lets the handshake through), and the suite's own
SeaweedFS frozen with SIGSTOP after it took the first part of an upload.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from db_backup.config.schema import Duration, S3Storage
from db_backup.lock import LOCK_NAME
from db_backup.pgcluster import ThrowawayCluster
from tests.blackhole import BlackHole
from tests.conftest import (
    StartCli,
    cli_env,
    is_gone,
    pg_dump_processes,
    run_cli,
    s3_storage,
    server_defaults,
    write_config,
)
from tests.fakes import fake_pg_dump
from tests.seaweed import SeaweedServer
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


# Short bounds, so that a test waits them out in seconds; and long ones, so that a run is
# surely still blocked when a signal arrives.
@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float
    attempts: int

    @property
    def config(self) -> dict[str, Any]:
        """As a target's keys."""
        return {
            "connect_timeout": f"{self.connect:g}s",
            "read_timeout": f"{self.read:g}s",
            "max_attempts": self.attempts,
        }

    @property
    def bound(self) -> float:
        """The documented bound on one request to a silent endpoint."""
        target = S3Storage(
            bucket="b",
            connect_timeout=Duration(self.connect),
            read_timeout=Duration(self.read),
            max_attempts=self.attempts,
        )
        return target.request_bound


QUICK = Timeouts(connect=1, read=2, attempts=2)
QUICKER = Timeouts(connect=1, read=1, attempts=2)
SLOW = Timeouts(connect=60, read=60, attempts=1)
# Start-up, a small dump and the commit on a busy shared machine: generous on purpose. The
# bound is what must not be paid several times over, which the connection counts show.
SLACK_SECONDS = 30.0
# What the issue asks of a signal: the process is gone within this, whatever it waits on.
SIGNAL_EXIT_SECONDS = 5.0
SIGNAL_CODES = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


def silent_target(hole: BlackHole, timeouts: Timeouts) -> dict[str, Any]:
    return {
        "kind": "s3",
        "bucket": "backups",
        "prefix": "bounded",
        "endpoint_url": hole.endpoint,
        "path_style": True,
        "access_key_id": "${AWS_ACCESS_KEY_ID}",
        "secret_access_key": "${AWS_SECRET_ACCESS_KEY}",
        **timeouts.config,
    }


@pytest.fixture(scope="module")
def small_db(pg: ThrowawayCluster) -> str:
    from tests.conftest import create_database

    create_database(pg, "bounded", "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g;")
    return "bounded"


@pytest.fixture
def hole() -> Iterator[BlackHole]:
    with BlackHole() as black_hole:
        yield black_hole


def config_with(
    pg: ThrowawayCluster, tmp_path: Path, database: str, storage: list[Any], **extra: Any
) -> Path:
    backup = {"name": "shop", "database": database, "storage": storage, **extra}
    document = {"defaults": server_defaults(pg, tmp_path / "out"), "backups": [backup]}
    return write_config(tmp_path / "backup.yml", document)


def env_for(pg: ThrowawayCluster) -> dict[str, str]:
    return cli_env(pg, AWS_ACCESS_KEY_ID="someone", AWS_SECRET_ACCESS_KEY="something")


def timed(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_cli(*args, env=env, timeout=300)
    return result, time.monotonic() - started


def test_a_silent_endpoint_fails_only_its_target_within_the_bound(
    pg: ThrowawayCluster, small_db: str, hole: BlackHole, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    storage = [{"path": str(folder)}, silent_target(hole, QUICK)]
    config = config_with(pg, tmp_path, small_db, storage)
    result, elapsed = timed("backup", "-c", str(config), "--json", env=env_for(pg))

    assert result.returncode == 1, result.stderr
    job = json.loads(result.stdout)["jobs"][0]
    local, remote = job["targets"]
    assert local["stored"], job["error"]
    assert Path(local["file"]).is_file()
    assert Path(local["manifest"]).is_file()
    assert not remote["stored"]
    assert "timed out" in remote["error"]
    assert f"target {remote['target']} failed" in job["error"]
    assert job["error_kind"] == "targets"
    # The endpoint was asked one question (with its retries), not once per step and job.
    assert hole.connections <= QUICK.attempts
    assert elapsed < QUICK.bound + SLACK_SECONDS
    # The wait was announced while it lasted, and how long it took once it was over.
    # (the first question to the bucket: is the new file name free?)
    waiting = f"checking that the new file names are free on {local['target']}, {remote['target']}"
    assert f"waiting  {waiting}" in result.stderr
    assert f"waited   {waiting}" in result.stderr


def test_a_server_that_stalls_mid_upload_fails_only_its_target(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path, start_cli: StartCli
) -> None:
    prefix = "stalls-mid-upload"
    held = HeldDump.start(pg, s3, tmp_path, start_cli, prefix, QUICK)
    with s3.paused():
        started = time.monotonic()
        held.release()
        stdout, stderr = held.process.communicate(timeout=QUICK.bound + 120)
        elapsed = time.monotonic() - started

    assert held.process.returncode == 1, stderr
    job = json.loads(stdout)["jobs"][0]
    local, remote = job["targets"]
    assert local["stored"], job["error"]
    assert Path(local["manifest"]).is_file()
    manifest = json.loads(Path(local["manifest"]).read_text())
    stored = Path(local["file"]).read_bytes()
    assert manifest["stored_bytes"] == len(stored) > 12 * 1024 * 1024  # both halves
    assert stored.endswith(b"-- PostgreSQL database dump complete\n--\n")
    assert not remote["stored"]
    assert "timed out" in remote["error"]
    assert elapsed < QUICK.bound + SLACK_SECONDS
    assert s3.objects(f"{prefix}/") == []  # nothing under a final key


class HeldDump:
    """A backup to a folder and the suite's bucket whose (fake) dump wrote 6 MiB, then waits;
    by the time `start` returns, the bucket holds the upload's first part."""

    def __init__(self, process: subprocess.Popen[str], started: Path, gate: Path) -> None:
        self.process, self.started, self.gate = process, started, gate

    @classmethod
    def start(
        cls,
        pg: ThrowawayCluster,
        s3: SeaweedServer,
        tmp_path: Path,
        start_cli: StartCli,
        prefix: str,
        timeouts: Timeouts,
    ) -> HeldDump:
        started, gate = tmp_path / "started", tmp_path / "gate"
        storage = [{"path": str(tmp_path / "folder")}, s3_storage(s3, prefix, **timeouts.config)]
        config = config_with(
            pg,
            tmp_path,
            "postgres",
            storage,
            pg_dump_path=str(fake_pg_dump(tmp_path, "pauses-halfway")),
            compression={"algorithm": "none"},  # 6 MiB stay 6 MiB: more than a 5 MiB part
        )
        env = cli_env(pg, s3=s3, FAKE_STARTED_FILE=str(started), FAKE_GATE=str(gate))
        process = start_cli("backup", "-c", str(config), "--json", env=env)
        wait_for(started.exists, what="the dump's first half", process=process)
        wait_for(
            lambda: s3.parts_uploaded(f"{prefix}/") >= 1,
            what="the first part to reach the bucket",
            process=process,
        )
        return cls(process, started, gate)

    def release(self) -> None:
        """Let the dump write its second half and end."""
        self.gate.touch()

    @property
    def dump_pid(self) -> int:
        return int(self.started.read_text())


def assert_stopped_cleanly(
    process: subprocess.Popen[str], sig: signal.Signals, code: int, folder: Path, pg: Any
) -> str:
    """Signal `process`; it must be gone within SIGNAL_EXIT_SECONDS with the signal's code,
    leaving no partial (or unfinished) file and no child. Returns its stderr."""
    sent = time.monotonic()
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    elapsed = time.monotonic() - sent
    assert process.returncode == code, stderr
    assert elapsed < SIGNAL_EXIT_SECONDS, f"exited {elapsed:.1f}s after {sig.name}: {stderr}"
    leftovers = [p.name for p in folder.iterdir()] if folder.exists() else []
    assert [name for name in leftovers if name != LOCK_NAME] == []
    assert pg_dump_processes(pg.port) == []
    return stderr


@pytest.mark.parametrize(("sig", "code"), SIGNAL_CODES)
def test_a_signal_stops_a_run_blocked_on_a_silent_endpoint_before_any_dump(
    pg: ThrowawayCluster,
    small_db: str,
    hole: BlackHole,
    tmp_path: Path,
    start_cli: StartCli,
    sig: signal.Signals,
    code: int,
) -> None:
    folder = tmp_path / "folder"
    config = config_with(pg, tmp_path, small_db, [{"path": str(folder)}, silent_target(hole, SLOW)])
    process = start_cli("backup", "-c", str(config), env=env_for(pg))
    wait_for(lambda: hole.connections >= 1, what="the run to ask the endpoint", process=process)
    stderr = assert_stopped_cleanly(process, sig, code, folder, pg)
    assert f"interrupted by {sig.name} before any dump started" in stderr


@pytest.mark.parametrize(("sig", "code"), SIGNAL_CODES)
def test_a_signal_stops_a_run_blocked_mid_upload(
    pg: ThrowawayCluster,
    s3: SeaweedServer,
    tmp_path: Path,
    start_cli: StartCli,
    sig: signal.Signals,
    code: int,
) -> None:
    held = HeldDump.start(pg, s3, tmp_path, start_cli, f"signal-mid-upload-{code}", SLOW)
    with s3.paused():
        held.release()
        # The dump ends; its last parts cannot be sent: the run now waits on the server.
        wait_for(lambda: is_gone(held.dump_pid), what="the dump to end", process=held.process)
        assert_stopped_cleanly(held.process, sig, code, tmp_path / "folder", pg)


@pytest.fixture(scope="module")
def shared_hole() -> Iterator[BlackHole]:
    with BlackHole() as black_hole:
        yield black_hole


@pytest.fixture(scope="module")
def backup_beside_a_silent_target(
    pg: ThrowawayCluster, small_db: str, shared_hole: BlackHole, tmp_path_factory: Any
) -> tuple[Path, Path]:
    """A config whose backup has a folder (holding one backup) and a silent S3 target."""
    tmp_path = tmp_path_factory.mktemp("beside-a-silent-target")
    folder = tmp_path / "folder"
    storage = [{"path": str(folder)}, silent_target(shared_hole, QUICKER)]
    config = config_with(pg, tmp_path, small_db, storage, retention={"keep_last": 1})
    result = run_cli("backup", "-c", str(config), env=env_for(pg))
    assert result.returncode == 1, result.stderr
    (backup,) = folder.glob("shop_*.sql.gz")
    return config, backup


@pytest.mark.parametrize(
    ("command", "served"),
    [
        (["list"], "shop"),
        (["prune", "--dry-run"], "keep    "),
        (["verify"], "OK      "),
        (["validate", "--connect"], "target local:"),
    ],
)
def test_other_commands_name_a_silent_target_within_the_bound_and_serve_the_rest(
    pg: ThrowawayCluster,
    shared_hole: BlackHole,
    backup_beside_a_silent_target: tuple[Path, Path],
    command: list[str],
    served: str,
) -> None:
    config, backup = backup_beside_a_silent_target
    asked_before = shared_hole.connections
    result, elapsed = timed(command[0], "-c", str(config), *command[1:], env=env_for(pg))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert elapsed < QUICKER.bound + SLACK_SECONDS
    assert shared_hole.connections - asked_before <= QUICKER.attempts
    silent = next(line for line in output.splitlines() if "s3://backups/bounded/" in line)
    assert "timed out" in silent
    served_lines = [line for line in output.splitlines() if served in line]
    assert served_lines, output
    if command[0] != "validate":
        assert any(backup.name in line for line in output.splitlines() if served in line)


@pytest.mark.parametrize("command", [["list"], ["prune"], ["verify"], ["validate", "--connect"]])
def test_a_signal_stops_other_commands_blocked_on_a_silent_endpoint(
    pg: ThrowawayCluster,
    small_db: str,
    hole: BlackHole,
    tmp_path: Path,
    start_cli: StartCli,
    command: list[str],
) -> None:
    folder = tmp_path / "folder"
    config = config_with(pg, tmp_path, small_db, [{"path": str(folder)}, silent_target(hole, SLOW)])
    process = start_cli(command[0], "-c", str(config), *command[1:], env=env_for(pg))
    wait_for(lambda: hole.connections >= 1, what="the command to ask the endpoint", process=process)
    stderr = assert_stopped_cleanly(process, signal.SIGTERM, 143, folder, pg)
    assert "interrupted by SIGTERM" in stderr
