"""The only place db-backup spawns programs: argv only, secrets in env, every child owned.

A child runs in its own session, so a Ctrl-C on the terminal reaches the runner alone and the
runner decides how children end: on error or cancellation they get SIGTERM, then SIGKILL after
a grace period, and are always reaped. stderr is drained concurrently into a bounded tail, so a
chatty child can neither block on a full pipe nor grow our memory.

Even a runner killed with SIGKILL leaves no child behind: children start under
`setpriv --pdeathsig KILL` (util-linux, on every Debian), so the kernel kills them when we die.
(preexec_fn could call prctl itself, but it is unsafe in a process with threads, and the
compression threads are always there.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from db_backup.errors import ToolNotFoundError
from db_backup.redact import mask_command

log = logging.getLogger(__name__)

TERMINATE_GRACE_SECONDS = 5.0
STDERR_TAIL_LINES = 20
STDERR_TAIL_LINE_BYTES = 1000
# The child's stdout pipe holds this much (Linux's default is 64 KiB): the dump runs ahead of
# a busy compressor by 1 MiB at most, in ~16x fewer, larger reads.
PIPE_BYTES = 1024 * 1024

_live: set[Child] = set()
# Where argv names an `inherited_file` (see spawn): replaced by /dev/fd/N of an inherited pipe.
INHERITED_FILE = "<inherited-file>"
_SETPRIV = shutil.which("setpriv")


def with_death_signal(argv: Sequence[str]) -> list[str]:
    """argv wrapped so the child is SIGKILLed when the runner dies, where setpriv exists."""
    if _SETPRIV is None:
        return list(argv)
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


@dataclass(eq=False)
class Child:
    """A running child process we own; see `spawn`."""

    process: asyncio.subprocess.Process
    command: str
    # The read end of the child's stdout, for a blocking reader thread (see job.py); None
    # when the output is discarded. Closed by `spawn` when the block ends.
    stdout_fd: int | None = None
    # The write end of the child's stdin when it was asked for (`feed_stdin`); writes block
    # while the child is behind. `close_stdin()` sends EOF.
    stdin_fd: int | None = None
    _stderr: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    _drain: asyncio.Task[None] | None = None
    # Sees every stderr line, not only the tail (e.g. to judge each error a restore reports).
    on_stderr: Callable[[str], None] | None = None
    # Held while writing to stdin and while closing it: a writer thread must never write to
    # the fd number after it was closed — the next socket opened may reuse the number (seen:
    # dump bytes sent into a new PostgreSQL connection).
    _stdin_lock: threading.Lock = field(default_factory=threading.Lock)

    def write_stdin(self, data: bytes) -> bool:
        """Write all of `data` to the child's stdin (blocking while it is behind); False when
        it can take no more: it exited, or its stdin was closed."""
        with self._stdin_lock:
            if self.stdin_fd is None:
                return False
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.stdin_fd, view) :]
            except BrokenPipeError:
                return False
            return True

    def stderr_tail(self) -> str:
        """The last lines the child wrote to stderr, joined for an error message."""
        return " | ".join(line for line in self._stderr if line)

    async def wait(self) -> int:
        """Wait for exit (and for stderr to be fully read); returns the exit code."""
        code = await self.process.wait()
        if self._drain is not None:
            await self._drain
        return code

    async def terminate(self, grace: float = TERMINATE_GRACE_SECONDS) -> None:
        """SIGTERM the child's process group, SIGKILL after `grace` seconds, then reap."""
        if self.process.returncode is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await self.process.wait()
        except TimeoutError:
            log.warning("%s ignored SIGTERM for %.0fs; killing it", self.command, grace)
            self._signal(signal.SIGKILL)
            await self.process.wait()
        except asyncio.CancelledError:
            self._signal(signal.SIGKILL)  # cancelled again while stopping: no more grace
            raise

    def close_stdin(self) -> None:
        """Send EOF on the child's stdin (if it has one from us); safe to call twice. Waits
        for a write in progress (stop the child first if it may never read again)."""
        with self._stdin_lock:
            if self.stdin_fd is not None:
                fd, self.stdin_fd = self.stdin_fd, None
                os.close(fd)

    def kill_now(self) -> None:
        """SIGKILL without waiting; for an immediate exit of the whole runner."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    async def _read_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the buffer: keep its start
                line = await stream.read(STDERR_TAIL_LINE_BYTES)
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            self._stderr.append(text[:STDERR_TAIL_LINE_BYTES])
            if self.on_stderr is not None:
                self.on_stderr(text)
            log.debug("%s: %s", self.command.split(" ", 1)[0], text)


def _filled_pipe(content: bytes) -> int:
    """The read end of a pipe that holds `content` and then EOF (the write end is closed).
    A pipe holds 64 KiB before a writer blocks: plenty for an option file."""
    if len(content) > 60_000:
        raise ValueError("a secret file must fit in a pipe (60 kB)")
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(write_end, content)
    finally:
        os.close(write_end)
    return read_end


def _stdout_pipe() -> tuple[int, int]:
    """A pipe for a child's stdout, enlarged where the kernel allows."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return read_end, write_end


@contextlib.asynccontextmanager
async def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    capture_stdout: bool = True,
    feed_stdin: bool = False,
    on_stderr: Callable[[str], None] | None = None,
    inherited_file: bytes | None = None,
) -> AsyncIterator[Child]:
    """Start `argv`, its stdout piped to `child.stdout_fd` (or discarded) and, with
    `feed_stdin`, its stdin from `child.stdin_fd`; on leaving the block the child is gone
    and the pipes closed. `inherited_file`: a small file (a client option file with a password)
    the child reads from an inherited pipe, named where argv says INHERITED_FILE — neither in
    argv nor on any disk, and gone with the child, however the run ends.

    If the block raises (or is cancelled) while the child still runs, the child is terminated
    and reaped before the exception continues.
    """
    command = mask_command(argv)
    log.debug("spawning %s", command)
    inherited_read = _filled_pipe(inherited_file) if inherited_file is not None else None
    if inherited_read is not None:
        argv = [arg.replace(INHERITED_FILE, f"/dev/fd/{inherited_read}") for arg in argv]
    read_end, write_end = _stdout_pipe() if capture_stdout else (None, None)
    stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC) if feed_stdin else (None, None)
    try:
        process = await asyncio.create_subprocess_exec(
            *with_death_signal(argv),
            stdin=stdin_read if stdin_read is not None else asyncio.subprocess.DEVNULL,
            stdout=write_end if write_end is not None else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
            pass_fds=() if inherited_read is None else (inherited_read,),
        )
    except BaseException as exc:  # also cancellation: never leak the read end
        for fd in (read_end, stdin_write):
            if fd is not None:
                os.close(fd)
        if isinstance(exc, OSError):
            raise ToolNotFoundError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        raise
    finally:
        for fd in (write_end, stdin_read, inherited_read):  # the child has its copies; ours
            if fd is not None:  # would keep EOF (or EPIPE) from coming
                os.close(fd)
    child = Child(process, command, read_end, stdin_write, on_stderr=on_stderr)
    child._drain = asyncio.create_task(child._read_stderr())
    _live.add(child)
    try:
        yield child
    finally:
        try:
            # Stop it before its stdin closes: EOF would tell a restore program that the
            # input is complete (psql would commit), while the block may be failing.
            await child.terminate()
            child.close_stdin()
        finally:
            _live.discard(child)
            if child._drain is not None and not child._drain.done():
                child._drain.cancel()
            if read_end is not None:
                os.close(read_end)


_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")


class BlockingChild:
    """A child for a caller on a worker thread (a store's restic): subprocess.Popen under the
    same rules as `spawn` — argv only, its own session, killed with the runner — and its
    stderr drained by a thread into a bounded tail. stdout is a pipe the caller reads (a
    stream), unless `collect_output`: then a thread gathers it (a command's small answer)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        stdin: bool = False,
        collect_output: bool = True,
    ) -> None:
        self.command = mask_command(argv)
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._output: list[bytes] = []
        try:
            # Started by one long-lived thread: the kernel's death signal fires when the
            # *thread* that forked the child ends, and the caller's worker thread may end first.
            self.process = _SPAWNER.submit(
                subprocess.Popen,
                with_death_signal(argv),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                start_new_session=True,
            ).result()
        except FileNotFoundError:
            raise ToolNotFoundError(f"{argv[0]} not found") from None
        _live_blocking.add(self)
        assert self.process.stdout is not None
        self.stdout = self.process.stdout
        self._readers = [threading.Thread(target=self._drain_stderr, daemon=True)]
        if collect_output:
            self._readers.append(threading.Thread(target=self._collect, daemon=True))
        for reader in self._readers:
            reader.start()

    def wait(self, timeout: float | None) -> int:
        """The exit code, once the child exited and its output was read; TimeoutExpired if
        it is still running after `timeout` seconds."""
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        _live_blocking.discard(self)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):  # stdin: a write it never read
                    pipe.close()
        return code

    def output(self) -> bytes:
        """What it wrote to stdout (with `collect_output`), once it exited."""
        return b"".join(self._output)

    def stderr_tail(self) -> str:
        """The last lines it wrote to stderr, joined for an error message."""
        return " | ".join(line for line in self._stderr if line)

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.signal(signal.SIGKILL)
        self.wait(None)

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            self._stderr.append(text[:STDERR_TAIL_LINE_BYTES])

    def _collect(self) -> None:
        while chunk := self.stdout.read(64 * 1024):
            self._output.append(chunk)


_live_blocking: set[BlockingChild] = set()


def kill_all_now() -> int:
    """SIGKILL every child still running; returns how many were signalled."""
    children = list(_live)
    for child in children:
        child.kill_now()
    blocking = list(_live_blocking)
    for other in blocking:
        other.signal(signal.SIGKILL)
    return len(children) + len(blocking)
