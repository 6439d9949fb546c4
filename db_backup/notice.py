"""Nothing waits silently: a wait that lasts is announced, with what is awaited and for how long.

Wrapped around every slow step outside a dump (a lock, discovery, a target's check, a job's
connection check and commit): after WAIT_NOTICE_SECONDS a `Waiting` event names it, again every
WAIT_REPEAT_SECONDS, and once more when the wait is over. Quick steps say nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from db_backup.model import JobSpec, Waiting

WAIT_NOTICE_SECONDS = 2.0
WAIT_REPEAT_SECONDS = 10.0

Tell = Callable[[Waiting], None]


@asynccontextmanager
async def waiting_notice(
    tell: Tell | None, what: str, job: JobSpec | None = None
) -> AsyncIterator[None]:
    """Announce `what` through `tell` if the block takes longer than WAIT_NOTICE_SECONDS."""
    if tell is None:
        yield
        return
    started = time.monotonic()
    told = False

    async def announce() -> None:
        nonlocal told
        await asyncio.sleep(WAIT_NOTICE_SECONDS)
        while True:
            told = True
            tell(Waiting(what, time.monotonic() - started, job=job))
            await asyncio.sleep(WAIT_REPEAT_SECONDS)

    announcer = asyncio.create_task(announce())
    try:
        yield
    finally:
        announcer.cancel()
        if told:
            tell(Waiting(what, time.monotonic() - started, over=True, job=job))
