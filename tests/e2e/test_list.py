"""`db-backup list`: finished backups from manifests, newest first; nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import cli_env, create_database, run_cli, server_defaults, write_config

pytestmark = pytest.mark.e2e


def test_list_shows_finished_backups_newest_first_and_ignores_the_rest(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    create_database(pg, "list_db", "CREATE TABLE t AS SELECT generate_series(1, 100) AS n;")
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, out),
            "backups": [{"name": "a", "database": "list_db"}, {"name": "b", "database": "list_db"}],
        },
    )
    files = []
    for _ in range(2):
        result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
        assert result.returncode == 0, result.stderr
        files += [job["file"] for job in json.loads(result.stdout)["jobs"]]
    (out / "t_a_20200101T000000Z.sql.gz.partial").write_bytes(b"left by a crash")
    (out / "t_a_20200101T000000Z.sql.gz").write_bytes(b"no manifest: not a backup")
    (out / "notes.json").write_text('{"foreign": true}')
    Path(files[0] + ".json").rename(out / "moved-away.json")  # a manifest without its file

    listed = run_cli("list", "-c", str(config), "--json")  # no secrets needed
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["backups"]
    assert sorted(e["file"] for e in entries) == sorted(files[1:])
    taken = [e["taken_at"] for e in entries]
    assert taken == sorted(taken, reverse=True)
    assert {e["target"] for e in entries} == {f"local:{out}"}

    only_b = json.loads(run_cli("list", "-c", str(config), "-n", "b", "--json").stdout)["backups"]
    assert {e["job"] for e in only_b} == {"b"}
    assert len(only_b) == 2
    table = run_cli("list", "-c", str(config))
    assert "3 backups" in table.stdout
    unknown = run_cli("list", "-c", str(config), "-n", "zzz")
    assert unknown.returncode == 2
    assert "no backup named 'zzz'" in unknown.stderr
