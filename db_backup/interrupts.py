"""SIGINT and SIGTERM, for every command that does I/O: stop promptly, clean up, exit 130/143.

The first signal cancels the command's work (a backup run cancels its jobs, which stop their
children and remove their partial files); whatever is blocked in a thread is abandoned (see
threads.py). Should stopping still take longer than FORCED_EXIT_SECONDS — a dump program that
ignores SIGTERM gets TERMINATE_GRACE_SECONDS before SIGKILL, so that is the most a clean stop
needs — or a second signal arrive, the process exits at once: children killed, partial files
removed, the exit code of the first signal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from db_backup.process import TERMINATE_GRACE_SECONDS
from db_backup.threads import DaemonExecutor

T = TypeVar("T")

EXIT_SIGINT = 130
EXIT_SIGTERM = 143
SIGNAL_EXIT = {"SIGINT": EXIT_SIGINT, "SIGTERM": EXIT_SIGTERM}
FORCED_EXIT_SECONDS = TERMINATE_GRACE_SECONDS + 3.0


def exit_now(first_signal: str, why: str) -> None:
    """Kill every child, remove every partial file being written, and leave."""
    from db_backup.process import kill_all_now
    from db_backup.storage.local import remove_open_partials_now

    kill_all_now()
    remove_open_partials_now()
    sys.stderr.write(f"\ndb-backup: {why}: stopped immediately\n")
    sys.stderr.flush()
    os._exit(SIGNAL_EXIT[first_signal])


@dataclass
class Outcome(Generic[T]):
    """What a command's coroutine returned, or the signal that cancelled it first."""

    value: T | None = None
    interrupted_by: str | None = None  # "SIGINT" / "SIGTERM"
    received: list[str] = field(default_factory=list)


# Called with the signal's name on the first signal; returns True when it stops the work
# itself (a backup run cancelling its jobs), False to have the whole coroutine cancelled.
OnSignal = Callable[[str], bool]


def run_interruptible(
    main: Coroutine[Any, Any, T], on_signal: OnSignal | None = None
) -> Outcome[T]:
    """asyncio.run(main) with SIGINT/SIGTERM handled as the module says."""
    outcome: Outcome[T] = Outcome()

    async def guarded() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(DaemonExecutor())  # asyncio.run would wait for its threads
        task = asyncio.current_task()
        assert task is not None

        def received(sig: signal.Signals) -> None:
            outcome.received.append(sig.name)
            first = outcome.received[0]
            if len(outcome.received) > 1:
                exit_now(first, f"{sig.name} again")
            watchdog = threading.Timer(
                FORCED_EXIT_SECONDS,
                exit_now,
                (first, f"still stopping {FORCED_EXIT_SECONDS:g}s after {first}"),
            )
            watchdog.daemon = True
            watchdog.start()
            if on_signal is None or not on_signal(sig.name):
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, received, sig)
        try:
            outcome.value = await main
        except asyncio.CancelledError:
            if not outcome.received:
                raise
            outcome.interrupted_by = outcome.received[0]
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    asyncio.run(guarded())
    return outcome
