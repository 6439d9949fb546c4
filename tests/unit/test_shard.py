"""Sharding: every job in exactly one shard for any N, the same partition whatever order the
jobs come in (every runner computes it alone), the greedy's balance bound, and the shard
argument's forms and faults."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from db_backup.shard import (
    Shard,
    newcomer_shard,
    parse_shard,
    partition,
    shard_from_environment,
    sizes_anchor,
)

sizes_strategy = st.dictionaries(
    st.text(alphabet="abcdefghij_.0123456789", min_size=1, max_size=12),
    st.one_of(st.none(), st.integers(0, 10**12)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(sizes_strategy, st.integers(1, 12), st.randoms(use_true_random=False))
def test_every_job_is_in_exactly_one_shard_the_same_on_every_runner(
    sizes: dict[str, int | None], count: int, shuffler: random.Random
) -> None:
    made = partition(sizes, count)
    assigned = [job for shard in made.shards for job in shard]
    assert sorted(assigned) == sorted(sizes)  # each once, none lost
    assert len(made.shards) == count
    # Another runner read the same catalog in another order: the same partition.
    items = list(sizes.items())
    shuffler.shuffle(items)
    assert partition(dict(items), count) == made
    # The greedy bound: no shard exceeds the mean by more than the largest job.
    total, largest = sum(made.weights.values()), max(made.weights.values(), default=0)
    assert max(made.loads) <= total / count + largest
    assert sum(made.loads) == total


def test_longest_first_balances_uneven_sizes_and_unknown_sizes_count_as_the_median() -> None:
    sizes: dict[str, int | None] = {"big": 90, "a": 40, "b": 40, "c": 10, "new": None}
    made = partition(sizes, 2)
    assert made.weights["new"] == 40  # the median of 90, 40, 40, 10 (the lower middle)
    assert made.shards == (("big", "c"), ("a", "b", "new"))
    assert made.loads == (100, 120)
    assert made.of(Shard(1, 2)) == ("a", "b", "new")


def test_ties_go_by_name_and_to_the_lowest_shard() -> None:
    made = partition(dict.fromkeys(["d", "c", "b", "a"], 5), 2)
    assert made.shards == (("a", "c"), ("b", "d"))
    assert partition({}, 3).shards == ((), (), ())


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1", "expected I/N"),
        ("2/2", "0 to 1 of 2"),
        ("0/0", "the number of shards must be 1 to 1000"),
        ("0/1000000000", "the number of shards must be 1 to 1000"),
        ("-1/3", "I/N"),
    ],
)
def test_a_bad_shard_is_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_shard(text)


def test_auto_takes_the_index_from_kubernetes_and_the_count_from_the_option_or_env() -> None:
    assert parse_shard(" 3/8 ") == Shard(3, 8)
    assert shard_from_environment({"JOB_COMPLETION_INDEX": "2"}, 4) == Shard(2, 4)
    both = {"JOB_COMPLETION_INDEX": "1", "DB_BACKUP_SHARDS": "3"}
    assert shard_from_environment(both, None) == Shard(1, 3)
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX is not set"):
        shard_from_environment({}, 4)
    with pytest.raises(ValueError, match="give --shards N or set DB_BACKUP_SHARDS"):
        shard_from_environment({"JOB_COMPLETION_INDEX": "0"}, None)
    with pytest.raises(ValueError, match="0 to 3 of 4"):
        shard_from_environment({"JOB_COMPLETION_INDEX": "4"}, 4)


def test_a_newcomer_falls_to_the_same_shard_in_every_runner_process() -> None:
    # Each runner is its own process: a per-process salted hash (Python's hash()) would
    # send the same new database to different shards on different runners.
    names = [f"shop.customer_{number}" for number in range(50)]
    here = [newcomer_shard(name, 7) for name in names]
    code = (
        "from db_backup.shard import newcomer_shard; "
        f"print([newcomer_shard(n, 7) for n in {names!r}])"
    )
    for seed in ("1", "2"):
        elsewhere = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        assert elsewhere.strip() == str(here)


def test_newcomers_spread_over_the_shards() -> None:
    counts = [0] * 4
    for number in range(400):
        counts[newcomer_shard(f"shop.customer_{number}", 4)] += 1
    assert min(counts) > 60  # ~100 each; a hash that clumped would fail


def test_every_runner_of_a_night_reads_sizes_before_the_same_moment() -> None:
    night = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    anchor = sizes_anchor(night)
    # The fleet starting, a pod retried two hours later: the same anchor, before tonight.
    assert sizes_anchor(night + timedelta(minutes=3)) == anchor
    assert sizes_anchor(night + timedelta(hours=2)) == anchor
    assert anchor < night - timedelta(hours=3)
    # A night that starts just before midnight UTC and a retry after it agree too.
    late = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
    assert sizes_anchor(late) == sizes_anchor(late + timedelta(hours=3))
    assert sizes_anchor(late) < late - timedelta(hours=12)


def test_the_count_from_the_environment_must_be_a_plain_number() -> None:
    with pytest.raises(ValueError, match="expected a number of shards"):
        shard_from_environment({"JOB_COMPLETION_INDEX": "0", "DB_BACKUP_SHARDS": "²"}, None)
