"""Planning: "*" expansion, naming, selection, per-server limits. Pure, no server needed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from db_backup.config.load import parse_config
from db_backup.config.schema import Config
from db_backup.errors import ConfigError, SelectionError
from db_backup.model import JobKind, Server
from db_backup.naming import safe_component, timestamp
from db_backup.plan import build_plan, default_concurrency, matching_databases, select_backups

NOW = datetime(2026, 11, 26, 3, 4, 5, tzinfo=UTC)

CONFIG = """\
concurrency: 3
defaults:
  host: db1
  max_per_host: 2
  storage: {path: /backups, prefix: nightly}
backups:
  - name: shop
    database: shop
  - name: analytics
    database: analytics
    format: custom
    max_per_host: 1
    globals: true
  - name: all
    host: db3
    database: "*"
    exclude: [postgres, "template*", "tmp_*"]
    compression: {algorithm: none}
"""


def config() -> Config:
    return parse_config(CONFIG, environ={})


def test_file_names_follow_prefix_name_utc_timestamp_and_format() -> None:
    plan = build_plan(config(), NOW, discovered={"all": ["crm"]})
    names = {job.name: job.filename for job in plan.jobs}
    assert names == {
        "shop": "nightly_shop_20261126T030405Z.sql.gz",
        "analytics": "nightly_analytics_20261126T030405Z.dump",
        "globals-db1-5432": "nightly_globals-db1-5432_20261126T030405Z.sql.gz",
        "all.crm": "nightly_all.crm_20261126T030405Z.sql",
    }
    (shop_target,) = plan.jobs[0].targets
    assert shop_target.label == "local:/backups"
    assert shop_target.manifest_name == "nightly_shop_20261126T030405Z.sql.gz.json"
    assert shop_target.file_prefix == "nightly_shop_"


def test_each_target_names_the_file_its_own_way_with_one_timestamp() -> None:
    config = parse_config(
        """\
backups:
  - name: shop
    database: shop
    storage:
      - {path: /backups, prefix: nightly}
      - {kind: s3, bucket: vault, prefix: pg/nightly/}
""",
        environ={},
    )
    local, remote = build_plan(config, NOW).jobs[0].targets
    assert (local.filename, local.file_prefix) == (
        "nightly_shop_20261126T030405Z.sql.gz",
        "nightly_shop_",
    )
    # An S3 prefix is a folder: it is not repeated in the name.
    assert (remote.filename, remote.file_prefix) == ("shop_20261126T030405Z.sql.gz", "shop_")
    assert remote.label == "s3://vault/pg/nightly/"


def test_timestamp_is_utc() -> None:
    from datetime import timedelta, timezone

    local = datetime(2026, 11, 26, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert timestamp(local) == "20261126T030405Z"


def test_wildcard_expands_per_database_minus_excludes() -> None:
    backup = config().backups[2]
    found = ["postgres", "template1", "crm", "tmp_scratch", "billing", "Tmp_kept"]
    assert matching_databases(backup, found) == ["Tmp_kept", "billing", "crm"]
    plan = build_plan(config(), NOW, discovered={"all": found})
    wildcard_jobs = [job for job in plan.jobs if job.backup.name == "all"]
    assert [(j.name, j.database) for j in wildcard_jobs] == [
        ("all.Tmp_kept", "Tmp_kept"),
        ("all.billing", "billing"),
        ("all.crm", "crm"),
    ]
    assert all(job.server == Server("db3", 5432) for job in wildcard_jobs)


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        ("shop", "shop"),
        ("my db", "my_db-"),
        ('it\'s "quoted"', "it_s_quoted_-"),
        ("café", "cafe-"),
        ("-leading", "leading-"),
        ("../../etc", "etc-"),
        ("日本語", "db-"),
    ],
)
def test_database_names_become_safe_unique_file_name_parts(database: str, expected: str) -> None:
    component = safe_component(database)
    assert component.startswith(expected)
    assert "/" not in component
    assert component[0].isalnum()
    if component != database:
        assert len(component) > len(expected)  # a hash keeps distinct names distinct


def test_distinct_names_that_fold_alike_stay_distinct() -> None:
    assert safe_component("a b") != safe_component("a_b")
    assert safe_component("café") != safe_component("cafe")


def test_globals_once_per_server_in_the_first_requesting_backups_folder() -> None:
    text = CONFIG.replace(
        "  - name: shop\n    database: shop\n",
        "  - name: shop\n    database: shop\n    globals: true\n",
    )
    plan = build_plan(parse_config(text, environ={}), NOW, discovered={"all": []})
    globals_jobs = [job for job in plan.jobs if job.kind is JobKind.GLOBALS]
    assert [(j.name, j.backup.name, j.database) for j in globals_jobs] == [
        ("globals-db1-5432", "shop", "shop")
    ]


def test_per_server_limits_take_the_smallest_and_concurrency_comes_from_config() -> None:
    plan = build_plan(config(), NOW, discovered={"all": ["x"]})
    assert plan.host_limits == {Server("db1", 5432): 1, Server("db3", 5432): 2}
    assert plan.concurrency == 3
    assert build_plan(config(), NOW, discovered={}, concurrency=7).concurrency == 7


def test_default_concurrency_is_cpu_count_at_least_two() -> None:
    assert default_concurrency() >= 2


def test_selection_by_backup_name_and_by_wildcard_job_name() -> None:
    cfg = config()
    assert [b.name for b in select_backups(cfg, ["analytics"])] == ["analytics"]
    plan = build_plan(cfg, NOW, names=["all.crm"], discovered={"all": ["crm", "billing"]})
    assert [job.name for job in plan.jobs] == ["all.crm"]
    with pytest.raises(
        SelectionError, match=r"no backup named 'nope'.*backups are: all, analytics, shop"
    ):
        select_backups(cfg, ["nope"])


def test_a_backup_named_like_a_wildcard_job_is_refused_by_the_config() -> None:
    text = CONFIG + "  - name: all.crm\n    database: crm\n"
    with pytest.raises(ConfigError, match=r"backup 'all\.crm' would write files of the same"):
        parse_config(text, environ={})


def test_two_databases_made_the_same_job_name_fail_alone_and_the_run_goes_on() -> None:
    """`audit_x y` is made safe as `audit_x_y-<hash>`, which another database may be called."""
    odd = "audit_x y"
    mimic = safe_component(odd)
    plan = build_plan(
        parse_config(CONFIG, environ={}), NOW, discovered={"all": [odd, mimic, "crm"]}
    )
    assert sorted(job.name for job in plan.jobs) == [
        "all.crm",
        "analytics",
        "globals-db1-5432",
        "shop",
    ]
    refused = {job.database: why for job, why in plan.refused}
    assert set(refused) == {odd, mimic}
    assert f"job name 'all.{mimic}'" in refused[odd]
    assert repr(mimic) in refused[odd]
    assert repr(odd) in refused[mimic]


def test_names_too_long_for_the_file_system_fail_their_jobs_and_validate_says_so() -> None:
    prefix, name = "p" * 100, "n" * 100
    text = f"""\
backups:
  - name: {name}
    database: "*"
    storage: {{path: /b, prefix: {prefix}}}
  - name: short
    database: short
    storage: {{path: /b}}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    (issue,) = caught.value.issues
    assert (issue.line, issue.path) == (2, "backups[0].name")
    assert "for the longest database names, file names would be" in issue.message
    assert "more than the 255 a file system allows" in issue.message

    # Should a config get past that (the check bypassed here), only that job fails.
    import msgspec

    from db_backup.naming import unusable_name

    config = parse_config(text.replace("p" * 100, "p"), environ={})
    wild, short = config.backups
    long_prefix = (msgspec.structs.replace(wild.targets[0], prefix=prefix),)
    wild = msgspec.structs.replace(wild, storage=long_prefix)
    config = msgspec.structs.replace(config, backups=(wild, short))
    long_database = "d" * 63
    plan = build_plan(config, NOW, discovered={name: [long_database, "x"]})
    assert sorted(job.name for job in plan.jobs) == [f"{name}.x", "short"]
    ((job, why),) = plan.refused
    assert job.database == long_database
    assert why == unusable_name(job.targets[0].storage, job.filename)


def test_an_s3_key_too_long_is_refused() -> None:
    text = f"""\
backups:
  - name: a
    database: a
    storage: {{kind: s3, bucket: b, prefix: {"f/" * 500}}}
"""
    with pytest.raises(
        ConfigError, match=r"object keys would be \d+ bytes long, more than the 1024"
    ):
        parse_config(text, environ={})


def test_a_selection_that_matches_no_database_is_an_error_with_the_near_matches() -> None:
    config = parse_config(CONFIG, environ={})
    found = {"all": ["crm", "billing", "audit x"]}
    with pytest.raises(SelectionError, match=r"-n 'all\.crn' matches no database.*'all\.crm'"):
        build_plan(config, NOW, names=["all.crn"], discovered=found)
    # The database's own name selects its job as well as the job's name does.
    for name in ("all.audit x", f"all.{safe_component('audit x')}"):
        plan = build_plan(config, NOW, names=[name], discovered=found)
        assert [job.database for job in plan.jobs] == ["audit x"]
