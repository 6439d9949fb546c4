"""The scheduling rules, on a fake clock: next times in several zones, both daylight-saving
nights, intervals, catch-up after downtime (once), jitter bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from db_backup.schedule import jitter_offset, missed, parse_schedule, parse_zone

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def runs(text: str, zone: ZoneInfo, start: datetime, count: int) -> list[str]:
    schedule = parse_schedule(text, zone)
    moment, found = start.astimezone(UTC), []
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(moment.astimezone(zone).isoformat())
    return found


def test_next_runs_are_in_the_configured_zone() -> None:
    start = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert runs("0 2 * * *", BERLIN, start, 2) == [
        "2026-12-03T02:00:00+01:00",
        "2026-12-04T02:00:00+01:00",
    ]
    assert runs("*/30 9-10 * * 1-5", NEW_YORK, start, 3) == [  # a Wednesday
        "2026-12-02T09:00:00-05:00",
        "2026-12-02T09:30:00-05:00",
        "2026-12-02T10:00:00-05:00",
    ]


FALL_BACK_BERLIN = ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
FALL_BACK_NEW_YORK = ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
SPRING_BERLIN = ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
SPRING_NEW_YORK = ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]


@pytest.mark.parametrize(
    ("zone", "night", "expected"),
    [  # fall back: the hour repeats, the job runs once; spring forward: its time does not
        # happen, the job runs at 03:00
        (BERLIN, datetime(2026, 10, 24, 12), FALL_BACK_BERLIN),
        (NEW_YORK, datetime(2026, 10, 31, 12), FALL_BACK_NEW_YORK),
        (BERLIN, datetime(2026, 3, 28, 12), SPRING_BERLIN),
        (NEW_YORK, datetime(2026, 3, 7, 12), SPRING_NEW_YORK),
    ],
)
def test_daylight_saving_nights_run_a_daily_job_once(
    zone: ZoneInfo, night: datetime, expected: list[str]
) -> None:
    expression = "30 1 * * *" if zone is NEW_YORK and night.month > 6 else "30 2 * * *"
    assert runs(expression, zone, night.replace(tzinfo=zone), 2) == expected


def test_intervals_count_from_the_epoch_whatever_the_zone() -> None:
    start = datetime(2026, 12, 2, 10, 59, 58, tzinfo=UTC)
    assert runs("@every 2s", BERLIN, start, 3) == [
        "2026-12-02T12:00:00+01:00",
        "2026-12-02T12:00:02+01:00",
        "2026-12-02T12:00:04+01:00",
    ]
    every_6h = parse_schedule("@every 6h", NEW_YORK)
    assert every_6h.last_due(start) == datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "said"),
    [("0 2 * *", "not a cron expression"), ("61 * * * *", "Bad minute"),
     ("@every soon", "takes a duration"), ("@every 500ms", "at least 1s")],
)  # fmt: skip
def test_bad_schedules_say_why(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_schedule(text, BERLIN)


def test_unknown_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        parse_zone("Mars/Olympus")
    assert parse_zone("UTC") == ZoneInfo("UTC")


def test_after_downtime_the_work_runs_once_if_a_slot_passed_since_its_last_success() -> None:
    nightly = parse_schedule("0 2 * * *", BERLIN)
    now = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
    assert missed(nightly, None, now)  # never ran
    assert missed(nightly, datetime(2026, 12, 2, 1, 5, tzinfo=UTC), now)  # three nights missed
    assert not missed(nightly, datetime(2026, 12, 5, 1, 3, tzinfo=UTC), now)  # ran last night
    at_the_slot = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)  # 02:00 Berlin, exactly
    assert nightly.last_due(at_the_slot) == at_the_slot


def test_jitter_stays_in_its_window_and_is_the_same_for_the_same_slot() -> None:
    due = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)
    offsets = [jitter_offset(f"job{i}", due, 600) for i in range(200)]
    assert all(timedelta(0) <= offset < timedelta(seconds=600) for offset in offsets)
    assert max(offsets) - min(offsets) > timedelta(seconds=300)  # spread, not bunched
    assert jitter_offset("job1", due, 600) == offsets[1]
    assert jitter_offset("job1", due, 0) == timedelta(0)


def test_within_the_repeated_hour_the_next_run_is_after_now_and_the_last_before() -> None:
    nightly = parse_schedule("30 2 * * *", BERLIN)
    # 2024-10-27 01:10 UTC is 02:10 CET, the second pass of 02:xx; 02:30 CEST (00:30 UTC) ran
    second_pass = datetime(2024, 10, 27, 1, 10, tzinfo=UTC)
    assert nightly.next_after(second_pass) == datetime(2024, 10, 28, 1, 30, tzinfo=UTC)
    assert nightly.last_due(second_pass) == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    assert not missed(nightly, datetime(2024, 10, 27, 0, 31, tzinfo=UTC), second_pass)


def test_a_fractional_interval_has_no_off_by_one_at_its_slots() -> None:
    every = parse_schedule("@every 1.1s", BERLIN)
    slot = datetime(1970, 1, 1, 0, 0, 11, tzinfo=UTC)  # the 10th slot: 11.0 s
    assert every.next_after(slot) == slot + timedelta(seconds=1.1)
    assert every.last_due(slot) == slot
