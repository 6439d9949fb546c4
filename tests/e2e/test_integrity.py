"""Truncated output never becomes a backup; `db-backup verify` finds damaged ones."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import cli_env, create_database, run_cli, server_defaults, write_config
from tests.fakes import truncating_pg_dump

pytestmark = pytest.mark.e2e

ROWS = "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g;"


@pytest.fixture(scope="module")
def integrity_db(pg: ThrowawayCluster) -> str:
    create_database(pg, "integrity_db", ROWS)
    return "integrity_db"


def test_a_custom_dump_cut_in_half_with_exit_0_is_not_a_backup(
    pg: ThrowawayCluster, integrity_db: str, tmp_path: Path
) -> None:
    fake = truncating_pg_dump(tmp_path, pg.client_bin("pg_dump"))
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [
                {
                    "name": "cut",
                    "database": integrity_db,
                    "format": "custom",
                    "pg_dump_path": str(fake),
                },
                {"name": "whole", "database": integrity_db, "format": "custom"},
            ],
        },
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert result.returncode == 1
    jobs = {job["job"]: job for job in json.loads(result.stdout)["jobs"]}
    assert jobs["cut"]["error"].startswith(
        "the custom-format dump is incomplete or unreadable (pg_restore could not read it "
        "through): pg_restore: error: could not read from input file: end of file"
    )
    assert jobs["whole"]["status"] == "succeeded"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith("t_cut_")]


@pytest.fixture
def backups(pg: ThrowawayCluster, integrity_db: str, tmp_path: Path) -> dict[str, Any]:
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [
                {"name": "plain", "database": integrity_db, "globals": True},
                {"name": "custom", "database": integrity_db, "format": "custom"},
                {"name": "raw", "database": integrity_db, "compression": {"algorithm": "none"}},
            ],
        },
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    jobs = {job["job"]: Path(job["file"]) for job in json.loads(result.stdout)["jobs"]}
    return {"config": config, **jobs}


def verify_lines(*args: str) -> tuple[int, dict[str, str]]:
    result = run_cli("verify", *args)
    lines = {}
    for line in result.stdout.splitlines():
        status, rest = line.split(None, 1)
        path = rest.split(" ", 1)[0].rstrip(":")
        lines[Path(path).name] = f"{status} {rest}"
    return result.returncode, lines


def test_verify_accepts_intact_backups(backups: dict[str, Any]) -> None:
    code, lines = verify_lines("-c", str(backups["config"]))
    assert code == 0
    assert len(lines) == 4  # plain, custom, raw and the globals
    assert all(line.startswith("OK ") for line in lines.values())
    assert "gzip stream complete" in lines[backups["plain"].name]
    assert "custom-format dump read through by pg_restore" in lines[backups["custom"].name]
    assert "dump complete" in lines[backups["raw"].name]
    code, lines = verify_lines(str(backups["plain"]), str(backups["custom"]) + ".json")
    assert code == 0
    assert len(lines) == 2


def test_verify_finds_a_flipped_byte(backups: dict[str, Any]) -> None:
    path: Path = backups["plain"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code, lines = verify_lines(str(path.parent))
    assert code == 1
    line = lines[path.name]
    assert line.startswith("FAILED ")
    assert "sha256 is " in line
    assert "the file changed" in line
    assert "gzip stream is damaged" in line
    assert sum(1 for text in lines.values() if text.startswith("OK ")) == 3


def test_verify_finds_truncation_even_when_the_manifest_was_rewritten_to_match(
    backups: dict[str, Any],
) -> None:
    for name in ("plain", "custom", "raw"):
        path: Path = backups[name]
        data = path.read_bytes()[: path.stat().st_size // 2]
        path.write_bytes(data)
        manifest_path = path.with_name(path.name + ".json")
        record = json.loads(manifest_path.read_text())
        record.update(stored_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        manifest_path.write_text(json.dumps(record))
    code, lines = verify_lines("-c", str(backups["config"]))
    assert code == 1
    assert "gzip stream is damaged or cut short" in lines[backups["plain"].name]
    assert "could not read it through" in lines[backups["custom"].name]
    assert "does not end with pg_dump's completion marker" in lines[backups["raw"].name]
    assert all(
        "size and sha256 match the manifest" in lines[backups[n].name] for n in ("plain", "raw")
    )


def test_verify_finds_missing_manifests_and_missing_files(backups: dict[str, Any]) -> None:
    (backups["custom"].with_name(backups["custom"].name + ".json")).unlink()
    backups["raw"].unlink()
    code, lines = verify_lines("-c", str(backups["config"]))
    assert code == 1
    assert "no manifest" in lines[backups["custom"].name]
    assert "not a finished backup" in lines[backups["custom"].name]
    assert "the backup file is missing" in lines[backups["raw"].name]
    assert lines[backups["plain"].name].startswith("OK ")


def test_verify_usage(tmp_path: Path) -> None:
    assert run_cli("verify").returncode == 2
    empty = run_cli("verify", str(tmp_path))
    assert empty.returncode == 1
    assert "no backups found" in empty.stderr
    missing = run_cli("verify", str(tmp_path / "nope.sql.gz"))
    assert missing.returncode == 1
    assert "no such file or folder" in missing.stdout
