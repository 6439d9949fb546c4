"""Limits shared by runs (as `serve` shares them): two runs at once, each of two jobs, with
one Limits of concurrency 1 never have two jobs running; with a Limits each (as two
separate `backup` processes would), they do. Counted from the job events, in-process, against
stores in memory and an engine whose dump is a real child process (tests/memory.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

from db_backup.config.load import parse_config
from db_backup.model import JobEvent, JobFinished, JobStarted, JobStatus
from db_backup.orchestrator import Limits, Orchestrator
from db_backup.plan import build_plan, host_limits_of
from db_backup.runtime import Runtime, using
from tests.memory import MemoryStore, ScriptSource, stores_by_label

NOW = datetime(2026, 12, 2, 3, 0, 0, tzinfo=UTC)


def config(first: str) -> str:
    return f"""\
concurrency: 4
backups:
  - {{name: {first}_1, database: one, storage: {{path: /{first}}}}}
  - {{name: {first}_2, database: two, storage: {{path: /{first}}}}}
"""


@contextlib.contextmanager
def fresh_runtime() -> Iterator[Runtime]:
    """Empty stores in memory for both runs' targets, and the script engine."""
    source = ScriptSource()
    stores = stores_by_label(MemoryStore("/a"), MemoryStore("/b"))
    with using(Runtime(clock=lambda: NOW, make_store=stores, find_source=lambda _: source)) as r:
        yield r


class Overlap:
    """The most jobs running at once, from JobStarted / JobFinished of every run."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def __call__(self, event: JobEvent) -> None:
        if isinstance(event, JobStarted):
            self.now += 1
            self.most = max(self.most, self.now)
        elif isinstance(event, JobFinished) and event.result.started_at is not None:
            self.now -= 1


async def two_runs_at_once(shared: Limits | None) -> int:
    with fresh_runtime():
        return await _two_runs(shared)


async def _two_runs(shared: Limits | None) -> int:
    overlap = Overlap()
    runs = [
        Orchestrator(
            build_plan(parse_config(config(name), environ={}), NOW),
            [overlap],
            shared if shared is not None else Limits(2),
        )
        for name in ("a", "b")
    ]
    reports = await asyncio.gather(*(run.run() for run in runs))
    statuses = {result.status for report in reports for result in report.results}
    errors = [r.error for report in reports for r in report.results]
    assert statuses == {JobStatus.SUCCEEDED}, errors
    return overlap.most


async def test_one_shared_limit_holds_across_runs_and_separate_ones_do_not() -> None:
    assert await two_runs_at_once(Limits(1)) == 1
    assert await two_runs_at_once(None) > 1  # the control: the count can see overlap


async def test_a_servers_smallest_max_per_host_binds_every_run_on_it() -> None:
    """serve's limits come from the whole config: a run of a backup without `max_per_host`
    still keeps to what another backup on the same server asks for."""
    whole = parse_config(config("a").replace("database: two,", "database: two, max_per_host: 1,"),
                         environ={})  # fmt: skip
    limits = Limits(4, host_limits_of(whole.backups))
    assert list(host_limits_of(whole.backups).values()) == [1]
    with fresh_runtime():
        overlap = Overlap()
        plain = build_plan(parse_config(config("a"), environ={}), NOW)  # no max_per_host
        report = await Orchestrator(plain, [overlap], limits).run()
    assert {result.status for result in report.results} == {JobStatus.SUCCEEDED}
    assert overlap.most == 1
