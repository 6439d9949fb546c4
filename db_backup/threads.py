"""Blocking calls off the event loop, on daemon threads that a cancelled run abandons.

`asyncio.to_thread` runs on the loop's default executor, whose threads are joined when
`asyncio.run` ends and again at interpreter exit: one call blocked on a silent S3 endpoint or
a stuck file system then keeps a stopped process alive until the call returns (seen: ~100 s
after SIGTERM). Here every call gets a daemon thread of its own. Cancelling the awaiting
coroutine returns at once; the thread finishes (or not) on its own, and the process exits
without waiting for it. Whoever abandons a call must not depend on its side effects.

One thread per call also means a long call (a job's pump holds its thread for a whole dump)
never queues the short ones behind it, as a fixed-size pool would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def submit(function: Callable[..., T], *args: object, name: str | None = None) -> Future[T]:
    """Run `function(*args)` on a new daemon thread, in a copy of the caller's context (its
    runtime, see runtime.py); the Future holds its outcome."""
    future: Future[T] = Future()
    future.set_running_or_notify_cancel()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # the Future carries it to whoever waits
            future.set_exception(exc)
        else:
            future.set_result(result)

    thread_name = name or f"db-backup {getattr(function, '__name__', 'call')}"
    threading.Thread(target=context.run, args=(target,), name=thread_name, daemon=True).start()
    return future


def _settle(future: asyncio.Future[T], done: Future[T]) -> None:
    if future.done():  # the awaiting coroutine was cancelled: nobody wants the outcome
        return
    error = done.exception()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(done.result())


def start_in_thread(
    function: Callable[..., T], *args: object, name: str | None = None
) -> asyncio.Future[T]:
    """Start `function(*args)` on a new daemon thread; the asyncio future resolves with its
    outcome. Cancelling the future abandons the call (the thread is not interrupted)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def relay(done: Future[T]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the run is over
            loop.call_soon_threadsafe(_settle, future, done)

    submit(function, *args, name=name).add_done_callback(relay)
    return future


async def in_thread(function: Callable[..., T], *args: object) -> T:
    """`await function(*args)` run on a daemon thread: asyncio.to_thread, abandonable."""
    return await start_in_thread(function, *args)


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """The event loop's default executor: what libraries run there (name lookups for httpx
    and aiosmtplib) gets a daemon thread of its own, which nobody waits for at exit — a DNS
    server that never answers must not keep a finished or stopped process alive. (A
    ThreadPoolExecutor only because asyncio accepts nothing else; its pool stays unused.)"""

    def submit(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> Future[T]:
        return submit(functools.partial(fn, *args, **kwargs))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass  # abandoned, as every call here
