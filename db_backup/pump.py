"""The pump: a dump's bytes from the child's pipe through the pipeline to every target, on a
thread of its own, never the event loop."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence

from db_backup.delivery import Delivery, abort_all, deliver_all
from db_backup.integrity import ReadThrough
from db_backup.process import Child
from db_backup.sources.base import ContentCounter
from db_backup.stages import Pipeline
from db_backup.threads import start_in_thread

# Large reads keep per-chunk overhead (system call, write call) negligible.
CHUNK_SIZE = 1024 * 1024
# A dump that writes in small pieces (mariadb-dump: 4 KiB, stdio's buffer on a pipe) is read in
# 4 KiB reads however large the pipe; they are gathered to this size before the pipeline sees
# them, so the per-chunk work (compressor call, hash, count, one write per target) is paid
# once per BATCH_BYTES, not per 4 KiB.
BATCH_BYTES = 256 * 1024
PROGRESS_SECONDS = 0.1
# A cancelled job waits this long for its pump thread to notice, then abandons it.
PUMP_STOP_SECONDS = 2.0


def read_batch(source: int) -> bytes:
    """At least BATCH_BYTES from the pipe `source` (less only at its end; b"" at EOF)."""
    first = os.read(source, CHUNK_SIZE)
    if not first or len(first) >= BATCH_BYTES:
        return first
    parts = [first]
    size = len(first)
    while size < BATCH_BYTES and (more := os.read(source, CHUNK_SIZE)):
        parts.append(more)
        size += len(more)
    return b"".join(parts)


async def pump(
    child: Child,
    pipeline: Pipeline,
    deliveries: Sequence[Delivery],
    check: ReadThrough | None,
    on_progress: Callable[[], None],
    counter: ContentCounter | None = None,
) -> None:
    """Move the child's whole output through the pipeline to the targets, on a worker thread;
    the read-through `check` and the content `counter` (if any) see the dump's own bytes.

    The data path never touches the event loop: one thread reads the pipe, compresses and
    hands the bytes to every target (measured on pgbench rows: 1.52 s against 2.13 s for
    reads on the event loop with compression handed to threads per chunk; `pg_dump >
    /dev/null` took 1.65 s). A target that is behind blocks this thread, and so the dump:
    back-pressure, not memory. The loop only hears about progress, every PROGRESS_SECONDS.
    """
    loop = asyncio.get_running_loop()
    assert child.stdout_fd is not None
    last_report = [0.0]

    def report() -> None:
        now = time.monotonic()
        if now - last_report[0] >= PROGRESS_SECONDS:
            last_report[0] = now
            loop.call_soon_threadsafe(on_progress)

    def drain(source: int) -> None:
        try:
            _drain(source)
        finally:
            os.close(source)

    def _drain(source: int) -> None:
        while chunk := read_batch(source):
            stored = pipeline.feed(chunk)
            if check is not None:
                check.write(chunk)
            if counter is not None:
                counter.feed(chunk)
            deliver_all(deliveries, stored, chunk)
            report()

    # Its own thread (see threads.py): a pump holds it for a whole dump.
    # The thread reads its own copy of the fd: spawn closes the original when the job's block
    # ends, and an abandoned thread must never read a number some new socket reuses.
    source = os.dup(child.stdout_fd)
    worker = start_in_thread(drain, source, name=f"pump {child.command.split()[0]}")
    try:
        await asyncio.shield(worker)
    except asyncio.CancelledError:
        # End the child (the pump then reads EOF) and the uploads (a pump waiting on a silent
        # target wakes up and fails), then let the thread finish. One still blocked after
        # PUMP_STOP_SECONDS (a hung file system) is abandoned: it is a daemon thread.
        await child.terminate()
        await abort_all(deliveries)
        await asyncio.wait([worker], timeout=PUMP_STOP_SECONDS)
        if worker.done():
            worker.exception()  # what it died of is no news: the job is being cancelled
        else:
            worker.cancel()
        raise
    on_progress()
