"""The serve loop's rules on a fake clock: a run still going when its task is due again is
not started twice, catch-up after downtime runs once, a reload keeps runs in progress and an
unchanged task's place, stop cancels what runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from db_backup.schedule import Task, parse_schedule
from db_backup.scheduler import Scheduler

START = datetime(2026, 12, 2, 0, 0, 30, tzinfo=UTC)
EVERY_MINUTE = parse_schedule("@every 60s", ZoneInfo("UTC"))


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Runs:
    """A `fire` whose runs last until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, task: Task) -> None:
        self.started.append(task.name)
        await self.release.wait()


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_task_still_running_when_due_again_is_skipped_not_doubled() -> None:
    clock, runs = Clock(), Runs()
    scheduler = Scheduler(runs, clock)
    scheduler.set_tasks([Task("backup", "a", EVERY_MINUTE)], {"a": START})  # ran just now
    assert scheduler.due_now() == []
    clock.advance(30)  # 00:01:00
    assert [slot.task.name for slot in scheduler.due_now()] == ["a"]
    clock.advance(60)  # due again, still running
    assert scheduler.due_now() == []
    [slot] = scheduler.slots.values()
    assert (slot.runs, slot.skipped) == (1, 1)
    assert slot.due == datetime(2026, 12, 2, 0, 3, tzinfo=UTC)
    runs.release.set()
    await settle()
    assert scheduler.in_progress == []
    clock.advance(60)  # 00:03:00
    assert len(scheduler.due_now()) == 1
    await settle()
    assert runs.started == ["a", "a"]


async def test_after_downtime_a_missed_task_runs_once_and_a_fresh_one_waits() -> None:
    clock, runs = Clock(), Runs()
    runs.release.set()
    scheduler = Scheduler(runs, clock)
    tasks = [Task("backup", "stale", EVERY_MINUTE), Task("backup", "fresh", EVERY_MINUTE)]
    scheduler.set_tasks(tasks, {"stale": START - timedelta(hours=5), "fresh": START})
    assert [slot.task.name for slot in scheduler.due_now()] == ["stale"]  # once, not 300 times
    await settle()
    assert scheduler.due_now() == []
    assert scheduler.seconds_to_next() == 30


async def test_a_reload_keeps_runs_in_progress_and_unchanged_places() -> None:
    clock, runs = Clock(), Runs()
    scheduler = Scheduler(runs, clock)
    a, b = Task("backup", "a", EVERY_MINUTE), Task("backup", "b", EVERY_MINUTE)
    scheduler.set_tasks([a, b], {"b": START})  # a never ran: due now
    assert len(scheduler.due_now()) == 1
    hourly = Task("backup", "b", parse_schedule("0 * * * *", ZoneInfo("UTC")))
    scheduler.set_tasks([a, hourly], {"a": START, "b": START})
    slots = scheduler.slots
    assert slots["backup:a"].running is not None  # the run in progress is kept...
    assert slots["backup:a"].due == datetime(2026, 12, 2, 0, 1, tzinfo=UTC)  # ...and its place
    assert slots["backup:b"].due == datetime(2026, 12, 2, 1, 0, tzinfo=UTC)  # the new schedule
    scheduler.stop()
    await scheduler.drain()
    assert slots["backup:a"].last_error == "cancelled"


async def test_jitter_delays_the_start_within_its_window() -> None:
    clock, runs = Clock(), Runs()
    scheduler = Scheduler(runs, clock)
    scheduler.set_tasks([Task("backup", "a", EVERY_MINUTE, jitter=20)], {"a": START})
    [slot] = scheduler.slots.values()
    delay = (slot.starts_at - slot.due).total_seconds()
    assert 0 <= delay < 20
    clock.now = slot.due
    assert delay == 0 or scheduler.due_now() == []
    clock.now = slot.starts_at
    assert len(scheduler.due_now()) == 1
    scheduler.stop()
    await scheduler.drain()


async def test_a_task_removed_while_running_is_kept_until_it_ends_and_never_doubled() -> None:
    clock, runs = Clock(), Runs()
    scheduler = Scheduler(runs, clock)
    a = Task("backup", "a", EVERY_MINUTE)
    scheduler.set_tasks([a], {})  # never ran: due now
    assert len(scheduler.due_now()) == 1
    scheduler.set_tasks([], {})  # removed from the config while it runs
    assert [slot.task.name for slot in scheduler.in_progress] == ["a"]
    scheduler.set_tasks([a], {})  # and back: its run is its run, not a second one
    assert scheduler.due_now() == []
    await settle()
    assert runs.started == ["a"]
    scheduler.set_tasks([], {})
    scheduler.stop()  # cancels what runs, configured or not
    await scheduler.drain()
    assert scheduler.in_progress == []
    assert scheduler.retired == {}


async def test_a_clock_set_back_does_not_hold_a_task_at_its_old_time() -> None:
    clock, runs = Clock(), Runs()
    runs.release.set()
    scheduler = Scheduler(runs, clock)
    scheduler.set_tasks([Task("backup", "a", EVERY_MINUTE)], {"a": START})
    clock.advance(-86_400)  # NTP corrects a clock that was a day ahead
    assert scheduler.due_now() == []
    [slot] = scheduler.slots.values()
    assert slot.due == START - timedelta(days=1) + timedelta(seconds=30)
