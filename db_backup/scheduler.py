"""The resident loop of `db-backup serve`: fires each scheduled task at its times, never two
runs of one task at once, catches up once after downtime, and takes a new set of tasks
(SIGHUP) or stops (SIGTERM/SIGINT) on request.

What a task does is the caller's `fire` (cli/serving.py runs a backup through the same
BackupRun as `backup`, under limits shared by every run); the times come from schedule.py.
The clock is injected, so the rules here are tested without waiting.

A task still running when it is due again is not started twice: that slot is skipped with a
warning, and the task runs at its next slot after it finished (a backup that regularly
outlasts its interval needs a longer one, which the warning says).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from db_backup.schedule import MANUAL, Task, missed

log = logging.getLogger(__name__)

# The loop wakes at least this often, so a beat older than a few of these means it is stuck.
HEARTBEAT_SECONDS = 5.0

Fire = Callable[[Task], Awaitable[object]]
Clock = Callable[[], datetime]


@dataclass
class Slot:
    """One task's state: when it is next due, and its run in progress if any."""

    task: Task
    due: datetime  # the next due time (UTC), before jitter
    running: asyncio.Task[object] | None = None
    started_at: datetime | None = None
    runs: int = 0  # started since serve started
    skipped: int = 0  # slots passed over while it still ran
    last_finished_at: datetime | None = None
    last_error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.task.kind}:{self.task.name}"

    @property
    def starts_at(self) -> datetime:
        return self.task.start(self.due)

    @property
    def next_start(self) -> datetime | None:
        """When it next starts by itself; None for a task that only runs when asked."""
        return None if self.task.schedule is MANUAL else self.starts_at


@dataclass
class Scheduler:
    """Owns the slots; `run()` until `stop()`."""

    fire: Fire
    clock: Clock
    slots: dict[str, Slot] = field(default_factory=dict)
    retired: dict[str, Slot] = field(default_factory=dict)  # unconfigured, still running
    heartbeat: datetime | None = None  # when the loop last went round (`/healthz`)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    def set_tasks(self, tasks: Sequence[Task], last_success: Mapping[str, datetime]) -> None:
        """Take a new set of tasks (at start, and on reload). A task whose last success
        (from the catalog) is older than its latest due time is due now — once, however
        many slots passed (or still at its jittered start, if that is yet to come); the
        others at their next slot. A task still running keeps its run, also when it is no
        longer configured (then it is kept aside until it ends, stopped with the rest)."""
        now = self.clock()
        fresh: dict[str, Slot] = {}
        for task in tasks:
            key = f"{task.kind}:{task.name}"
            known = self.slots.get(key) or self.retired.pop(key, None)
            last = last_success.get(task.name) if task.kind == "backup" else now
            if missed(task.schedule, last, now):
                latest = task.schedule.last_due(now)
                due = latest if latest is not None and task.start(latest) > now else now
            else:
                due = task.schedule.next_after(now)
            if known is not None and known.task == task:
                due = known.due  # unchanged: keep its place (a reload is not a catch-up)
            slot = Slot(task, due)
            if known is not None:
                slot.running, slot.started_at = known.running, known.started_at
                slot.runs, slot.skipped = known.runs, known.skipped
                slot.last_finished_at, slot.last_error = known.last_finished_at, known.last_error
            fresh[key] = slot
        for key, old in self.slots.items():
            if key not in fresh and old.running is not None and not old.running.done():
                self.retired[key] = old
        self.slots = fresh
        self._wake.set()

    def due_now(self) -> list[Slot]:
        """Fire what is due (or skip it, if it still runs); advance each past now."""
        now = self.clock()
        fired = []
        for slot in self.slots.values():
            following = slot.task.schedule.next_after(now)
            if slot.due > following:  # the clock went back: do not wait for the old time
                slot.due = following
            if slot.starts_at > now:
                continue
            if slot.running is not None and not slot.running.done():
                slot.skipped += 1
                log.warning(
                    "%s %s is still running (since %s): the run due at %s is skipped; "
                    "it runs again at its next time",
                    slot.task.kind,
                    slot.task.name,
                    slot.started_at.isoformat(timespec="seconds") if slot.started_at else "?",
                    slot.due.isoformat(timespec="seconds"),
                )
            else:
                self._start(slot, now)
                fired.append(slot)
            slot.due = slot.task.schedule.next_after(max(now, slot.due))
        return fired

    def start_now(self, task: Task) -> bool:
        """Run `task` now, outside its schedule (the web UI's "run now"); False when it is
        running already. Its schedule goes on as before."""
        key = f"{task.kind}:{task.name}"
        slot = self.slots.get(key)
        if slot is None:  # not scheduled: a slot that only ever runs when asked
            slot = self.slots[key] = Slot(task, task.schedule.next_after(self.clock()))
        if slot.running is not None and not slot.running.done():
            return False
        self._start(slot, self.clock())
        return True

    def _start(self, slot: Slot, now: datetime) -> None:
        slot.runs += 1
        slot.started_at = now
        slot.running = asyncio.ensure_future(self.fire(slot.task))

        def finished(run: asyncio.Future[object]) -> None:
            error = None if run.cancelled() else run.exception()
            if error is not None:
                log.error("%s %s failed: %s", slot.task.kind, slot.task.name, error)
            # The slot of now: a reload may have replaced the one this run started from.
            current = self.slots.get(slot.key) or self.retired.get(slot.key) or slot
            current.last_finished_at = self.clock()
            current.last_error = (
                "cancelled" if run.cancelled() else str(error) if error is not None else None
            )
            if self.retired.get(slot.key) is current:
                del self.retired[slot.key]
            self._wake.set()

        slot.running.add_done_callback(finished)

    def seconds_to_next(self) -> float | None:
        """Until the earliest start among the slots; None when nothing is scheduled."""
        if not self.slots:
            return None
        now = self.clock()
        return max(0.0, min((s.starts_at - now).total_seconds() for s in self.slots.values()))

    async def run(self) -> None:
        """Fire tasks at their times until stop(); then wait for the runs in progress (the
        caller cancels them first, see `stop`)."""
        while not self._stopping:
            self.heartbeat = self.clock()
            self.due_now()
            self._wake.clear()
            next_in = self.seconds_to_next()
            wait = HEARTBEAT_SECONDS if next_in is None else min(next_in, HEARTBEAT_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
        await self.drain()

    def stop(self) -> None:
        """Stop scheduling and cancel every run in progress (their jobs stop their dumps and
        remove their partial files, as a cancelled `backup` does)."""
        self._stopping = True
        for slot in self.in_progress:
            assert slot.running is not None
            slot.running.cancel()
        self._wake.set()

    async def drain(self) -> None:
        """Wait for every run in progress to end."""
        running = [slot.running for slot in self.in_progress if slot.running is not None]
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def in_progress(self) -> list[Slot]:
        """Every slot with a run going, also those no longer configured."""
        slots = [*self.slots.values(), *self.retired.values()]
        return [s for s in slots if s.running is not None and not s.running.done()]
