"""`backup --shard I/N`: shards run apart back up every job exactly once between them;
`--shard auto` takes Kubernetes' index; `--dry-run --shards N` shows the whole partition;
bad shard arguments are usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import cli_env, create_database, run_cli, server_defaults, write_config

pytestmark = pytest.mark.e2e

DATABASES = {"shard_a": 4000, "shard_b": 2000, "shard_c": 1000, "shard_d": 500, "shard_e": 100}


def test_shards_back_up_every_job_once_between_them(pg: ThrowawayCluster, tmp_path: Path) -> None:
    for name, rows in DATABASES.items():
        create_database(pg, name, f"CREATE TABLE t AS SELECT generate_series(1, {rows}) AS n;")
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [{"name": name, "database": name} for name in DATABASES],
        },
    )
    env = cli_env(pg)

    shown = run_cli("backup", "-c", str(config), "--dry-run", "--shards", "2", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "0/2" in shown.stdout
    assert "1/2" in shown.stdout
    assert all(shown.stdout.count(name) == 1 for name in DATABASES), shown.stdout

    ran: list[set[str]] = []
    for index in (0, 1):
        result = run_cli("backup", "-c", str(config), "--shard", f"{index}/2", "--json", env=env)
        assert result.returncode == 0, result.stderr
        jobs = json.loads(result.stdout)["jobs"]
        assert all(job["status"] == "succeeded" for job in jobs)
        ran.append({job["job"] for job in jobs})
    assert not ran[0] & ran[1]
    assert ran[0] | ran[1] == set(DATABASES)
    assert ran[0]  # five jobs over two runners: neither idle
    assert ran[1]

    # Kubernetes' Indexed Job: the index from the pod, the count from the environment.
    kubernetes = {**env, "JOB_COMPLETION_INDEX": "1", "DB_BACKUP_SHARDS": "2"}
    auto = run_cli("backup", "-c", str(config), "--shard", "auto", "--dry-run", env=kubernetes)
    assert auto.returncode == 0, auto.stderr
    plan = auto.stdout.split("2 shards")[0]  # the plan table, before the shard's summary
    assert {name for name in DATABASES if name in plan} == ran[1]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--shard", "2/2"], "the index must be 0 to 1 of 2"),
        (["--shard", "half"], "expected I/N"),
        (["--shards", "3"], "--shards goes with --shard auto"),
        (["--shard", "0/2", "--shards", "3"], "says 2 shards, --shards says 3"),
        (["--shard", "auto", "--shards", "2"], "JOB_COMPLETION_INDEX is not set"),
    ],
)
def test_bad_shard_arguments_are_usage_errors(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    config = write_config(
        tmp_path / "backup.yml",
        {"backups": [{"name": "a", "database": "a", "storage": {"path": str(tmp_path)}}]},
    )
    result = run_cli("backup", "-c", str(config), *arguments, env=cli_env())
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
