"""A resident process stays flat: `serve`'s Service, in-process with a fast clock, fires 250
real backups of a tiny database (pg_dump, gzip, a folder, manifests, retention); its RSS after
the 250th is within 5 MiB of its RSS after the 50th (a leak of 26 KiB a run would fail it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import pytest

from db_backup.cli.serving import Service
from db_backup.config.load import load_config
from db_backup.pgcluster import ThrowawayCluster
from db_backup.runtime import Runtime, using
from db_backup.schedule import tasks_of
from tests.conftest import create_database, server_defaults, write_config

pytestmark = pytest.mark.e2e

RUNS = 250  # was 500: the suite's time budget (this test took 90 s)


class FastClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def devnull() -> Iterator[TextIO]:
    with open(os.devnull, "w") as sink:
        yield sink


async def test_rss_after_250_scheduled_runs_is_within_5_mib_of_after_50(
    pg: ThrowawayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, devnull: TextIO
) -> None:
    create_database(pg, "tiny", "CREATE TABLE t AS SELECT generate_series(1, 100) AS n;")
    monkeypatch.setenv("TEST_PG_PASSWORD", pg.password)
    path = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out", retention={"keep_last": 2}),
            "backups": [{"name": "tiny", "database": "tiny", "schedule": "@every 60s"}],
        },
    )
    clock = FastClock()
    with using(Runtime(clock=clock)):
        with contextlib.redirect_stderr(devnull):  # the run's lines, 250 times over
            service = Service(path, load_config(path))
        service.scheduler.clock = clock
        service.scheduler.set_tasks(tasks_of(service.config), {"tiny": clock.now})
        sizes = {}
        for run in range(1, RUNS + 1):
            clock.now += timedelta(seconds=60)
            [slot] = service.scheduler.due_now()
            assert slot.running is not None
            await slot.running
            assert slot.last_error is None, slot.last_error
            if run in (50, RUNS):
                sizes[run] = resident_kib()
    assert len(list((tmp_path / "out").glob("*.sql.gz"))) == 2  # retention kept up
    assert sizes[RUNS] - sizes[50] < 5 * 1024, sizes
