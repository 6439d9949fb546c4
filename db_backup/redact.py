"""Keeping secrets out of anything a person or a log may read. Pure."""

from __future__ import annotations

import re
from collections.abc import Sequence

MASK = "***"
_SECRET_IN_CONNINFO = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` masked (a child or server might echo it)."""
    return text.replace(secret, MASK) if secret else text


def mask_command(argv: Sequence[str]) -> str:
    """A loggable rendering of argv with any conninfo `password=` masked."""
    return " ".join(_SECRET_IN_CONNINFO.sub(rf"\1{MASK}", arg) for arg in argv)
