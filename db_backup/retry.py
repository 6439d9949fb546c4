"""Which failures are worth another attempt, and how long to wait before it. Pure.

Retried: the server could not be reached, refused or reset the connection, was starting up or
shutting down, or dropped the connection mid-dump. Never retried: authentication failures,
missing databases, permission problems, timeouts, storage errors — another attempt would fail
the same way, or (a timeout) has already used the time the user allowed. What a dump program's
words mean is the engine's to say (its Source passes its markers here).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from db_backup.errors import BackupError, CheckFailure, ConnectionCheckError, DumpError

MAX_DELAY_SECONDS = 300.0

_TRANSIENT_CHECKS = frozenset({CheckFailure.UNREACHABLE, CheckFailure.UNAVAILABLE})


def is_transient(error: BackupError, *, transient: Sequence[str], permanent: Sequence[str]) -> bool:
    """Might the same job succeed if simply tried again a little later? A failed dump is
    judged by its program's last words: any of `permanent` says no, else any of `transient`
    says yes (lower case)."""
    if isinstance(error, ConnectionCheckError):
        return error.kind in _TRANSIENT_CHECKS
    if isinstance(error, DumpError):
        text = error.stderr_tail.lower()
        if any(marker in text for marker in permanent):
            return False
        return any(marker in text for marker in transient)
    return False


def backoff_delay(
    attempt: int, base: float, *, random_fraction: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): `base`, doubling each
    time up to 5 minutes, scaled by a random 50 to 100 % so many jobs do not retry in lockstep."""
    ceiling: float = min(MAX_DELAY_SECONDS, base * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + 0.5 * random_fraction())
