"""What a hostile review found, each reproduced for real: backups lost to another config's
prune or to a clock jump, planted symlinks and FIFOs, names that collide or run too long,
locks that depend on spelling, and orphans a killed run leaves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import cli_env, create_database, run_cli, server_defaults, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shop(pg: ThrowawayCluster) -> str:
    create_database(pg, "hostile_shop", "CREATE TABLE t AS SELECT generate_series(1, 100) n;")
    return "hostile_shop"


def config_file(
    pg: ThrowawayCluster, path: Path, storage: Any, backups: list[dict[str, Any]]
) -> Path:
    defaults = server_defaults(pg, path.parent / "unused")
    defaults["storage"] = storage
    return write_config(path, {"defaults": defaults, "backups": backups})


def backup_json(config: Path, pg: ThrowawayCluster, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("backup", "-c", str(config), "--json", *args, env=cli_env(pg))
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_prune_and_list_leave_another_prefix_in_the_same_folder_alone(
    pg: ThrowawayCluster, shop: str, tmp_path: Path
) -> None:
    folder = tmp_path / "store"
    nightly = config_file(
        pg,
        tmp_path / "nightly.yml",
        {"path": str(folder), "prefix": "nightly"},
        [{"name": "shop", "database": shop, "retention": {"keep_last": 1}}],
    )
    weekly = config_file(
        pg,
        tmp_path / "weekly.yml",
        {"path": str(folder), "prefix": "weekly"},
        [{"name": "shop", "database": shop}],
    )
    for _ in range(3):
        assert backup_json(weekly, pg)[0] == 0
    code, report = backup_json(nightly, pg)
    assert code == 0
    weekly_files = sorted(p.name for p in folder.glob("weekly_shop_*"))
    assert len(weekly_files) == 6  # three backups and their manifests

    listed = json.loads(run_cli("list", "-c", str(nightly), "--json").stdout)["backups"]
    assert [Path(e["file"]).name for e in listed] == [Path(report["jobs"][0]["file"]).name]

    pruned = run_cli("prune", "-c", str(nightly))
    assert pruned.returncode == 0, pruned.stderr
    assert "weekly_" not in pruned.stdout
    assert sorted(p.name for p in folder.glob("weekly_shop_*")) == weekly_files


def test_backups_dated_in_the_future_never_make_a_new_one_deletable(
    pg: ThrowawayCluster, shop: str, tmp_path: Path
) -> None:
    folder = tmp_path / "store"
    config = config_file(
        pg,
        tmp_path / "backup.yml",
        {"path": str(folder)},
        [{"name": "shop", "database": shop, "retention": {"keep_last": 2}}],
    )
    for _ in range(2):
        assert backup_json(config, pg)[0] == 0
    # What one clock jump produces: two backups whose manifests say five years from now.
    future = sorted(folder.glob("shop_*.sql.gz"))
    later = datetime.now(UTC).year + 5
    for data in future:
        manifest = data.with_name(data.name + ".json")
        record = json.loads(manifest.read_text())
        taken = datetime.fromisoformat(record["started_at"])
        record["started_at"] = taken.replace(year=later).isoformat()
        manifest.write_text(json.dumps(record))

    made = []
    for _ in range(3):
        result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
        assert result.returncode == 0, result.stderr
        job = json.loads(result.stdout)["jobs"][0]
        assert job["status"] == "succeeded"
        assert Path(job["file"]).is_file(), "reported stored, and there"
        made.append(Path(job["file"]))
        for data in future:  # each run names them
            assert f"{data} is dated {later}-" in result.stderr
            assert "in the future" in result.stderr
    # The future ones stay and count for nothing: keep_last 2 keeps the two newest real ones.
    assert sorted(folder.glob("shop_*.sql.gz")) == sorted([*future, *made[-2:]])

    dry = run_cli("prune", "-c", str(config), "--dry-run")
    assert f"keep    {future[0]} (dated in the future)" in dry.stdout
    listed = run_cli("list", "-c", str(config))
    assert f"{future[0]} is dated {later}-" in listed.stderr


def one_backup(pg: ThrowawayCluster, tmp_path: Path, database: str, **storage: Any) -> Path:
    return config_file(
        pg,
        tmp_path / "backup.yml",
        {"path": str(tmp_path / "store"), **storage},
        [{"name": "shop", "database": database}],
    )


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A folder holding `store`, which every user may write to (the config will allow it),
    as /srv/dumps might be, and `victim`, a file of ours. Not under tmp_path, which other
    users cannot reach."""
    import shutil
    import tempfile

    place = Path(tempfile.mkdtemp(prefix="db-backup-shared-"))
    place.chmod(0o755)
    (place / "store").mkdir()
    (place / "store").chmod(0o777)
    (place / "victim").write_text("precious\n")
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)


def plant_symlink(link: Path, target: Path) -> None:
    """`ln -s target link` as the attacker: another user (nobody) when we are root."""
    import os
    import subprocess

    as_other = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    argv = [*(as_other if os.geteuid() == 0 else []), "ln", "-s", str(target), str(link)]
    subprocess.run(argv, check=True)


def test_a_symlink_planted_at_the_lock_is_not_followed(
    pg: ThrowawayCluster, shop: str, tmp_path: Path, shared: Path
) -> None:
    victim = shared / "victim"
    plant_symlink(shared / "store" / ".db-backup.lock", victim)
    storage = {"path": str(shared / "store"), "allow_world_writable": True}
    config = config_file(pg, tmp_path / "backup.yml", storage, [{"name": "s", "database": shop}])
    code, report = backup_json(config, pg)
    assert code == 1
    assert "symbolic link" in report["jobs"][0]["error"]
    assert victim.read_text() == "precious\n"


def test_symlinks_planted_at_the_manifest_during_the_dump_are_not_followed(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: Any, shared: Path
) -> None:
    from tests.fakes import fake_pg_dump
    from tests.waiting import wait_for

    victim = shared / "victim"
    started, gate = tmp_path / "started", tmp_path / "gate"
    config = config_file(
        pg,
        tmp_path / "backup.yml",
        {"path": str(shared / "store"), "allow_world_writable": True},
        [
            {
                "name": "shop",
                "database": "postgres",
                "pg_dump_path": str(fake_pg_dump(tmp_path, "pauses-halfway")),
            }
        ],
    )
    env = cli_env(pg, FAKE_STARTED_FILE=str(started), FAKE_GATE=str(gate))
    process = start_cli("backup", "-c", str(config), "--json", env=env)
    wait_for(started.exists, what="the dump's first half", process=process)
    (partial,) = (shared / "store").glob("shop_*.partial")
    final = partial.with_name(partial.name.removesuffix(".partial"))
    for name in (f"{final.name}.json.partial", f"{final.name}.json"):  # the names to guess
        plant_symlink(final.parent / name, victim)
    gate.touch()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert victim.read_text() == "precious\n"
    manifest = final.with_name(final.name + ".json")
    assert not manifest.is_symlink()
    assert json.loads(manifest.read_text())["file"] == final.name


def test_verify_and_list_do_not_block_on_a_fifo_named_like_a_backup(
    pg: ThrowawayCluster, shop: str, tmp_path: Path
) -> None:
    import os

    config = one_backup(pg, tmp_path, shop)
    assert backup_json(config, pg)[0] == 0
    folder = tmp_path / "store"
    os.mkfifo(folder / "shop_20260101T000000Z.sql.gz")
    os.mkfifo(folder / "shop_20260101T000000Z.sql.gz.json")
    verified = run_cli("verify", str(folder), timeout=60)
    assert verified.returncode == 1
    assert "shop_20260101T000000Z.sql.gz: " in verified.stdout
    assert "is not a regular file" in verified.stdout
    assert verified.stdout.count("OK      ") == 1  # the real backup
    listed = run_cli("list", "-c", str(config), "--json", timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["backups"]) == 1


@pytest.mark.parametrize(
    ("mode", "allowed", "code", "said"),
    [
        (0o777, False, 1, "writable by every user without the sticky bit (mode 0777)"),
        (0o777, True, 0, "writable by every user without the sticky bit (mode 0777)"),
        (0o1777, False, 0, "writable by every user (mode 1777)"),
        (0o770, False, 0, "writable by its group (mode 0770)"),
    ],
)
def test_folders_other_users_may_write_to(
    pg: ThrowawayCluster,
    shop: str,
    tmp_path: Path,
    mode: int,
    allowed: bool,
    code: int,
    said: str,
) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    folder.chmod(mode)
    config = one_backup(pg, tmp_path, shop, allow_world_writable=allowed)
    validated = run_cli("validate", "-c", str(config), env=cli_env(pg))
    assert validated.returncode == 0, validated.stderr
    assert f"warning: storage folder {folder} is {said}" in validated.stderr
    refused = "backups will refuse it" in validated.stderr
    assert refused == (code == 1)
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert result.returncode == code, result.stderr
    assert f"warning: storage folder {folder} is {said}" in result.stderr
    job = json.loads(result.stdout)["jobs"][0]
    if code == 1:
        assert "chmod o-w (or +t) it, or set allow_world_writable: true" in job["error"]
        assert list(folder.glob("shop_*")) == []


def test_a_backup_file_whose_manifest_never_came_is_removed_by_the_next_run_and_prune(
    pg: ThrowawayCluster, s3: Any, tmp_path: Path, start_cli: Any
) -> None:
    """kill -9 after the folder's copy was renamed into place and before its manifest was
    written — a window held open here by the bucket, frozen while the upload completes."""
    import signal

    from tests.conftest import is_gone
    from tests.e2e.test_bounded_time import SLOW, HeldDump
    from tests.waiting import wait_for

    held = HeldDump.start(pg, s3, tmp_path, start_cli, "orphans", SLOW)
    folder = tmp_path / "folder"
    with s3.paused():
        held.release()
        wait_for(lambda: list(folder.glob("shop_*.sql")), what="the folder's copy to commit")
        held.process.send_signal(signal.SIGKILL)
        held.process.communicate()
    (orphan,) = folder.glob("shop_*.sql")
    assert not orphan.with_name(orphan.name + ".json").exists()
    config = tmp_path / "backup.yml"
    env = cli_env(pg, s3=s3, FAKE_STARTED_FILE=str(held.started), FAKE_GATE=str(held.gate))

    verified = run_cli("verify", "-c", str(config), env=env)
    assert f"FAILED  {orphan}: no manifest" in verified.stdout

    rerun = run_cli("backup", "-c", str(config), "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"removed {orphan}, left behind by an interrupted run" in rerun.stderr
    assert not orphan.exists()
    wait_for(lambda: is_gone(held.dump_pid), what="the killed run's dump to be gone")

    # The same state once more, for prune: a backup whose manifest is missing.
    (backup,) = folder.glob("shop_*.sql")
    backup.with_name(backup.name + ".json").unlink()
    pruned = run_cli("prune", "-c", str(config), env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed {backup}, left behind by an interrupted run" in pruned.stdout
    assert not backup.exists()
    verified = run_cli("verify", "-c", str(config), env=env)
    assert "FAILED" not in verified.stdout.replace("FAILED  target", "")


@pytest.fixture
def odd_databases(pg: ThrowawayCluster, make_database: Any) -> tuple[str, str, list[str]]:
    """`audit_x y` and the database named what its safe name is; and every other database
    on the server, to exclude from a "*" backup."""
    import psycopg

    from db_backup.naming import safe_component

    odd = make_database("audit_x y", "CREATE TABLE t AS SELECT 1 AS n;")
    mimic = make_database(safe_component(odd), "CREATE TABLE t AS SELECT 2 AS n;")
    with psycopg.connect(**pg.conninfo()) as conn:
        rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    others = [name for (name,) in rows if name not in (odd, mimic)]
    return odd, mimic, [name.replace("[", "[[]") for name in others]


def test_two_databases_with_one_job_name_fail_alone(
    pg: ThrowawayCluster, shop: str, odd_databases: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    odd, mimic, others = odd_databases
    config = config_file(
        pg,
        tmp_path / "backup.yml",
        {"path": str(tmp_path / "store")},
        [
            {"name": "all", "database": "*", "exclude": others},
            {"name": "shop", "database": shop},
        ],
    )
    code, report = backup_json(config, pg)
    assert code == 1
    jobs = {job["database"]: job for job in report["jobs"]}
    assert jobs[shop]["status"] == "succeeded"
    assert Path(jobs[shop]["file"]).is_file()
    for database in (odd, mimic):
        assert jobs[database]["status"] == "failed"
        assert f"job name 'all.{mimic}'" in jobs[database]["error"]


def test_names_too_long_are_refused_by_validate_where_they_are_written(tmp_path: Path) -> None:
    config = tmp_path / "backup.yml"
    config.write_text(
        "backups:\n"
        f"  - name: {'n' * 100}\n"
        '    database: "*"\n'
        f"    storage: {{path: {tmp_path}, prefix: {'p' * 100}}}\n"
    )
    for command in (["validate"], ["backup", "--json"]):
        result = run_cli(*command, "-c", str(config))
        assert result.returncode == 2, result.stderr
        assert f"{config}:2:11: backups[0].name: on local:{tmp_path}: " in result.stderr
        assert "more than the 255 a file system allows" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_selection_that_matches_nothing_is_an_error_naming_the_near_matches(
    pg: ThrowawayCluster, shop: str, odd_databases: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    odd, _, others = odd_databases
    store = tmp_path / "store"
    config = config_file(
        pg,
        tmp_path / "backup.yml",
        {"path": str(store)},
        [{"name": "all", "database": "*", "exclude": others}],
    )
    result = run_cli("backup", "-c", str(config), "-n", "all.audit_x_z", env=cli_env(pg))
    assert result.returncode == 2
    assert "-n 'all.audit_x_z' matches no database" in result.stderr
    assert "did you mean" in result.stderr
    assert not list(store.glob("all.*"))
    # The database's own name selects it.
    code, report = backup_json(config, pg, "-n", f"all.{odd}")
    assert code == 0
    assert [job["database"] for job in report["jobs"]] == [odd]


def test_a_run_never_waits_on_itself_when_one_folder_is_spelled_two_ways(
    pg: ThrowawayCluster, shop: str, tmp_path: Path
) -> None:
    store = tmp_path / "x" / "store"
    store.mkdir(parents=True)
    (tmp_path / "x" / "link").symlink_to(store)
    (tmp_path / "x" / "y").mkdir()
    config = config_file(
        pg,
        tmp_path / "backup.yml",
        {"path": str(store)},
        [
            {"name": "a", "database": shop},
            {"name": "b", "database": shop, "storage": {"path": str(tmp_path / "x" / "link")}},
            {"name": "c", "database": shop, "storage": {"path": f"{tmp_path}/x/y/../store"}},
        ],
    )
    code, report = backup_json(config, pg, "--wait")
    assert code == 0, [job["error"] for job in report["jobs"]]
    assert sorted(p.name.split("_")[0] for p in store.glob("*.sql.gz")) == ["a", "b", "c"]


def test_one_bucket_spelled_two_ways_is_one_target_for_locks_and_clean_up(
    pg: ThrowawayCluster, s3: Any, tmp_path: Path, start_cli: Any
) -> None:
    from tests.conftest import s3_storage
    from tests.e2e.test_bounded_time import SLOW, HeldDump

    prefix = "spelled-two-ways"
    held = HeldDump.start(pg, s3, tmp_path, start_cli, prefix, SLOW)
    other = tmp_path / "other"
    other.mkdir()
    spelled = s3_storage(s3, prefix, endpoint_url=s3.endpoint.replace("http", "HTTP") + "/")
    config = config_file(pg, other / "b.yml", spelled, [{"name": "shop", "database": "x"}])
    pruned = run_cli("prune", "-c", str(config), env=cli_env(pg, s3=s3))
    assert pruned.returncode == 1
    assert "another db-backup run holds" in pruned.stderr
    assert len(s3.incomplete_uploads(f"{prefix}/")) == 1  # the live upload was left alone
    held.release()
    stdout, stderr = held.process.communicate(timeout=120)
    assert held.process.returncode == 0, stderr
    remote = json.loads(stdout)["jobs"][0]["targets"][1]
    assert remote["stored"]


def test_markup_in_names_and_errors_is_printed_literally(
    pg: ThrowawayCluster, make_database: Any, tmp_path: Path
) -> None:
    odd = make_database("[bold red]odd[/]", "CREATE TABLE t AS SELECT 1 AS n;")
    config = config_file(
        pg,
        tmp_path / "backup.yml",
        {"path": str(tmp_path / "store")},
        [{"name": "odd", "database": odd}, {"name": "missing", "database": "x[/]"}],
    )
    dry = run_cli("backup", "-c", str(config), "--dry-run", env=cli_env(pg))
    assert dry.returncode == 0, dry.stderr
    assert odd in dry.stdout
    assert "x[/]" in dry.stdout

    ran = run_cli("backup", "-c", str(config), env=cli_env(pg))
    assert ran.returncode == 1, ran.stderr
    assert "internal error" not in ran.stderr
    assert 'database "x[/]" does not exist' in ran.stdout.replace("\n", "")  # the summary

    listed = run_cli("list", "-c", str(config))
    assert listed.returncode == 0, listed.stderr
    assert odd in listed.stdout


def test_a_run_of_one_backup_needs_only_its_own_variables(
    pg: ThrowawayCluster, shop: str, tmp_path: Path
) -> None:
    config = config_file(
        pg,
        tmp_path / "backup.yml",
        {"path": str(tmp_path / "store")},
        [
            {"name": "a", "database": shop},
            {"name": "b", "database": shop, "password": "${OTHER_PW}"},
        ],
    )
    code, report = backup_json(config, pg, "-n", "a")
    assert code == 0
    assert [job["job"] for job in report["jobs"]] == ["a"]
    validated = run_cli("validate", "-c", str(config), env=cli_env(pg))
    assert validated.returncode == 2
    assert "environment variable OTHER_PW is not set" in validated.stderr


def test_no_secret_reaches_the_log_even_at_debug_level(
    pg: ThrowawayCluster, shop: str, s3: Any, tmp_path: Path
) -> None:
    from tests.conftest import s3_storage

    token = "session-token-that-must-stay-secret"
    storage = s3_storage(s3, "debug-log")
    del storage["access_key_id"], storage["secret_access_key"]  # the standard AWS chain
    config = config_file(pg, tmp_path / "backup.yml", storage, [{"name": "shop", "database": shop}])
    env = cli_env(pg, s3=s3, AWS_SESSION_TOKEN=token)
    result = run_cli("--log-level", "debug", "backup", "-c", str(config), env=env)
    assert "X-Amz-Security-Token" in result.stderr  # botocore did log its headers
    for secret in (token, s3.secret_key, pg.password):
        assert secret not in result.stderr
        assert secret not in result.stdout
