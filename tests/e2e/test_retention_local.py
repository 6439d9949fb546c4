"""Retention on local folders: applied after every committed backup, never after a failure,
only to the job's own backups; `prune --dry-run` shows, `prune` deletes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import cli_env, create_database, run_cli, server_defaults, write_config

pytestmark = pytest.mark.e2e


def files_of(folder: Path, job: str, suffix: str = ".sql.gz") -> list[str]:
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name.startswith(f"t_{job}_") and p.name.endswith(suffix)
    )


def configure(pg: ThrowawayCluster, tmp_path: Path, **kept: Any) -> Path:
    return write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [
                {"name": "kept", "database": "retention_db", "retention": kept},
                {"name": "all", "database": "retention_db"},
            ],
        },
    )


def test_retention_after_backups_never_after_failures_and_prune(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    create_database(pg, "retention_db", "CREATE TABLE t AS SELECT generate_series(1, 100) AS n;")
    out = tmp_path / "out"
    config = configure(pg, tmp_path, keep_last=2)
    made = []
    for _ in range(4):
        result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
        assert result.returncode == 0, result.stderr
        made.append(
            {job["job"]: Path(job["file"]).name for job in json.loads(result.stdout)["jobs"]}
        )
    assert files_of(out, "kept") == sorted(run["kept"] for run in made[-2:])
    assert len(files_of(out, "kept", ".sql.gz.json")) == 2  # manifests went with their files
    assert len(files_of(out, "all")) == 4  # no policy: nothing deleted

    # A failed backup prunes nothing, even with a stricter policy.
    failing = json.loads(config.read_text())
    failing["backups"][0].update(password="wrong", retention={"keep_last": 1})
    config.write_text(json.dumps(failing))
    result = run_cli("backup", "-c", str(config), "-n", "kept", env=cli_env(pg))
    assert result.returncode == 1
    assert len(files_of(out, "kept")) == 2

    strict = configure(pg, tmp_path, keep_last=1)
    dry = run_cli("prune", "-c", str(strict), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {out / made[2]['kept']}" in dry.stdout
    assert f"keep    {out / made[3]['kept']} (newest, keep_last 1)" in dry.stdout
    assert "t_all_" not in dry.stdout  # no policy, not considered
    assert len(files_of(out, "kept")) == 2  # a dry run deletes nothing

    pruned = run_cli("prune", "-c", str(strict))
    assert pruned.returncode == 0, pruned.stderr
    assert files_of(out, "kept") == [made[3]["kept"]]
    assert len(files_of(out, "all")) == 4
    listed = json.loads(run_cli("list", "-c", str(strict), "-n", "kept", "--json").stdout)[
        "backups"
    ]
    assert [Path(e["file"]).name for e in listed] == [made[3]["kept"]]


def test_retention_settings_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "backup.yml"
    config.write_text(
        "backups:\n  - name: a\n    database: a\n    storage: {path: /x}\n"
        "    retention: {keep_last: -1, keep_dayly: 3}\n"
    )
    result = run_cli("validate", "-c", str(config))
    assert result.returncode == 2
    assert (
        "retention.keep_dayly: unknown key 'keep_dayly'; did you mean 'keep_daily'?"
        in result.stderr
    )
