"""Full, unwritable and missing storage folders: the affected job fails with the path and the
reason, removes its partial file, and jobs writing elsewhere finish.

Full and read-only filesystems are real: small tmpfs mounts (the suite runs as root in CI).
Without the right to mount, a file-size limit (RLIMIT_FSIZE → EFBIG) and a mode-0500 folder
stand in, and the tests say which ran.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import cli_env, server_defaults, write_config

pytestmark = pytest.mark.e2e

SMALL = 512 * 1024


def mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A folder on a 512 KiB filesystem, and Popen options that make it fill for real."""
    where = tmp_path / "small"
    if mount_tmpfs(where, f"size={SMALL},mode=0700"):
        yield where, {}
        subprocess.run(["umount", str(where)], check=True)
    else:

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (SMALL, SMALL))

        yield where, {"preexec_fn": limit}


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "readonly"
    if mount_tmpfs(where, "ro,size=64k"):
        yield where
        subprocess.run(["umount", str(where)], check=True)
    else:
        where.chmod(0o500)
        yield where
        where.chmod(0o700)


def run(config: Path, pg: ThrowawayCluster, **popen: Any) -> tuple[int, dict[str, Any]]:
    process = subprocess.run(
        [sys.executable, "-m", "db_backup", "backup", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        env=cli_env(pg),
        check=False,
        **popen,
    )
    return process.returncode, {job["job"]: job for job in json.loads(process.stdout)["jobs"]}


def test_a_full_disk_fails_that_job_cleanly_and_others_finish(
    pg: ThrowawayCluster, big_db: str, tmp_path: Path, full_disk: tuple[Path, dict[str, Any]]
) -> None:
    small, popen = full_disk
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [
                {"name": "too-big", "database": big_db, "storage": {"path": str(small)}},
                {"name": "fine", "database": "postgres"},
            ],
        },
    )
    code, jobs = run(config, pg, **popen)
    assert code == 1
    error = jobs["too-big"]["error"]
    assert error.startswith(f"target local:{small} failed: writing {small}/t_too-big_")
    assert error.endswith(
        ".sql.gz.partial: " + ("No space left on device" if not popen else "File too large")
    )
    assert jobs["fine"]["status"] == "succeeded"
    assert [p.name for p in small.iterdir() if p.name != ".db-backup.lock"] == []  # partial removed


def test_an_unwritable_folder_fails_its_jobs_before_any_dump(
    pg: ThrowawayCluster, tmp_path: Path, read_only: Path
) -> None:
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [
                {
                    "name": "nowhere",
                    "database": "postgres",
                    "storage": {"path": str(read_only / "sub")},
                },
                {"name": "fine", "database": "postgres"},
            ],
        },
    )
    code, jobs = run(config, pg)
    assert code == 1
    assert jobs["nowhere"]["error"].startswith(
        f"target local:{read_only}/sub failed: cannot create storage folder {read_only}/sub: "
    )
    assert jobs["nowhere"]["raw_bytes"] == 0  # refused before its dump was started
    assert jobs["nowhere"]["targets"] == [
        {
            "target": f"local:{read_only}/sub",
            "stored": False,
            "file": None,
            "manifest": None,
            "error": jobs["nowhere"]["error"].removeprefix(
                f"target local:{read_only}/sub failed: "
            ),
        }
    ]
    assert jobs["fine"]["status"] == "succeeded"


def test_missing_folders_are_created_private(pg: ThrowawayCluster, tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, deep),
            "backups": [{"name": "pg", "database": "postgres"}],
        },
    )
    old_umask = os.umask(0o022)  # a permissive umask must not loosen what we create
    try:
        code, jobs = run(config, pg)
    finally:
        os.umask(old_umask)
    assert code == 0
    for folder in (tmp_path / "a", tmp_path / "a" / "b", deep):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in deep.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert Path(jobs["pg"]["file"]).parent == deep
