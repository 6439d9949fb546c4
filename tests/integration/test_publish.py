"""Publishing the metrics textfile: it only ever changes by the rename of a whole, flushed
file (so node_exporter never reads half of one), a failed write leaves the old file and no
temporary, and the attempts of configured jobs that have no backup yet are carried over."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from db_backup import publish
from db_backup.config.load import parse_config
from db_backup.metrics import Attempt, attempts_in, exposition
from db_backup.model import JobKind, JobResult, JobSpec, JobStatus, RunReport, Server

OLD, NEW = "# old metrics\nx 1\n", "# new metrics\n" + "y 2\n" * 10_000


def test_the_file_changes_only_by_renaming_a_whole_one_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    textfile = tmp_path / "db_backup.prom"
    textfile.write_text(OLD)
    seen: list[tuple[str, str, Path]] = []
    real_replace = os.replace

    def watching_replace(source: Any, destination: Any) -> None:
        seen.append((textfile.read_text(), Path(source).read_text(), Path(source).parent))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", watching_replace)
    publish.write_atomically(textfile, NEW)
    # when the name changed hands, it still held the old file and the new one was whole,
    # in the same folder (a rename within one file system is atomic)
    assert seen == [(OLD, NEW, tmp_path)]
    assert textfile.read_text() == NEW
    assert textfile.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db_backup.prom"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    textfile = tmp_path / "db_backup.prom"
    textfile.write_text(OLD)

    def full_disk(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        publish.write_atomically(textfile, NEW)
    assert textfile.read_text() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db_backup.prom"]


async def test_attempts_of_configured_jobs_without_backups_are_carried_over(
    tmp_path: Path,
) -> None:
    textfile = tmp_path / "db_backup.prom"
    config = parse_config(
        f"""\
metrics: {{textfile: {textfile}}}
defaults: {{host: db1, storage: {{path: {tmp_path / "out"}}}}}
backups:
  - {{name: a, database: a}}
  - {{name: never-succeeded, database: n}}
""",
        environ={},
    )
    (tmp_path / "out").mkdir()
    earlier = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    textfile.write_text(
        exposition(
            [],
            {
                "never-succeeded": Attempt("never-succeeded", "n", "db1:5432", 1.0e9, False),
                "removed-from-config": Attempt("removed-from-config", "r", "db1:5432", 2.0, True),
            },
        )
    )
    job = JobSpec("a", JobKind.DATABASE, config.backups[0], "a", Server("db1", 5432), ())
    ran = JobResult(job, JobStatus.FAILED, earlier, earlier + timedelta(seconds=1), error="x")
    report = RunReport(earlier, earlier + timedelta(seconds=2), (ran,))
    assert await publish.publish_metrics(config, report) == []
    assert attempts_in(textfile.read_text()) == {
        "a": Attempt("a", "a", "db1:5432", earlier.timestamp(), False),
        "never-succeeded": Attempt("never-succeeded", "n", "db1:5432", 1.0e9, False),
    }
