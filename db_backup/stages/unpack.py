"""Reading stored bytes back: every stage's inverse, last applied first, as one stream.

Which stages a backup went through comes from its manifest (`manifest.stages_of`), or, for a
file without one, from its name's suffixes. verify streams a backup through `Unstaging` to
check it; restore streams it on into the engine's restore program.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import assert_never

from db_backup.errors import DamagedStreamError
from db_backup.manifest import Compressed, StageRecord
from db_backup.stages import COMPRESSION_SUFFIXES, Inverse, append_tail


@dataclass(frozen=True)
class ReadingKeys:
    """What undoing the stages may need besides the bytes. Compression needs nothing; an
    encryption stage's inverse will need its identities (secret keys) here."""


def records_from_name(name: str) -> tuple[StageRecord, ...]:
    """The stages a stored file's name says it went through (for a file without a manifest)."""
    for algorithm, suffix in COMPRESSION_SUFFIXES.items():
        if suffix and name.endswith(suffix):
            return (Compressed(algorithm=algorithm, level=None),)
    return ()


def inverse_of(record: StageRecord, keys: ReadingKeys) -> Inverse:
    """The inverse of the stage `record` describes."""
    from db_backup.stages.compress import Decompressor  # imports isal/zstd only when used

    match record:
        case Compressed():
            return Decompressor(record.algorithm)
        case _:
            assert_never(record)


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
    def of(cls, records: Sequence[StageRecord], keys: ReadingKeys | None = None) -> Unstaging:
        """Undo the stages a manifest (or a file name) lists."""
        return cls([inverse_of(record, keys or ReadingKeys()) for record in records])

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
        except DamagedStreamError as exc:
            self.error = f"the {inverse.name} is damaged or cut short: {exc}"
            return b""
        return self._through(out, first + 1, finish=finish)

    def _account(self, raw: bytes) -> bytes:
        self.raw_bytes += len(raw)
        self.tail = append_tail(self.tail, raw)
        return raw
