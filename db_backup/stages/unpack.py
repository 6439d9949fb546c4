"""Reading stored bytes back: the inverse of each stage, found by the suffix it gave the
file name (the stages' COMPRESSION_SUFFIXES). verify streams a backup through it; restore will.
"""

from __future__ import annotations

import zlib
from typing import Any

from db_backup.stages import COMPRESSION_SUFFIXES, append_tail

_KIND_BY_SUFFIX = {suffix: kind for kind, suffix in COMPRESSION_SUFFIXES.items() if suffix}


def unpacker_for(name: str) -> Unpacker | None:
    """The inverse of the compression a stored file's name says, or None (not compressed
    by us: `.sql`, or a custom-format dump that pg_dump compressed itself)."""
    kind = next((k for suffix, k in _KIND_BY_SUFFIX.items() if name.endswith(suffix)), None)
    return Unpacker(kind) if kind else None


class Unpacker:
    """Undoes a compression stage as the stored bytes stream past, counting the raw bytes
    and keeping their tail; after `close()`, `error` says if the stream was damaged or cut
    short."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.raw_bytes = 0
        self.tail = b""
        self.error: str | None = None
        self._zstd: Any = None
        self._stream: Any = self._new_stream()

    def _new_stream(self) -> Any:
        if self.kind == "gzip":
            return zlib.decompressobj(wbits=31)  # one gzip member; CRC and length checked
        import zstandard

        self._zstd = self._zstd or zstandard.ZstdDecompressor()
        return self._zstd.decompressobj()

    def feed(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            while data:
                out = self._stream.decompress(data)
                self.raw_bytes += len(out)
                self.tail = append_tail(self.tail, out)
                data = self._stream.unused_data if self._stream.eof else b""
                if data:  # another gzip member or zstd frame follows
                    self._stream = self._new_stream()
        except Exception as exc:  # zlib.error, or zstandard.ZstdError (imported lazily)
            self.error = str(exc)

    @property
    def complete(self) -> str:
        """What verify says of a stream that checked out."""
        return (
            "gzip stream complete (CRC and length ok)"
            if self.kind == "gzip"
            else ("zstd stream complete")
        )

    def close(self) -> None:
        if self.error is None and not self._stream.eof:
            self.error = f"the {self.kind} stream ends before its last " + (
                "member is complete" if self.kind == "gzip" else "frame is complete"
            )
