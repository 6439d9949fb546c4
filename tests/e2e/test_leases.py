"""Leases in the bucket (leasing.py): runners that share nothing but the bucket never dump one
job at once. Two runners started together split the jobs; a runner killed mid-run and started
again (as Kubernetes retries a pod) finishes the rest without dumping what it had committed;
a job whose lease another runner took over stops and keeps nothing.

The dumps are real pg_dump runs held at a gate (tests/fakes.gated_pg_dump), whose log of
started dumps counts how often each job was dumped."""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from db_backup.lease import LEASE_FOLDER, LeaseRecord, decode, encode
from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    run_cli,
    s3_storage,
    server_defaults,
    write_config,
)
from tests.fakes import gated_pg_dump
from tests.seaweed import SeaweedServer
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

LEASE = "3s"  # the shortest allowed: a dead runner's jobs are free 5 s later


def lease_config(
    pg: ThrowawayCluster,
    s3: SeaweedServer,
    tmp_path: Path,
    databases: list[str],
    concurrency: int = 1,
) -> tuple[Path, str]:
    """The databases, each a backup to one bucket prefix, dumped through a gated pg_dump;
    returns the config and the prefix."""
    for name in databases:
        create_database(pg, name, "CREATE TABLE t AS SELECT generate_series(1, 500) AS n;")
    wrapper = gated_pg_dump(
        tmp_path, pg.client_bin("pg_dump"), tmp_path / "gate", tmp_path / "started"
    )
    prefix = tmp_path.name
    defaults = server_defaults(pg, tmp_path, pg_dump_path=str(wrapper))
    defaults["storage"] = s3_storage(s3, prefix, lease_duration=LEASE)
    config = {
        "concurrency": concurrency,
        "defaults": defaults,
        "backups": [{"name": n, "database": n} for n in databases],
    }
    return write_config(tmp_path / "backup.yml", config), prefix


def dumps_started(tmp_path: Path) -> int:
    log = tmp_path / "started.all"
    return len(log.read_text().split()) if log.exists() else 0


def runner_env(
    pg: ThrowawayCluster, s3: SeaweedServer, state: Path, **extra: str
) -> dict[str, str]:
    """A runner of its own machine: its own state folder (its own per-machine locks)."""
    return cli_env(pg, s3=s3) | {"DB_BACKUP_STATE_DIR": str(state), **extra}


def finished(process: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    stdout, stderr = process.communicate(timeout=120)
    assert stdout, stderr
    return process.returncode, json.loads(stdout), stderr


def by_status(report: dict[str, Any], status: str) -> set[str]:
    return {job["job"] for job in report["jobs"] if job["status"] == status}


def backups_in(s3: SeaweedServer, prefix: str, job: str) -> list[str]:
    return [key for key in s3.objects(f"{prefix}/{job}_") if key.endswith(".json")]


def test_two_runners_started_together_dump_every_job_once(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path, start_cli: StartCli
) -> None:
    databases = [f"lease_pair_{i}" for i in range(6)]
    config, prefix = lease_config(pg, s3, tmp_path, databases, concurrency=8)
    # One CronJob deployed twice: each copy makes the night's Job under the same name (from
    # its scheduled time), which the Kubernetes example passes on as the run id.
    night = {"DB_BACKUP_RUN_ID": "db-backup-29412345"}
    runners = [
        start_cli(
            "backup",
            "-c",
            str(config),
            "--json",
            env=runner_env(pg, s3, tmp_path / f"m{i}", **night),
        )
        for i in (1, 2)
    ]
    # Every job's dump started (held at the gate): each lease is held by a runner dumping it.
    wait_for(
        lambda: dumps_started(tmp_path) >= len(databases),
        what="six dumps to start",
        process=runners[0],
        timeout=20,
    )
    (tmp_path / "gate").touch()
    outcomes = [finished(runner) for runner in runners]

    for code, _, stderr in outcomes:
        assert code == 0, stderr
    first, second = (report for _, report, _ in outcomes)
    assert by_status(first, "succeeded") | by_status(second, "succeeded") == set(databases)
    assert not by_status(first, "succeeded") & by_status(second, "succeeded")
    assert by_status(first, "elsewhere") == by_status(second, "succeeded")
    assert by_status(second, "elsewhere") == by_status(first, "succeeded")
    for report in (first, second):
        assert report["failed"] == 0
        for job in report["jobs"]:
            if job["status"] == "elsewhere":
                note = job["note"]
                assert note.startswith(
                    (
                        "running elsewhere: lease held by PID",
                        "already backed up by",
                    )
                )
    assert dumps_started(tmp_path) == len(databases)  # none dumped twice, not even in turn
    for name in databases:
        assert len(backups_in(s3, prefix, name)) == 1
    # Every lease given back, saying how its job ended.
    for name in databases:
        lease = s3.client().get_object(Bucket=s3.bucket, Key=f"{prefix}/{LEASE_FOLDER}/{name}.json")
        record = decode(lease["Body"].read())
        assert record is not None
        assert (record.state, record.outcome) == ("released", "succeeded")


def test_a_killed_runner_started_again_finishes_its_jobs_without_repeating_one(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path, start_cli: StartCli
) -> None:
    databases = ["lease_kill_a", "lease_kill_b", "lease_kill_c"]
    config, prefix = lease_config(pg, s3, tmp_path, databases, concurrency=1)
    fleet_run = {"DB_BACKUP_RUN_ID": "nightly-uid-1"}  # what a Kubernetes Job gives its pods
    first = start_cli(
        "backup",
        "-c",
        str(config),
        "--json",
        env=runner_env(pg, s3, tmp_path / "pod1", **fleet_run),
    )
    (tmp_path / "gate.0").touch()  # the first dump may run; the second is held
    wait_for(lambda: dumps_started(tmp_path) == 2, what="the second dump to start", process=first)
    committed = [name for name in databases if backups_in(s3, prefix, name)]
    assert len(committed) == 1
    first.send_signal(signal.SIGKILL)
    first.wait()

    (tmp_path / "gate").touch()
    second = start_cli(
        "backup",
        "-c",
        str(config),
        "--json",
        env=runner_env(pg, s3, tmp_path / "pod2", **fleet_run),
    )
    code, report, stderr = finished(second)

    assert code == 0, stderr
    assert by_status(report, "elsewhere") == set(committed)
    [done] = [job for job in report["jobs"] if job["status"] == "elsewhere"]
    assert "an earlier attempt of this run" in done["note"]
    assert by_status(report, "succeeded") == set(databases) - set(committed)
    assert "taking over its lease" in stderr  # the dead pod's leases, once they expired
    assert dumps_started(tmp_path) == 4  # 1 committed + 1 killed, then the two left
    for name in databases:
        assert len(backups_in(s3, prefix, name)) == 1
    assert s3.incomplete_uploads(f"{prefix}/") == []  # the killed dump's upload was removed


def test_a_job_whose_lease_was_taken_over_stops_and_keeps_nothing(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path, start_cli: StartCli
) -> None:
    config, prefix = lease_config(pg, s3, tmp_path, ["lease_lost"])
    runner = start_cli(
        "backup", "-c", str(config), "--json", env=runner_env(pg, s3, tmp_path / "m")
    )
    wait_for(lambda: dumps_started(tmp_path) == 1, what="the dump to start", process=runner)
    # Another runner that judged this one dead takes the lease over (a new version of it).
    key = f"{prefix}/{LEASE_FOLDER}/lease_lost.json"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=b'{"taken": "over"}')
    code, report, stderr = finished(runner)  # the gate stays shut: only the lease ends it

    assert code == 1
    [job] = report["jobs"]
    assert job["status"] == "failed"
    assert job["error_kind"] == "lease"
    assert "another runner took it over" in job["error"]
    assert "the job was stopped" in job["error"]
    assert backups_in(s3, prefix, "lease_lost") == []
    assert s3.incomplete_uploads(f"{prefix}/") == []
    assert "lost its lease" in stderr


def test_a_lease_left_by_a_runner_on_another_machine_is_taken_over_once_expired(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path
) -> None:
    """A pod that died elsewhere: its lease is not renewed, and no process of ours can be
    asked about it — the job waits for the lease's expiry, then takes it over."""
    config, prefix = lease_config(pg, s3, tmp_path, ["lease_stale"])
    (tmp_path / "gate").touch()
    dead = LeaseRecord(
        job="lease_stale",
        run="another-night",
        host="pod-7",
        pid=4242,
        shard="3/4",
        seconds=3.0,
        state="held",
        taken_at=datetime.now(UTC),
        manifest="lease_stale_20261202T010000Z.sql.gz.json",
        machine="another-kernel/1",
    )
    key = f"{prefix}/{LEASE_FOLDER}/lease_stale.json"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=encode(dead))
    result = run_cli("backup", "-c", str(config), "--json", env=runner_env(pg, s3, tmp_path / "m"))

    assert result.returncode == 0, result.stderr
    [job] = json.loads(result.stdout)["jobs"]
    assert job["status"] == "succeeded"
    assert "its lease is held by PID 4242 on pod-7 (shard 3/4, run another-night)" in result.stderr
    assert "taking over its lease from PID 4242 on pod-7" in result.stderr
    lease = decode(s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    assert lease is not None
    assert (lease.pid, lease.state, lease.outcome) != (4242, "held", None)
    assert lease.outcome == "succeeded"
