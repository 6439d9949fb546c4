"""A fleet on one machine: runners started together, each a shard of one config, sharing only
PostgreSQL and the bucket — as the pods of a Kubernetes Indexed Job. One shard's runner is
SIGKILLed mid-run and started again (as Kubernetes retries the pod); one shard is deployed
twice. Every database is dumped once and stored once; `db-backup report` sums the fleet's
night up from the catalog. (Timing — the slowest shard against the mean — is the benchmark's:
`nox -s fleet`.)"""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from db_backup.lease import LEASE_FOLDER
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
from tests.fakes import gated_pg_dump, recording_pg_dump
from tests.seaweed import SeaweedServer
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

DATABASES = [f"fleet_{i:02d}" for i in range(40)]
SHARDS = 3
NIGHT = "db-backup-29412345"  # the Job's name: the run id every pod of the night shares


def fleet_config(pg: ThrowawayCluster, s3: SeaweedServer, path: Path, extra: list[str]) -> Path:
    defaults = server_defaults(pg, path.parent, pg_dump_path="${PG_DUMP}")
    defaults["storage"] = s3_storage(s3, "fleet", lease_duration="3s")
    names = DATABASES + extra
    return write_config(
        path,
        {
            "concurrency": 2,
            "defaults": defaults,
            "backups": [{"name": n, "database": n} for n in names],
        },
    )


def dumped(log: Path) -> list[str]:
    """The database of each dump the recording pg_dump started, in order."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        argv = json.loads(line)
        if "--version" not in argv:
            [option] = [arg for arg in argv if arg.startswith("--dbname=")]
            found.append(option.split("'")[1] if "'" in option else option.rsplit("=", 1)[1])
    return found


def report_of(process: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    return dict(json.loads(stdout))


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {job["job"]: job["status"] for job in report["jobs"]}


def test_a_fleet_backs_up_every_database_once_through_a_kill_and_a_double_deployment(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path, start_cli: StartCli
) -> None:
    rows = [200 * (i % 7 + 1) ** 2 for i in range(len(DATABASES))]  # uneven: 200 to 9,800
    for name, count in zip(DATABASES, rows, strict=True):
        create_database(pg, name, f"CREATE TABLE t AS SELECT generate_series(1, {count}) AS n;")
    config = fleet_config(pg, s3, tmp_path / "backup.yml", [])
    real = pg.client_bin("pg_dump")
    log = tmp_path / "dumps.log"
    recording = recording_pg_dump(tmp_path, real, log)
    (tmp_path / "held").mkdir()
    gate = tmp_path / "held" / "gate"
    held = gated_pg_dump(tmp_path / "held", real, gate, tmp_path / "held" / "started")
    night_started = datetime.now(UTC)

    def runner(shard: int, pg_dump: Path, machine: str, *extra: str) -> subprocess.Popen[str]:
        env = cli_env(pg, s3=s3) | {
            "DB_BACKUP_STATE_DIR": str(tmp_path / machine),  # a machine (pod) of its own
            "JOB_COMPLETION_INDEX": str(shard),
            "DB_BACKUP_SHARDS": str(SHARDS),
            "DB_BACKUP_RUN_ID": NIGHT,
            "PG_DUMP": str(pg_dump),
        }
        return start_cli("backup", "-c", str(config), "--shard", "auto", "--json", *extra, env=env)

    gate.with_name("gate.0").touch()  # shard 1's first two dumps may run; its third is held
    gate.with_name("gate.1").touch()
    runners = {
        "0": runner(0, recording, "pod-0"),
        "0-again": runner(0, recording, "pod-0-again"),  # the same shard deployed twice
        "1": runner(1, held, "pod-1", "-j", "1"),
        "2": runner(2, recording, "pod-2"),
    }
    started = gate.parent / "started.all"
    wait_for(
        lambda: started.exists() and len(started.read_text().split()) == 3,
        what="shard 1's third dump to start",
        process=runners["1"],
        timeout=120,
    )
    runners["1"].send_signal(signal.SIGKILL)  # two jobs committed, the third mid-dump
    runners["1"].wait()
    killed_after = 2
    restarted = runner(1, recording, "pod-1-retry")  # Kubernetes starts the pod again
    reports = {name: report_of(process) for name, process in runners.items() if name != "1"}
    reports["1-retry"] = report_of(restarted)

    # Every database stored once, by one runner; nothing failed.
    succeeded = [
        job for r in reports.values() for job, s in statuses(r).items() if s == "succeeded"
    ]
    assert sorted(succeeded) == sorted(set(succeeded))
    assert len(succeeded) == len(DATABASES) - killed_after
    for report in reports.values():
        assert report["failed"] == 0
        assert report["shard"] is not None
        assert report["run_id"] == NIGHT
    manifests = [k for k in s3.objects("fleet/") if k.endswith(".json")]
    assert sorted(k.split("/")[1].rsplit("_", 1)[0] for k in manifests) == DATABASES
    # Dumped once each: the retry repeated none of the killed pod's committed jobs, and the
    # held dump (killed before pg_dump ran) was done once, by the retry.
    assert sorted(dumped(log)) == sorted(
        set(DATABASES)
        - set(job for job, s in statuses(reports["1-retry"]).items() if s == "elsewhere")
    )
    retried = statuses(reports["1-retry"])
    assert sum(1 for s in retried.values() if s == "elsewhere") == killed_after
    # The twice-deployed shard: each job ran on one of the two; the other says elsewhere.
    first, second = statuses(reports["0"]), statuses(reports["0-again"])
    assert set(first) == set(second)
    for job in first:
        assert sorted([first[job], second[job]]) == ["elsewhere", "succeeded"]
    # No job ran on two runners at once (or at all): one window per job.
    windows = [
        (job["job"], job["started_at"], job["finished_at"])
        for r in reports.values()
        for job in r["jobs"]
        if job["status"] == "succeeded"
    ]
    assert len({job for job, _, _ in windows}) == len(windows)

    # The night summed up from the catalog: one report for the whole fleet.
    summary = run_cli(
        "report",
        "-c",
        str(config),
        "--since",
        night_started.isoformat(),
        "--json",
        env=cli_env(pg, s3=s3, PG_DUMP=str(real)),
    )
    assert summary.returncode == 0, summary.stderr
    document = json.loads(summary.stdout)
    assert (document["expected"], document["backed_up"], document["missing"]) == (40, 40, [])
    assert all(len(job["files"]) == 1 for job in document["jobs"])
    # A backup no runner ran is missing: exit 1, named.
    wider = fleet_config(pg, s3, tmp_path / "wider.yml", ["fleet_never_run"])
    missing = run_cli(
        "report", "-c", str(wider), "--since", "1h", env=cli_env(pg, s3=s3, PG_DUMP=str(real))
    )
    assert missing.returncode == 1
    assert "fleet_never_run" in missing.stdout
    assert "MISSING" in missing.stdout
    assert "40 of 41 jobs backed up, 1 missing" in missing.stdout


def test_every_runner_of_a_run_follows_the_partition_its_first_runner_stored(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path
) -> None:
    """A pod retried hours later may see another catalog (retention removed a backup whose
    size placed a job): it follows the run's stored partition, so no job falls between the
    shards."""
    names = ["agreed_a", "agreed_b", "agreed_c", "agreed_d"]
    for name in names:
        create_database(pg, name, "CREATE TABLE t AS SELECT 1 AS n;")
    defaults = server_defaults(pg, tmp_path)
    defaults["storage"] = s3_storage(s3, "agreed")
    config = write_config(
        tmp_path / "backup.yml",
        {"defaults": defaults, "backups": [{"name": n, "database": n} for n in names]},
    )
    env = cli_env(pg, s3=s3)

    def shard(spec: str, run: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "backup", "-c", str(config), "--json", "--shard", spec, "--run-id", run, env=env
        )

    # The first runner of a run stores how it shared the jobs out.
    first = shard("0/2", "night-1")
    assert first.returncode == 0, first.stderr
    stored = json.loads(
        s3.download(f"agreed/{LEASE_FOLDER}/runs/night-1.json", tmp_path / "r").read_text()
    )
    assert stored["shards"] == 2
    assert sorted(stored["assignment"]) == names
    ran = {job["job"] for job in json.loads(first.stdout)["jobs"]}
    assert ran == {job for job, index in stored["assignment"].items() if index == 0}

    # A run whose first runner put every job on shard 1: shard 0 has nothing to do.
    record = {
        "run": "night-2",
        "shards": 2,
        "assignment": dict.fromkeys(names, 1),
        "host": "pod-0",
        "taken_at": "2026-12-02T01:00:00+00:00",
    }
    key = f"agreed/{LEASE_FOLDER}/runs/night-2.json"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=json.dumps(record).encode())
    idle = shard("0/2", "night-2")
    assert idle.returncode == 0, idle.stderr
    assert json.loads(idle.stdout)["jobs"] == []
    busy = shard("1/2", "night-2")
    assert busy.returncode == 0, busy.stderr
    assert sorted(job["job"] for job in json.loads(busy.stdout)["jobs"]) == names

    # A runner of that run told another shard count stops, saying why.
    wrong = shard("0/3", "night-2")
    assert wrong.returncode == 1
    assert (
        "shared out among 2 shards by its first runner (on pod-0), this runner says 3"
        in wrong.stderr
    )
    assert "Traceback" not in wrong.stderr
