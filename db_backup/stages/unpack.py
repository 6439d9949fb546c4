"""Reading stored bytes back: every stage's inverse, last applied first, as one stream.

Which stages a backup went through comes from its manifest (`manifest.stages_of`), or, for a
file without one, from its name's suffixes. verify streams a backup through `Unstaging` to
check it; restore streams it on into the engine's restore program.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import assert_never

from db_backup.errors import DamagedStreamError, KeyFileError, WrongIdentityError
from db_backup.manifest import Compressed, Encrypted, StageRecord
from db_backup.stages import COMPRESSION_SUFFIXES, ENCRYPTED_SUFFIX, Inverse, append_tail


@dataclass(frozen=True)
class ReadingKeys:
    """What undoing the stages may need besides the bytes: compression needs nothing,
    encryption an age identity file (`--identity`, DB_BACKUP_IDENTITY or `identity_file:`)."""

    identity_file: str | None = None


NO_KEYS = ReadingKeys()


def is_encrypted(records: Sequence[StageRecord]) -> bool:
    return any(isinstance(record, Encrypted) for record in records)


def records_from_name(name: str) -> tuple[StageRecord, ...]:
    """The stages a stored file's name says it went through (for a file without a manifest)."""
    encrypted = name.endswith(ENCRYPTED_SUFFIX)
    last: tuple[StageRecord, ...] = (Encrypted(recipients=()),) if encrypted else ()
    plain = name.removesuffix(ENCRYPTED_SUFFIX)
    for algorithm, suffix in COMPRESSION_SUFFIXES.items():
        if suffix and plain.endswith(suffix):
            return (Compressed(algorithm=algorithm, level=None), *last)
    return last


@contextlib.asynccontextmanager
async def unstaging(
    records: Sequence[StageRecord], keys: ReadingKeys = NO_KEYS
) -> AsyncIterator[Unstaging]:
    """An Unstaging that undoes the stages `records` lists (a manifest's or a file name's);
    decryption runs `age` for the block's duration. Encrypted without an identity file:
    KeyFileError."""
    from db_backup.stages.encrypt import decrypting

    async with contextlib.AsyncExitStack() as stack:
        inverses: list[Inverse] = []
        for record in records:
            match record:
                case Compressed():
                    inverses.append(decompressing(record))
                case Encrypted():
                    if keys.identity_file is None:
                        raise KeyFileError(NO_IDENTITY)
                    inverses.append(await stack.enter_async_context(decrypting(keys.identity_file)))
                case _:
                    assert_never(record)
        yield Unstaging(inverses)


def decompressing(record: Compressed) -> Inverse:
    """The inverse of a compression stage."""
    from db_backup.stages.compress import Decompressor  # imports isal/zstd only when used

    return Decompressor(record.algorithm)


NO_IDENTITY = (
    "the backup is encrypted (age): give an identity file with --identity FILE, "
    "DB_BACKUP_IDENTITY, or identity_file: under verify:/restore: in the config"
)


class Unstaging:
    """Stored bytes in, the dump's own bytes out, through the inverse of every stage; counts
    and keeps the tail of what comes out. The first damage found stops it: `error` says what
    it was, and later bytes are ignored."""

    def __init__(self, inverses: Sequence[Inverse]) -> None:
        """`inverses`: one per stage, in the order the stages were applied."""
        self._inverses = list(reversed(inverses))
        self.raw_bytes = 0
        self.tail = b""
        self.error: str | None = None

    @classmethod
    def of(cls, records: Sequence[StageRecord]) -> Unstaging:
        """Undo stages that need no key (compression) without a block; an encrypted
        stream needs `unstaging`, which runs age."""
        if is_encrypted(records):
            raise KeyFileError("an encrypted stream is read through unstaging()")
        return cls([decompressing(r) for r in records if isinstance(r, Compressed)])

    @property
    def undoes_anything(self) -> bool:
        return bool(self._inverses)

    @property
    def checks(self) -> list[str]:
        """What verify says of a stream that read back whole."""
        return [inverse.complete for inverse in self._inverses]

    def feed(self, stored: bytes) -> bytes:
        """The dump's bytes in `stored` (b"" once damage was found)."""
        return self._account(self._through(stored, 0, finish=False))

    def finish(self) -> bytes:
        """The last bytes, each inverse's remainder through the inverses after it; sets
        `error` if a stream was cut short."""
        return self._account(self._through(b"", 0, finish=True))

    def _through(self, data: bytes, first: int, *, finish: bool) -> bytes:
        if self.error is not None:
            return b""
        if first == len(self._inverses):
            return data
        inverse = self._inverses[first]
        try:
            out = inverse.feed(data) if data else b""
            if finish:
                out += inverse.finish()
        except WrongIdentityError as exc:
            self.error = str(exc)
            return b""
        except DamagedStreamError as exc:
            self.error = f"the {inverse.name} is damaged or cut short: {exc}"
            return b""
        return self._through(out, first + 1, finish=finish)

    def _account(self, raw: bytes) -> bytes:
        self.raw_bytes += len(raw)
        self.tail = append_tail(self.tail, raw)
        return raw
