"""Which failures are worth another attempt, and how long to wait before it. Pure.

Retried: the server could not be reached, refused or reset the connection, was starting up or
shutting down, or dropped the connection mid-dump. Never retried: authentication failures,
missing databases, permission problems, timeouts, storage errors — another attempt would fail
the same way, or (a timeout) has already used the time the user allowed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from db_backup.errors import BackupError, CheckFailure, ConnectionCheckError, DumpError

MAX_DELAY_SECONDS = 300.0

_TRANSIENT_CHECKS = frozenset({CheckFailure.UNREACHABLE, CheckFailure.UNAVAILABLE})

# What pg_dump (libpq) prints when the server or the network, not the request, is at fault.
_TRANSIENT_DUMP_MARKERS = (
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "connection reset",
    "connection refused",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "ssl syscall error",
)
_PERMANENT_DUMP_MARKERS = (
    "password authentication failed",
    "does not exist",
    "permission denied",
)


def is_transient(error: BackupError) -> bool:
    """Might the same job succeed if simply tried again a little later?"""
    if isinstance(error, ConnectionCheckError):
        return error.kind in _TRANSIENT_CHECKS
    if isinstance(error, DumpError):
        text = error.stderr_tail.lower()
        if any(marker in text for marker in _PERMANENT_DUMP_MARKERS):
            return False
        return any(marker in text for marker in _TRANSIENT_DUMP_MARKERS)
    return False


def backoff_delay(
    attempt: int, base: float, *, random_fraction: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): `base`, doubling each
    time up to 5 minutes, scaled by a random 50 to 100 % so many jobs do not retry in lockstep."""
    ceiling: float = min(MAX_DELAY_SECONDS, base * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + 0.5 * random_fraction())
