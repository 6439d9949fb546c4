"""What a hostile review found, each reproduced for real: backups lost to another config's
prune or to a clock jump, planted symlinks and FIFOs, names that collide or run too long,
locks that depend on spelling, and orphans a killed run leaves."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import cli_env, create_database, run_cli, server_defaults, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shop(pg: ThrowawayCluster) -> str:
    create_database(pg, "hostile_shop", "CREATE TABLE t AS SELECT generate_series(1, 100) n;")
    return "hostile_shop"


def config_file(
    pg: ThrowawayCluster, path: Path, storage: Any, backups: list[dict[str, Any]]
) -> Path:
    defaults = server_defaults(pg, path.parent / "unused")
    defaults["storage"] = storage
    return write_config(path, {"defaults": defaults, "backups": backups})


def backup_json(config: Path, pg: ThrowawayCluster, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("backup", "-c", str(config), "--json", *args, env=cli_env(pg))
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_prune_and_list_leave_another_prefix_in_the_same_folder_alone(
    pg: ThrowawayCluster, shop: str, tmp_path: Path
) -> None:
    folder = tmp_path / "store"
    nightly = config_file(
        pg,
        tmp_path / "nightly.yml",
        {"path": str(folder), "prefix": "nightly"},
        [{"name": "shop", "database": shop, "retention": {"keep_last": 1}}],
    )
    weekly = config_file(
        pg,
        tmp_path / "weekly.yml",
        {"path": str(folder), "prefix": "weekly"},
        [{"name": "shop", "database": shop}],
    )
    for _ in range(3):
        assert backup_json(weekly, pg)[0] == 0
    code, report = backup_json(nightly, pg)
    assert code == 0
    weekly_files = sorted(p.name for p in folder.glob("weekly_shop_*"))
    assert len(weekly_files) == 6  # three backups and their manifests

    listed = json.loads(run_cli("list", "-c", str(nightly), "--json").stdout)["backups"]
    assert [Path(e["file"]).name for e in listed] == [Path(report["jobs"][0]["file"]).name]

    pruned = run_cli("prune", "-c", str(nightly))
    assert pruned.returncode == 0, pruned.stderr
    assert "weekly_" not in pruned.stdout
    assert sorted(p.name for p in folder.glob("weekly_shop_*")) == weekly_files


def test_backups_dated_in_the_future_never_make_a_new_one_deletable(
    pg: ThrowawayCluster, shop: str, tmp_path: Path
) -> None:
    folder = tmp_path / "store"
    config = config_file(
        pg,
        tmp_path / "backup.yml",
        {"path": str(folder)},
        [{"name": "shop", "database": shop, "retention": {"keep_last": 2}}],
    )
    for _ in range(2):
        assert backup_json(config, pg)[0] == 0
    # What one clock jump produces: two backups whose manifests say five years from now.
    future = sorted(folder.glob("shop_*.sql.gz"))
    later = datetime.now(UTC).year + 5
    for data in future:
        manifest = data.with_name(data.name + ".json")
        record = json.loads(manifest.read_text())
        taken = datetime.fromisoformat(record["started_at"])
        record["started_at"] = taken.replace(year=later).isoformat()
        manifest.write_text(json.dumps(record))

    made = []
    for _ in range(3):
        result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
        assert result.returncode == 0, result.stderr
        job = json.loads(result.stdout)["jobs"][0]
        assert job["status"] == "succeeded"
        assert Path(job["file"]).is_file(), "reported stored, and there"
        made.append(Path(job["file"]))
        for data in future:  # each run names them
            assert f"{data} is dated {later}-" in result.stderr
            assert "in the future" in result.stderr
    # The future ones stay and count for nothing: keep_last 2 keeps the two newest real ones.
    assert sorted(folder.glob("shop_*.sql.gz")) == sorted([*future, *made[-2:]])

    dry = run_cli("prune", "-c", str(config), "--dry-run")
    assert f"keep    {future[0]} (dated in the future)" in dry.stdout
    listed = run_cli("list", "-c", str(config))
    assert f"{future[0]} is dated {later}-" in listed.stderr
