"""Encryption with age (age-encryption.org/v1): the stage that encrypts a backup to its
recipients' public keys, and its inverse, which decrypts with an identity file.

Both run the `age` program (Debian's `age` package) as a filter child: our bytes go to its
stdin, a reader thread collects its stdout. Measured against pyrage (the Rust crate's Python
bindings) on 400 MiB beside a thread compressing with isal, as another job would: age ran at
390-470 MB/s and left the neighbour 1200-1600 chunks/s; pyrage's streaming call holds the
GIL throughout (it never releases it), ran at 250 MB/s and left the neighbour 220-320 chunks/s.
The child also makes what db-backup writes exactly what the stock `age -d` reads. pyrage stays
for parsing keys and `keygen` (keys.py), where no stream is involved.

The plaintext only ever passes through pipes to the child: never a file, never a buffer
larger than a chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from db_backup.errors import (
    BackupError,
    DamagedStreamError,
    DumpError,
    ToolNotFoundError,
    WrongIdentityError,
)
from db_backup.manifest import Encrypted
from db_backup.process import Child, spawn
from db_backup.stages import ENCRYPTED_SUFFIX

READ_SIZE = 64 * 1024  # what age writes at a time (its chunk size)
# How long a filter waits for `age` to exit once its output ended (it exits as it closes it).
EXIT_WAIT_SECONDS = 30.0


def find_age() -> str:
    """The `age` program on PATH."""
    found = shutil.which("age")
    if found is None:
        raise ToolNotFoundError("age not found: install Debian's age package (apt install age)")
    return found


class _Filter:
    """Bytes through a running child from a synchronous caller (the pump's or a reader's
    thread): `feed` writes them to its stdin while a reader thread drains its stdout (so
    neither pipe can fill and block the other) and returns what came out so far; `finish`
    sends EOF and returns the rest once the child exited. Made on the event loop, which
    watches for the child's exit: the caller's thread learns the exit code without reaping."""

    def __init__(self, child: Child) -> None:
        assert child.stdout_fd is not None
        assert child.stdin_fd is not None
        self._child = child
        self._out: list[bytes] = []
        self._lock = threading.Lock()
        self._exited = threading.Event()
        self.exit_code: int | None = None
        self._watch = asyncio.ensure_future(self._watch_exit())
        # Its own copy of the fd: spawn closes the original when the block ends.
        self._reader = threading.Thread(
            target=self._read, args=(os.dup(child.stdout_fd),), name="age out", daemon=True
        )
        self._reader.start()

    async def _watch_exit(self) -> None:
        try:
            self.exit_code = await self._child.wait()  # stderr is read to its end by then
        finally:  # also when the block ends first: a waiting thread must not wait in vain
            if self.exit_code is None:
                self.exit_code = self._child.process.returncode
            self._exited.set()

    def _read(self, source: int) -> None:
        try:
            while chunk := os.read(source, READ_SIZE):
                with self._lock:
                    self._out.append(chunk)
        finally:
            os.close(source)

    def _take(self) -> bytes:
        with self._lock:
            out, self._out = self._out, []
        return b"".join(out)

    def _feed(self, data: bytes) -> bytes:
        if not self._child.write_stdin(data):  # it exited: say why
            self._exited.wait(EXIT_WAIT_SECONDS)
            raise self._failure()
        return self._take()

    def _finish(self) -> bytes:
        self._child.close_stdin()
        self._reader.join()
        if not self._exited.wait(EXIT_WAIT_SECONDS) or self.exit_code != 0:
            raise self._failure()
        return self._take()

    def said(self) -> str:
        """What age said on stderr, without its "report errors at" line."""
        lines = self._child.stderr_tail().split(" | ")
        return " | ".join(line for line in lines if "report unexpected" not in line)

    def _failure(self) -> Exception:
        raise NotImplementedError

    def stop_watching(self) -> None:
        """Called once the child is gone (and reaped): the watch has nothing left to see."""
        self._watch.cancel()


F = TypeVar("F", bound=_Filter)


class AgeEncryption(_Filter):
    """The encryption stage (stages.Stage): compressed bytes in, an age file out."""

    suffix = ENCRYPTED_SUFFIX

    def __init__(self, child: Child, recipients: Sequence[str]) -> None:
        super().__init__(child)
        self._record = Encrypted(recipients=tuple(recipients))

    @property
    def record(self) -> Encrypted:
        return self._record

    def feed(self, data: bytes) -> bytes:
        return self._feed(data)

    def flush(self) -> bytes:
        return self._finish()

    def close(self) -> None:
        pass  # the child and its pipes belong to `encrypting`'s block

    def _failure(self) -> Exception:
        code = "still running" if self.exit_code is None else f"exited with code {self.exit_code}"
        return DumpError(f"age (encrypting) {code}", stderr_tail=self.said())


class AgeDecryption(_Filter):
    """The inverse (stages.Inverse): an age file in, what was encrypted out. Its errors
    (DamagedStreamError) say which of the three it was: no identity fits, a chunk failed
    authentication (changed bytes, or cut short), or no age file at all."""

    name = "age encryption"
    complete = "decrypted: every chunk authenticated (age)"

    def __init__(self, child: Child, identity_file: str) -> None:
        super().__init__(child)
        self._identity_file = identity_file

    def feed(self, data: bytes) -> bytes:
        return self._feed(data)

    def finish(self) -> bytes:
        return self._finish()

    def _failure(self) -> Exception:
        said = self.said()
        if self.exit_code is None or self.exit_code < 0:  # age itself failed, not the file
            how = "did not exit" if self.exit_code is None else f"was killed ({-self.exit_code})"
            return BackupError(f"age (decrypting) {how}: {said or 'no message'}")
        if "no identity matched" in said:
            return WrongIdentityError(
                f"no identity in {self._identity_file} matches any recipient of this backup"
            )
        if "authenticate payload chunk" in said or "unexpected EOF" in said:
            reason = "a chunk failed authentication: the file was changed or cut short"
        elif "failed to read header" in said:
            reason = "no age header: cut short, or not an age file"
        elif "reading" in said and self._identity_file in said:
            return WrongIdentityError(f"identity file {self._identity_file}: {said}")
        else:
            reason = said or f"age exited with code {self.exit_code}"
        return DamagedStreamError(reason)


def _recipient_args(recipients: Sequence[str]) -> list[str]:
    return [arg for recipient in recipients for arg in ("-r", recipient)]


# What age needs of our environment: finding itself and speaking the locale; none of the
# runner's secrets (PGPASSWORD, AWS_*) go to it.
_AGE_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "TMPDIR")


def _age_env() -> dict[str, str]:
    return {name: os.environ[name] for name in _AGE_ENVIRONMENT if name in os.environ}


@contextlib.asynccontextmanager
async def _running(argv: list[str], make: Callable[[Child], F]) -> AsyncIterator[F]:
    """`age` with `argv`, wrapped by `make`; gone (and its exit watch ended) after the block."""
    made = None
    try:
        async with spawn(argv, _age_env(), feed_stdin=True) as child:
            made = make(child)
            yield made
    finally:
        if made is not None:
            made.stop_watching()


@contextlib.asynccontextmanager
async def encrypting(recipients: Sequence[str]) -> AsyncIterator[AgeEncryption]:
    """An encryption stage to `recipients` (public keys, checked by the config loader); the
    `age` child it runs is gone when the block ends."""
    argv = [find_age(), "--encrypt", *_recipient_args(recipients)]
    async with _running(argv, lambda child: AgeEncryption(child, recipients)) as stage:
        yield stage


@contextlib.asynccontextmanager
async def decrypting(identity_file: str) -> AsyncIterator[AgeDecryption]:
    """The inverse of an encryption stage, decrypting with the identities in
    `identity_file` (an absolute path, see cli.setup.reading_keys: `-` would be age's stdin,
    the ciphertext); the `age` child is gone when the block ends."""
    argv = [find_age(), "--decrypt", "--identity", identity_file]
    async with _running(argv, lambda child: AgeDecryption(child, identity_file)) as inverse:
        yield inverse
