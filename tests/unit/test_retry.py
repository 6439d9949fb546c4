"""Which failures are retried, and the backoff between attempts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from db_backup.errors import (
    CheckFailure,
    ConnectionCheckError,
    DumpError,
    JobTimeoutError,
    StorageError,
)
from db_backup.retry import MAX_DELAY_SECONDS, backoff_delay
from db_backup.sources.pg_source import PostgresSource


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionCheckError(CheckFailure.UNREACHABLE, "Connection refused"), True),
        (
            ConnectionCheckError(CheckFailure.UNAVAILABLE, "the database system is starting up"),
            True,
        ),
        (ConnectionCheckError(CheckFailure.AUTH_FAILED, "password authentication failed"), False),
        (ConnectionCheckError(CheckFailure.DATABASE_MISSING, 'database "x" does not exist'), False),
        (ConnectionCheckError(CheckFailure.TIMED_OUT, "no answer within 10s"), False),
        (
            DumpError(
                "pg_dump exited with code 1",
                exit_code=1,
                stderr_tail="pg_dump: error: server closed the connection unexpectedly",
            ),
            True,
        ),
        (
            DumpError(
                "pg_dump exited with code 1",
                exit_code=1,
                stderr_tail="FATAL: terminating connection due to administrator command",
            ),
            True,
        ),
        (
            DumpError(
                "pg_dump exited with code 1",
                exit_code=1,
                stderr_tail="connection to server failed: Connection refused",
            ),
            True,
        ),
        (
            DumpError(
                "pg_dump exited with code 1",
                exit_code=1,
                stderr_tail="FATAL: password authentication failed for user x",
            ),
            False,
        ),
        (
            DumpError(
                "pg_dump exited with code 1",
                exit_code=1,
                stderr_tail="permission denied for table t",
            ),
            False,
        ),
        (DumpError("pg_dump exited 0 but its output ends without the completion marker"), False),
        (StorageError("writing x: No space left on device"), False),
        (JobTimeoutError("timed out after 2h"), False),
    ],
)
def test_only_server_and_network_trouble_is_retried(error: Exception, transient: bool) -> None:
    assert PostgresSource().is_transient(error) is transient  # type: ignore[arg-type]


@given(
    attempt=st.integers(min_value=1, max_value=40),
    base=st.floats(min_value=0.01, max_value=600),
    fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_backoff_doubles_up_to_a_cap_with_jitter(
    attempt: int, base: float, fraction: float
) -> None:
    ceiling = min(MAX_DELAY_SECONDS, base * 2 ** (attempt - 1))
    delay = backoff_delay(attempt, base, random_fraction=lambda: fraction)
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_sequence() -> None:
    delays = [backoff_delay(n, 1.0, random_fraction=lambda: 0.999999) for n in range(1, 12)]
    assert [round(d) for d in delays] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
