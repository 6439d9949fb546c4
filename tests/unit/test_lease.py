"""The lease rules (lease.py): what a runner does with a lease it found, judged by durations
only — the lease's age by the server's clock and this run's own elapsed time."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from db_backup.lease import (
    CLOCK_SLACK_SECONDS,
    RUN_MEMORY_SECONDS,
    LeaseRecord,
    Seen,
    Verdict,
    decode,
    describe_holder,
    encode,
    judge,
    lease_name,
    partition_name,
)

RECORD = LeaseRecord(
    job="shop",
    run="run-a",
    host="pod-1",
    pid=42,
    shard="1/4",
    seconds=60.0,
    state="held",
    taken_at=datetime(2026, 12, 2, 1, 0, tzinfo=UTC),
    manifest="shop_20261202T010000Z.sql.gz.json",
)


WRITTEN = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def seen(age: float, **changes: object) -> Seen:
    return Seen(msgspec.structs.replace(RECORD, **changes), '"etag"', WRITTEN, age)


def verdict(found: Seen, *, run: str = "run-b") -> Verdict:
    return judge(found, run=run, fallback_seconds=30.0)


def test_a_lease_renewed_within_its_duration_is_held() -> None:
    assert verdict(seen(0.0)) is Verdict.HELD
    assert verdict(seen(60.0 + CLOCK_SLACK_SECONDS)) is Verdict.HELD  # slack for 1 s dates


def test_a_lease_not_renewed_past_its_duration_and_the_slack_has_expired() -> None:
    assert verdict(seen(60.0 + CLOCK_SLACK_SECONDS + 0.5)) is Verdict.EXPIRED
    assert verdict(seen(7.0, seconds=3.0)) is Verdict.EXPIRED  # the holder's own duration


@pytest.mark.parametrize(
    ("run", "outcome", "expected"),
    [
        # released after a backup by an earlier attempt of this run (a retried pod, a
        # second deployment of the same Job): done
        ("run-a", "succeeded", Verdict.DONE),
        # ... by another run (last night's): free; a later run backs up again, as any does
        ("run-b", "succeeded", Verdict.FREE),
        # released after a failure: free, whoever held it (a retry may succeed)
        ("run-a", "failed", Verdict.FREE),
        ("run-a", "cancelled", Verdict.FREE),
    ],
)
def test_a_released_lease(run: str, outcome: str, expected: Verdict) -> None:
    for age in (1.0, 5000.0, RUN_MEMORY_SECONDS):  # hours later: a pod retried late
        assert verdict(seen(age, state="released", outcome=outcome), run=run) is expected


def test_a_run_id_seen_again_days_later_is_a_new_night() -> None:
    found = seen(RUN_MEMORY_SECONDS + 1, state="released", outcome="succeeded")
    assert verdict(found, run="run-a") is Verdict.FREE


def test_an_unreadable_object_is_judged_by_its_age_with_our_own_duration() -> None:
    assert judge(Seen(None, "e", WRITTEN, 10.0), run="r", fallback_seconds=30) is (Verdict.HELD)
    assert judge(Seen(None, "e", WRITTEN, 40.0), run="r", fallback_seconds=30) is (Verdict.FREE)


def test_records_round_trip_and_garbage_is_none() -> None:
    assert decode(encode(RECORD)) == RECORD
    assert decode(b"not json") is None
    assert decode(b'{"job": "shop"}') is None  # a record without its fields


def test_the_lease_lives_in_a_folder_the_catalog_never_lists() -> None:
    assert lease_name("shop") == ".db-backup-leases/shop.json"


def test_the_holder_is_named_for_a_person() -> None:
    text = describe_holder(RECORD, 4.0)
    assert "PID 42 on pod-1" in text
    assert "shard 1/4" in text
    assert "run run-a" in text
    assert "4.0s ago" in text
    assert "unreadable" in describe_holder(None, 4.0)


def test_a_run_id_becomes_one_key_component_that_cannot_leave_the_folder() -> None:
    assert partition_name("db-backup-29412345") == ".db-backup-leases/runs/db-backup-29412345.json"
    for hostile in ("../../etc", "a/b", ".hidden", "x" * 300, "ünï cødé"):
        component = partition_name(hostile).removeprefix(".db-backup-leases/runs/")
        assert "/" not in component
        assert not component.startswith(".")
        assert len(component) <= 100
    assert partition_name("a/b") != partition_name("a_b")  # changed: a hash tells them apart
