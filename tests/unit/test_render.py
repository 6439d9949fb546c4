"""Renderers: readable with hundreds of jobs; plain output free of escape codes."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from db_backup.cli.live import LiveRenderer
from db_backup.cli.render import PlainRenderer
from db_backup.config.load import parse_config
from db_backup.model import (
    JobEvent,
    JobFinished,
    JobProgress,
    JobQueued,
    JobResult,
    JobStarted,
    JobStatus,
)
from db_backup.plan import build_plan


def many_jobs(count: int):  # type: ignore[no-untyped-def]
    text = "backups:\n" + "".join(
        f"  - {{name: job{i:03d}, database: db{i}, storage: {{path: /b}}}}\n" for i in range(count)
    )
    return build_plan(parse_config(text, environ={}), datetime.now(UTC)).jobs


def test_hundreds_of_jobs_show_running_rows_plus_counts() -> None:
    jobs = many_jobs(300)
    screen = io.StringIO()
    renderer = LiveRenderer(Console(file=screen, force_terminal=True, width=120))
    try:
        for job in jobs:
            renderer(JobQueued(job))
        for job in jobs[:4]:
            renderer(JobStarted(job, estimated_bytes=1000))
            renderer(JobProgress(job, raw_bytes=500, stored_bytes=100))
        for job in jobs[:2]:
            renderer(JobFinished(JobResult(job, JobStatus.SUCCEEDED)))
        renderer(JobFinished(JobResult(jobs[2], JobStatus.FAILED, error="boom")))
        rows = renderer.rows
    finally:
        renderer.close()
    # overall + 1 still running + 3 waiting — not 300 rows
    assert rows[0].startswith("3/300 done · 1 running · 296 queued")
    assert "1 failed" in rows[0]
    assert sorted(rows[1:]) == ["job003", "job004", "job005", "job006"]
    assert "FAILED   job002" in screen.getvalue()


def test_plain_renderer_lines_and_quiet_mode() -> None:
    job = many_jobs(1)[0]
    events: list[JobEvent] = [
        JobStarted(job, None),
        JobProgress(job, 10, 5),
        JobFinished(JobResult(job, JobStatus.FAILED, error="pg_dump exited with code 1")),
    ]
    loud, quiet = io.StringIO(), io.StringIO()
    for stream, is_quiet in ((loud, False), (quiet, True)):
        renderer = PlainRenderer(stream, quiet=is_quiet)
        for event in events:
            renderer(event)
    assert [line.split(" ", 1)[1] for line in loud.getvalue().splitlines()] == [
        "start    job000 (database 'db0' on local socket:5432)",
        "FAILED   job000 (database 'db0' on local socket:5432): pg_dump exited with code 1",
    ]
    assert quiet.getvalue().splitlines()[0].endswith("pg_dump exited with code 1")
    assert len(quiet.getvalue().splitlines()) == 1
    assert "\x1b" not in loud.getvalue()


def test_a_wait_that_lasts_gets_a_row_until_it_is_over_and_plain_lines() -> None:
    from db_backup.model import Waiting

    what = "s3://b/ at http://127.0.0.1:9: looking for what interrupted runs left"
    screen = io.StringIO()
    renderer = LiveRenderer(Console(file=screen, force_terminal=True, width=160))
    try:
        renderer(Waiting(what, 2.0))
        renderer(Waiting(what, 12.0))  # said again: still one row
        during = renderer.rows
        renderer(Waiting(what, 13.5, over=True))
        after = renderer.rows
    finally:
        renderer.close()
    assert during[1:] == [f"waiting: {what}"]
    assert after[1:] == []

    plain = io.StringIO()
    lines = PlainRenderer(plain)
    for event in (Waiting(what, 2.0), Waiting(what, 13.5, over=True)):
        lines(event)
    assert [line.split(" ", 1)[1] for line in plain.getvalue().splitlines()] == [
        f"waiting  {what} (2.0s so far)",
        f"waited   {what}: 13.5s",
    ]


def test_the_live_view_prints_user_text_literally() -> None:
    from db_backup.model import Waiting

    job = many_jobs(1)[0]
    screen = io.StringIO()
    renderer = LiveRenderer(Console(file=screen, force_terminal=True, width=160))
    try:
        renderer(Waiting("connecting to [bold red]x[/]", 2.0))
        renderer(JobQueued(job))
        renderer(JobFinished(JobResult(job, JobStatus.FAILED, error='database "x[/]" missing')))
        renderer.note("[/] a note")
        rows = renderer.rows
    finally:
        renderer.close()
    assert "waiting: connecting to [bold red]x[/]" in rows
    assert 'database "x[/]" missing' in screen.getvalue()
    assert "[/] a note" in screen.getvalue()
