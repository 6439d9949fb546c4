"""Blocking calls on daemon threads: a cancelled caller returns at once, and a call that never
returns does not keep the process alive."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import pytest

from db_backup.threads import in_thread, submit


async def test_results_and_errors_come_back() -> None:
    assert await in_thread(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await in_thread(lambda: 1 / 0)


async def test_a_cancelled_caller_does_not_wait_for_a_blocked_call() -> None:
    release = threading.Event()
    entered = threading.Event()

    def blocked() -> str:
        entered.set()
        release.wait()
        return "late"

    task = asyncio.create_task(in_thread(blocked))
    await asyncio.get_running_loop().run_in_executor(None, entered.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # returns while the call is still blocked
    assert not release.is_set()
    release.set()


def test_threads_are_daemons() -> None:
    assert submit(lambda: threading.current_thread().daemon).result() is True


def test_a_call_that_never_returns_does_not_keep_a_cancelled_process_alive() -> None:
    """asyncio.to_thread here would make this process hang at exit, forever."""
    program = textwrap.dedent(
        """
        import asyncio, threading
        from db_backup.threads import in_thread

        async def main():
            task = asyncio.create_task(in_thread(threading.Event().wait))
            await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                print("cancelled")

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cancelled\n"
