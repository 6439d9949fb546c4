"""`db-backup restore`: from a folder or a bucket, plain and custom, into a new database,
compared with the original; what it refuses, what it replaces, and what a failure leaves."""

from __future__ import annotations

import gzip
import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from db_backup.demo import fingerprint
from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    run_cli,
    s3_storage,
    server_defaults,
    write_config,
)
from tests.e2e.test_backup_restore import VARIED
from tests.seaweed import SeaweedServer
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def source_db(pg: ThrowawayCluster) -> str:
    create_database(pg, "restore_source", VARIED)
    return "restore_source"


def databases(pg: ThrowawayCluster) -> set[str]:
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def drop(pg: ThrowawayCluster, *names: str) -> None:
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def user_tables(pg: ThrowawayCluster, database: str) -> int:
    """How many tables `database` holds outside the system schemas."""
    with psycopg.connect(**pg.conninfo(database)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    assert row is not None
    return int(row[0])


def configure(pg: ThrowawayCluster, tmp_path: Path, *backups: dict[str, Any], **extra: Any) -> Path:
    return write_config(
        tmp_path / "backup.yml",
        {"defaults": server_defaults(pg, tmp_path / "out", **extra), "backups": list(backups)},
    )


def backed_up(config: Path, pg: ThrowawayCluster, **env: str) -> list[dict[str, Any]]:
    result = run_cli("backup", "-c", str(config), "--json", env={**cli_env(pg), **env})
    assert result.returncode == 0, result.stderr
    jobs: list[dict[str, Any]] = json.loads(result.stdout)["jobs"]
    return jobs


def restore(config: Path, pg: ThrowawayCluster, *args: str, **env: str) -> Any:
    return run_cli("restore", "-c", str(config), *args, env={**cli_env(pg), **env}, timeout=300)


@pytest.mark.parametrize(
    ("fmt", "compression", "extra"),
    [
        ("plain", {"algorithm": "gzip", "level": 6, "threads": 2}, []),
        ("plain", {"algorithm": "zstd"}, []),
        ("custom", {}, []),
        ("custom", {}, ["-j", "2"]),
    ],
    ids=["plain-gzip", "plain-zstd", "custom", "custom-parallel"],
)
def test_restore_from_a_folder_reproduces_every_row_sequence_and_large_object(
    pg: ThrowawayCluster,
    source_db: str,
    tmp_path: Path,
    fmt: str,
    compression: dict[str, Any],
    extra: list[str],
) -> None:
    config = configure(
        pg,
        tmp_path,
        {"name": "varied", "database": source_db, "format": fmt, "compression": compression},
    )
    backed_up(config, pg)
    into = f"restored_{fmt}_{len(extra)}_{compression.get('algorithm', 'pg')}"
    drop(pg, into)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = restore(
        config, pg, "-n", "varied", "--to-database", into, "--scratch", str(scratch), *extra
    )
    assert result.returncode == 0, result.stderr
    assert f"into database {into!r}" in result.stderr
    assert fingerprint(pg.conninfo(into)) == fingerprint(pg.conninfo(source_db))
    assert not [name for name in databases(pg) if "_restoring_" in name]
    assert list(scratch.iterdir()) == []  # a staged dump (-j) is removed afterwards
    drop(pg, into)


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_restore_from_a_bucket_with_a_json_report(
    pg: ThrowawayCluster, s3: SeaweedServer, source_db: str, tmp_path: Path, fmt: str
) -> None:
    config = configure(
        pg,
        tmp_path,
        {"name": "varied", "database": source_db, "storage": s3_storage(s3, f"from-{fmt}")},
        format=fmt,
    )
    (job,) = backed_up(config, pg, **s3.environment())
    into = f"restored_from_s3_{fmt}"
    drop(pg, into)
    result = restore(
        config, pg, "-n", "varied", "--to-database", into, "--json", **s3.environment()
    )
    assert result.returncode == 0, result.stderr
    assert f"restoring {job['file']}" in result.stderr  # progress: plain lines, no terminal
    report = json.loads(result.stdout)
    assert report["restored"] is True
    assert report["file"] == job["file"]
    assert report["file"].startswith("s3://")
    assert (report["database"], report["format"], report["error"]) == (into, fmt, None)
    assert report["stored_bytes"] == job["stored_bytes"]
    assert fingerprint(pg.conninfo(into)) == fingerprint(pg.conninfo(source_db))
    drop(pg, into)


def test_an_existing_database_is_refused_without_clean_and_replaced_with_it(
    pg: ThrowawayCluster, source_db: str, tmp_path: Path
) -> None:
    config = configure(pg, tmp_path, {"name": "varied", "database": source_db})
    backed_up(config, pg)
    create_database(pg, "occupied", "CREATE TABLE mine (n int); INSERT INTO mine VALUES (42);")
    before = fingerprint(pg.conninfo("occupied"))

    dry = restore(config, pg, "-n", "varied", "--to-database", "occupied", "--clean", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would restore" in dry.stdout
    assert "into database 'occupied'" in dry.stdout
    assert fingerprint(pg.conninfo("occupied")) == before

    refused = restore(config, pg, "-n", "varied", "--to-database", "occupied")
    assert refused.returncode == 1
    assert "exists and is not empty; nothing was changed" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert fingerprint(pg.conninfo("occupied")) == before

    replaced = restore(config, pg, "-n", "varied", "--to-database", "occupied", "--clean")
    assert replaced.returncode == 0, replaced.stderr
    assert fingerprint(pg.conninfo("occupied")) == fingerprint(pg.conninfo(source_db))
    drop(pg, "occupied")


def test_an_existing_empty_database_is_restored_into(
    pg: ThrowawayCluster, source_db: str, tmp_path: Path
) -> None:
    config = configure(pg, tmp_path, {"name": "varied", "database": source_db})
    backed_up(config, pg)
    create_database(pg, "empty_one")
    result = restore(config, pg, "-n", "varied", "--to-database", "empty_one")
    assert result.returncode == 0, result.stderr
    assert fingerprint(pg.conninfo("empty_one")) == fingerprint(pg.conninfo(source_db))
    drop(pg, "empty_one")


def _tamper(dump: Path, edit: Any) -> None:
    """Change the stored dump's SQL and store it recompressed, the manifest left as written."""
    text = gzip.decompress(dump.read_bytes())
    edited = edit(text)
    assert edited != text, "the edit found nothing to change"
    dump.write_bytes(gzip.compress(edited))


def test_stored_bytes_that_do_not_match_the_manifest_restore_nothing(
    pg: ThrowawayCluster, source_db: str, tmp_path: Path
) -> None:
    config = configure(pg, tmp_path, {"name": "varied", "database": source_db})
    (job,) = backed_up(config, pg)
    create_database(pg, "kept_as_is", "CREATE TABLE mine (n int); INSERT INTO mine VALUES (42);")
    before = fingerprint(pg.conninfo("kept_as_is"))
    # A valid dump with one more row: psql would restore it without complaint.
    _tamper(
        Path(job["file"]),
        lambda text: text.replace(
            b'COPY public."UPPER" (k, v) FROM stdin;\n',
            b'COPY public."UPPER" (k, v) FROM stdin;\nzz\tinjected\n',
        ),
    )
    drop(pg, "never_made")
    for into, clean in (("never_made", []), ("kept_as_is", ["--clean"])):
        result = restore(config, pg, "-n", "varied", "--to-database", into, *clean)
        assert result.returncode == 1
        assert "the manifest says" in result.stderr
        assert "nothing was restored" in result.stderr
    assert "never_made" not in databases(pg)
    assert fingerprint(pg.conninfo("kept_as_is")) == before
    assert not [name for name in databases(pg) if "_restoring_" in name]
    drop(pg, "kept_as_is")


def test_a_restore_error_commits_nothing_and_says_what_failed(
    pg: ThrowawayCluster, source_db: str, tmp_path: Path
) -> None:
    config = configure(pg, tmp_path, {"name": "varied", "database": source_db})
    (job,) = backed_up(config, pg)
    dump = Path(job["file"])
    # A dump that restores its first tables, then fails: nothing of it may stay.
    _tamper(
        dump,
        lambda text: text.replace(
            b"CREATE SEQUENCE public.never_called", b"CREATE SEQUENCE public.never_called BROKEN"
        ),
    )
    manifest_path = dump.with_name(dump.name + ".json")
    record = json.loads(manifest_path.read_text())
    record.update(
        sha256=hashlib.sha256(dump.read_bytes()).hexdigest(), stored_bytes=dump.stat().st_size
    )
    manifest_path.write_text(json.dumps(record))
    create_database(pg, "empty_target")
    result = restore(config, pg, "-n", "varied", "--to-database", "empty_target")
    assert result.returncode == 1
    assert "psql exited with code 3" in result.stderr
    assert 'syntax error at or near "BROKEN"' in result.stderr
    assert "nothing was committed" in result.stderr
    assert user_tables(pg, "empty_target") == 0
    drop(pg, "empty_target")


def test_choosing_a_backup_by_time_or_file_and_saying_what_is_wrong(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    create_database(pg, "growing", "CREATE TABLE t AS SELECT generate_series(1, 10) AS n;")
    config = configure(pg, tmp_path, {"name": "growing", "database": "growing"})
    (first,) = backed_up(config, pg)
    with psycopg.connect(**pg.conninfo("growing")) as conn:
        conn.execute("INSERT INTO t SELECT generate_series(11, 25)")
    (second,) = backed_up(config, pg)
    listed = json.loads(run_cli("list", "-c", str(config), "--json").stdout)["backups"]
    taken = {entry["file"]: entry["taken_at"] for entry in listed}

    def count_after(*args: str) -> int:
        drop(pg, "growing_copy")
        result = restore(config, pg, "-n", "growing", "--to-database", "growing_copy", *args)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(**pg.conninfo("growing_copy")) as conn:
            (count,) = conn.execute("SELECT count(*) FROM t").fetchone()  # type: ignore[misc]
        return int(count)

    assert count_after() == 25
    assert count_after("--at", taken[first["file"]]) == 10
    assert count_after("--file", Path(first["file"]).name) == 10
    assert count_after("--file", second["file"]) == 25
    drop(pg, "growing_copy")

    before_any = restore(config, pg, "-n", "growing", "--to-database", "x", "--at", "2001-01-01")
    assert before_any.returncode == 1
    assert (
        "no backup of growing was taken at or before 2001-01-01T00:00:00+00:00" in before_any.stderr
    )
    unknown = restore(config, pg, "-n", "nope", "--to-database", "x")
    assert unknown.returncode == 2
    assert "no job named 'nope' has backups; jobs with backups: growing" in unknown.stderr
    bad_time = restore(config, pg, "-n", "growing", "--to-database", "x", "--at", "yesterday")
    assert bad_time.returncode == 2
    assert "--at: not a time" in bad_time.stderr
    elsewhere = restore(
        config, pg, "-n", "growing", "--to-database", "x", "--from", "s3://nowhere/"
    )
    assert elsewhere.returncode == 2
    assert "its backups are on: local:" in elsewhere.stderr
    assert "x" not in databases(pg)


OWNED = """
CREATE TABLE ledger (id int PRIMARY KEY, amount numeric);
INSERT INTO ledger SELECT g, g * 1.5 FROM generate_series(1, 50) g;
ALTER TABLE ledger OWNER TO app_owner;
GRANT SELECT ON ledger TO app_reader;
"""


def test_with_globals_the_roles_come_first_and_ownership_restores(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        drop(pg, "owned")
        for role in ("app_owner", "app_reader"):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    create_database(pg, "owned", OWNED)
    config = configure(pg, tmp_path, {"name": "owned", "database": "owned", "globals": True})
    backed_up(config, pg)
    # The roles are gone, as on a fresh server: the dump alone cannot restore.
    drop(pg, "owned")
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        for role in ("app_owner", "app_reader"):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

    without = restore(config, pg, "-n", "owned", "--to-database", "owned")
    assert without.returncode == 1
    assert 'role "app_owner" does not exist' in without.stderr
    assert "owned" not in databases(pg)

    result = restore(config, pg, "-n", "owned", "--to-database", "owned", "--with-globals")
    assert result.returncode == 0, result.stderr
    with psycopg.connect(**pg.conninfo("owned")) as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'ledger'"
        ).fetchone()
        grants = conn.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE table_name = 'ledger' AND grantee = 'app_reader'"
        ).fetchall()
        (rows,) = conn.execute("SELECT count(*) FROM ledger").fetchone()  # type: ignore[misc]
    assert owner == ("app_owner",)
    assert grants == [("SELECT",)]
    assert rows == 50
    # Again, now that the roles exist: "already exists" is no error.
    again = restore(
        config, pg, "-n", "owned", "--to-database", "owned", "--with-globals", "--clean"
    )
    assert again.returncode == 0, again.stderr
    drop(pg, "owned")


def test_sigint_mid_restore_leaves_no_database_and_no_child(
    pg: ThrowawayCluster, big_db: str, tmp_path: Path, start_cli: StartCli
) -> None:
    config = configure(
        pg, tmp_path, {"name": "big", "database": big_db}, compression={"algorithm": "none"}
    )
    backed_up(config, pg)
    drop(pg, "big_copy")
    process = start_cli(
        "restore", "-c", str(config), "-n", "big", "--to-database", "big_copy", env=cli_env(pg)
    )

    def copying() -> bool:
        with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'big_copy_restoring_%' "
                "AND query LIKE 'COPY%'"
            ).fetchone()
        return bool(row and row[0])

    wait_for(copying, what="psql copying rows into the staging database", process=process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert not [name for name in databases(pg) if name.startswith("big_copy")], stderr
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql'"
        ).fetchone()
    assert left == (0,)


def test_a_custom_dump_that_does_not_match_its_manifest_commits_nothing(
    pg: ThrowawayCluster, source_db: str, tmp_path: Path
) -> None:
    # Uncompressed custom format: pg_restore has no checksum of its own, knows where its input
    # ends, and would commit before the stored bytes' sha256 is known, if it saw them all.
    config = configure(
        pg,
        tmp_path,
        {"name": "varied", "database": source_db, "format": "custom"},
        compression={"algorithm": "none"},
    )
    (job,) = backed_up(config, pg)
    dump = Path(job["file"])
    data = dump.read_bytes()
    changed = data.replace(b"long long long", b"LONG long long", 1)
    assert changed != data
    assert len(changed) == len(data)
    dump.write_bytes(changed)
    create_database(pg, "empty_custom")
    result = restore(config, pg, "-n", "varied", "--to-database", "empty_custom")
    assert result.returncode == 1
    assert "the file changed" in result.stderr
    assert user_tables(pg, "empty_custom") == 0
    drop(pg, "empty_custom")
