"""Retention as a pure function, checked over random histories (hypothesis)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from db_backup.catalog import Archive
from db_backup.config.schema import Duration
from db_backup.config.schema import RetentionConfig as Policy
from db_backup.prune import plan_prune
from db_backup.retention import ArchiveDate, decide

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# The calendar periods, written out here rather than taken from the code under test: UTC
# hours, days, ISO weeks, months, years.
PERIODS: dict[str, Callable[[datetime], str]] = {
    "hourly": lambda t: t.astimezone(UTC).strftime("%Y-%m-%d %H"),
    "daily": lambda t: t.astimezone(UTC).strftime("%Y-%m-%d"),
    "weekly": lambda t: t.astimezone(UTC).strftime("%G-W%V"),
    "monthly": lambda t: t.astimezone(UTC).strftime("%Y-%m"),
    "yearly": lambda t: t.astimezone(UTC).strftime("%Y"),
}

histories = st.lists(
    st.integers(min_value=0, max_value=3 * 365 * 24 * 60),  # minutes before NOW
    min_size=0,
    max_size=60,
    unique=True,
).map(lambda ages: [ArchiveDate(f"b{age}", NOW - timedelta(minutes=age)) for age in ages])
policies = st.builds(
    Policy,
    keep_last=st.integers(0, 5),
    keep_hourly=st.integers(0, 5),
    keep_daily=st.integers(0, 8),
    keep_weekly=st.integers(0, 5),
    keep_monthly=st.integers(0, 13),
    keep_yearly=st.integers(0, 3),
    max_age=st.one_of(st.none(), st.integers(1, 90).map(lambda d: Duration(d * 86400))),
)


@settings(max_examples=400)
@given(histories, policies)
def test_policy_invariants(backups: list[ArchiveDate], policy: Policy) -> None:
    decisions = decide(backups, policy, NOW)
    kept = {d.archive.id for d in decisions if d.keep}
    # Exactly the given backups are decided on: nothing outside them is touched.
    assert sorted(d.archive.id for d in decisions) == sorted(b.id for b in backups)
    newest_first = sorted(backups, key=lambda b: b.taken_at, reverse=True)
    if newest_first:
        assert newest_first[0].id in kept
    if policy.is_empty:
        assert kept == {b.id for b in backups}
    assert {b.id for b in newest_first[: policy.keep_last]} <= kept
    for name, period in PERIODS.items():
        count = getattr(policy, f"keep_{name}")
        newest_per_period: dict[str, ArchiveDate] = {}
        for backup in newest_first:
            newest_per_period.setdefault(period(backup.taken_at), backup)
        recent = sorted(newest_per_period, reverse=True)[:count]
        for bucket in recent:  # the newest of each of the `count` latest periods stays
            assert newest_per_period[bucket].id in kept
    if policy.max_age is not None:
        assert {
            b.id for b in backups if (NOW - b.taken_at).total_seconds() < policy.max_age
        } <= kept
    for decision in decisions:  # deletions name no reason; keeps name at least one
        assert decision.keep == bool(decision.reasons)


@given(histories, policies)
def test_deleted_backups_are_kept_by_no_rule(backups: list[ArchiveDate], policy: Policy) -> None:
    """Minimality: a backup is deleted unless one of the rules above asks for it."""
    decisions = decide(backups, policy, NOW)
    newest_first = [d.archive for d in decisions]
    wanted = set()
    if newest_first:
        wanted.add(newest_first[0].id)
    if policy.is_empty:
        wanted |= {b.id for b in backups}
    wanted |= {b.id for b in newest_first[: policy.keep_last]}
    for name, period in PERIODS.items():
        newest_per_period: dict[str, ArchiveDate] = {}
        for backup in newest_first:
            newest_per_period.setdefault(period(backup.taken_at), backup)
        for bucket in sorted(newest_per_period, reverse=True)[: getattr(policy, f"keep_{name}")]:
            wanted.add(newest_per_period[bucket].id)
    if policy.max_age is not None:
        wanted |= {b.id for b in backups if (NOW - b.taken_at).total_seconds() < policy.max_age}
    assert {d.archive.id for d in decisions if d.keep} == wanted


def test_a_worked_example_with_reasons() -> None:
    # Three backups a day for four days, the last at 10:00 today.
    backups = [
        ArchiveDate(f"d{day}h{hour}", NOW - timedelta(days=day, hours=12 - hour))
        for day in range(4)
        for hour in (2, 6, 10)
    ]
    decisions = {d.archive.id: d for d in decide(backups, Policy(keep_last=2, keep_daily=3), NOW)}
    kept = sorted(name for name, d in decisions.items() if d.keep)
    assert kept == ["d0h10", "d0h6", "d1h10", "d2h10"]
    assert decisions["d0h10"].reasons == ("newest", "keep_last 2", "keep_daily 3")
    assert decisions["d0h6"].reasons == ("keep_last 2",)
    assert decisions["d2h10"].reasons == ("keep_daily 3",)
    assert decisions["d3h10"].reasons == ()


def test_the_newest_is_kept_even_by_a_policy_that_keeps_nothing_else() -> None:
    backups = [
        ArchiveDate("old", NOW - timedelta(days=400)),
        ArchiveDate("older", NOW - timedelta(days=800)),
    ]
    decisions = decide(backups, Policy(max_age=Duration(30 * 86400)), NOW)
    assert [(d.archive.id, d.keep, d.reasons) for d in decisions] == [
        ("old", True, ("newest",)),
        ("older", False, ()),
    ]


# -- applying it: every job on every target is judged on its own ---------------------------

JOBS = ("shop", "shop_eu", "crm")
TARGETS = ("local:/backups", "s3://vault/pg/")


def entry(job: str, target: str, age_minutes: int) -> Archive:
    name = f"{job}_{age_minutes}.sql.gz"
    return Archive(
        job=job,
        backup=job,
        database=job,
        taken_at=NOW - timedelta(minutes=age_minutes),
        stored_bytes=1,
        raw_bytes=1,
        target=target,
        name=name,
        location=f"{target}{name}",
        sha256="0" * 64,
        checks=(),
        store=None,  # type: ignore[arg-type]  # never touched by planning
        record=None,  # type: ignore[arg-type]
    )


catalogs = st.lists(
    st.tuples(
        st.sampled_from(JOBS),
        st.sampled_from(TARGETS),
        st.integers(min_value=0, max_value=400 * 24 * 60),
    ),
    max_size=80,
    unique=True,
).map(lambda rows: [entry(*row) for row in rows])
policy_maps = st.dictionaries(
    st.tuples(st.sampled_from(JOBS), st.sampled_from(TARGETS)), policies, max_size=6
)


@settings(max_examples=300)
@given(catalogs, policy_maps)
def test_each_job_on_each_target_is_judged_alone_and_nothing_else_is_touched(
    entries: list[Archive], policy_map: dict[tuple[str, str], Policy]
) -> None:
    verdicts = plan_prune(entries, policy_map, NOW)
    judged = {v.archive.location: v for v in verdicts}
    # Exactly the entries whose (backup, target) has a policy are judged; the rest untouched.
    assert set(judged) == {e.location for e in entries if (e.backup, e.target) in policy_map}
    for (job, target), policy in policy_map.items():
        group = [e for e in entries if (e.job, e.target) == (job, target)]
        if not group:
            continue
        # The same decisions as retention.decide over that group alone: other jobs (even
        # `shop_eu` beside `shop`) and other targets change nothing.
        alone = decide([ArchiveDate(e.location, e.taken_at) for e in group], policy, NOW)
        assert {d.archive.id: d.keep for d in alone} == {
            e.location: judged[e.location].decision.keep for e in group
        }
        newest = max(group, key=lambda e: e.taken_at)
        assert judged[newest.location].decision.keep


@settings(max_examples=300)
@given(histories, policies, st.integers(1, 3), st.data())
def test_backups_dated_in_the_future_are_kept_and_change_nothing_else(
    backups: list[ArchiveDate], policy: Policy, future_count: int, data: st.DataObject
) -> None:
    """What a clock jump leaves behind must never make a new backup deletable."""
    future = [
        ArchiveDate(f"future{i}", NOW + timedelta(days=data.draw(st.integers(1, 3000))))
        for i in range(future_count)
    ]
    with_future = {d.archive.id: d for d in decide(backups + future, policy, NOW)}
    alone = {d.archive.id: d.keep for d in decide(backups, policy, NOW)}
    assert all(with_future[b.id].keep for b in future)
    assert all("dated in the future" in with_future[b.id].reasons for b in future)
    assert {i: with_future[i].keep for i in alone} == alone


@settings(max_examples=200)
@given(histories.filter(bool), policies, st.data())
def test_the_backup_just_made_is_always_kept(
    backups: list[ArchiveDate], policy: Policy, data: st.DataObject
) -> None:
    just_made = data.draw(st.sampled_from(backups))
    decisions = {d.archive.id: d for d in decide(backups, policy, NOW, keep={just_made.id})}
    assert decisions[just_made.id].keep
    assert "just made" in decisions[just_made.id].reasons
