"""fleet.py: which jobs a fleet run should have stored, and which it did (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from db_backup.catalog import Archive
from db_backup.fleet import WILDCARD_MEMORY, expected_jobs, summarize

SINCE = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def archive(job: str, taken: datetime, target: str = "s3://b/", size: int = 100) -> Archive:
    return Archive(
        job=job,
        backup=job.split(".", 1)[0],
        database=job,
        taken_at=taken,
        stored_bytes=size // 4,
        raw_bytes=size,
        target=target,
        name=f"{job}_x.sql.gz",
        location=f"{target}{job}_x.sql.gz",
        sha256="0" * 64,
        checks=("sha256",),
        store=cast(Any, None),
        record=cast(Any, None),
    )


def test_expected_are_the_named_jobs_and_recently_seen_wildcard_jobs() -> None:
    archives = [
        archive("shop.a", SINCE - timedelta(days=1)),  # seen last night
        archive("shop.old", SINCE - WILDCARD_MEMORY - timedelta(hours=1)),  # dropped long ago
        archive("shop.new", SINCE + timedelta(hours=1)),  # new tonight
        archive("other", SINCE - timedelta(days=1)),  # not a wildcard job, not configured
    ]
    expected = expected_jobs(["billing", "orders"], ["shop"], archives, SINCE)
    assert expected == ["billing", "orders", "shop.a", "shop.new"]


def test_each_job_once_newest_since_the_moment_or_missing() -> None:
    archives = [
        archive("billing", SINCE + timedelta(hours=2), "s3://b/", 300),
        archive("billing", SINCE + timedelta(hours=2), "local:/x", 300),  # the same, twice
        archive("billing", SINCE + timedelta(hours=1), "s3://b/", 200),  # an older one
        archive("orders", SINCE - timedelta(seconds=1), "s3://b/", 999),  # before: not counted
    ]
    summary = summarize(["billing", "orders"], archives, SINCE)
    billing, orders = summary.jobs
    assert billing.backed_up
    assert billing.taken_at == SINCE + timedelta(hours=2)
    assert billing.raw_bytes == 300
    assert billing.stored_bytes == 150  # both copies
    assert billing.locations == ("s3://b/billing_x.sql.gz", "local:/xbilling_x.sql.gz")
    assert not orders.backed_up
    assert [job.job for job in summary.missing] == ["orders"]
    assert summary.stored_bytes == 150
