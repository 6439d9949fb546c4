"""Overlapping runs take turns on a storage folder; a killed runner leaves nothing running,
and the next run cleans up what it left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from db_backup.lock import LOCK_NAME
from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import (
    StartCli,
    cli_env,
    pg_dump_processes,
    run_cli,
    server_defaults,
    write_config,
)
from tests.fakes import gated_pg_dump
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@dataclass
class Gate:
    """Holds every dump of a run at its start until `open()`; `pid()` names the held child."""

    gate: Path
    started: Path

    def open(self) -> None:
        self.gate.touch()

    def pid(self) -> int:
        return int(self.started.read_text())


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    return Gate(tmp_path / "gate", tmp_path / "started")


@pytest.fixture
def config(pg: ThrowawayCluster, big_db: str, tmp_path: Path, gate: Gate) -> Path:
    wrapper = gated_pg_dump(tmp_path, pg.client_bin("pg_dump"), gate.gate, gate.started)
    defaults = server_defaults(pg, tmp_path / "out", pg_dump_path=str(wrapper))
    return write_config(
        tmp_path / "backup.yml",
        {"defaults": defaults, "backups": [{"name": "big", "database": big_db}]},
    )


def partials(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.partial")) if folder.exists() else []


@pytest.fixture
def first_run(
    config: Path, pg: ThrowawayCluster, gate: Gate, start_cli: StartCli
) -> subprocess.Popen[str]:
    """A run holding its storage lock, its dump held at the gate."""
    process = start_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    wait_for(gate.started.exists, what="the first run's dump to start", process=process)
    return process


def test_a_second_run_is_refused_at_once_naming_the_holder(
    config: Path,
    pg: ThrowawayCluster,
    first_run: subprocess.Popen[str],
    gate: Gate,
    tmp_path: Path,
) -> None:
    refused = run_cli("backup", "-c", str(config), env=cli_env(pg))
    assert refused.returncode == 1
    assert (
        f"another db-backup run holds {tmp_path / 'out' / LOCK_NAME} (PID {first_run.pid} on "
        in refused.stderr
    )
    assert "started 20" in refused.stderr
    assert "Use --wait[=DURATION]" in refused.stderr
    timed_out = run_cli("backup", "-c", str(config), "--wait=1s", env=cli_env(pg))
    assert timed_out.returncode == 1
    assert "another db-backup run holds" in timed_out.stderr
    assert first_run.poll() is None  # the first run was not disturbed
    gate.open()
    stdout, _ = first_run.communicate(timeout=120)
    assert first_run.returncode == 0
    assert json.loads(stdout)["jobs"][0]["status"] == "succeeded"


def test_wait_takes_turns(
    config: Path,
    pg: ThrowawayCluster,
    first_run: subprocess.Popen[str],
    gate: Gate,
    start_cli: StartCli,
) -> None:
    first_pid = gate.pid()
    second = start_cli("backup", "-c", str(config), "--json", "--wait", env=cli_env(pg))
    gate.open()
    first_out, _ = first_run.communicate(timeout=120)
    second_out, second_err = second.communicate(timeout=120)
    assert (first_run.returncode, second.returncode) == (0, 0), second_err
    first_job = json.loads(first_out)["jobs"][0]
    second_job = json.loads(second_out)["jobs"][0]
    first_end = datetime.fromisoformat(first_job["finished_at"])
    second_start = datetime.fromisoformat(second_job["started_at"])
    assert second_start >= first_end  # it waited for the lock, then ran
    assert "took over" not in second_err  # a cleanly ended run left an empty lock
    assert gate.pid() != first_pid  # the second run's own dump ran after the first's


def test_after_kill_9_no_child_survives_and_the_next_run_cleans_up(
    config: Path, pg: ThrowawayCluster, first_run: subprocess.Popen[str], gate: Gate, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    held = gate.pid()
    assert pg_dump_processes(pg.port) == [held]
    os.kill(first_run.pid, signal.SIGKILL)
    first_run.wait()
    # The held child writes nothing, so no broken pipe can end it: only the death signal the
    # kernel sends when its runner dies does.
    wait_for(lambda: not pg_dump_processes(pg.port), what="pg_dump to die with its runner")
    left = partials(out)
    assert len(left) == 1
    assert not [p for p in out.iterdir() if p.name.endswith((".sql.gz", ".json"))]

    gate.open()
    second = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert second.returncode == 0, second.stderr
    assert f"took over the lock on {out} left by PID {first_run.pid}" in second.stderr
    assert f"removed {left[0]}, left behind by an interrupted run" in second.stderr
    assert partials(out) == []
    finished = sorted(p.name for p in out.iterdir())
    job = json.loads(second.stdout)["jobs"][0]
    assert finished == sorted([LOCK_NAME, Path(job["file"]).name, Path(job["manifest"]).name])
