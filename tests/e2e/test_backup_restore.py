"""Back up a database with varied types and odd identifiers, restore it, compare everything."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from db_backup.demo import fingerprint
from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import cli_env, run_cli, server_defaults, write_config

pytestmark = pytest.mark.e2e

VARIED = r"""
CREATE SCHEMA "Weird Schema";
CREATE TYPE "Weird Schema".mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE "Weird Schema"."Odd ""Table"" Name" (
    id serial PRIMARY KEY,
    "select" text,
    "Mixed Case" integer,
    "sp ace" numeric(30, 10),
    raw bytea,
    doc jsonb,
    numbers integer[],
    at timestamptz,
    day date,
    span interval,
    ident uuid,
    flag boolean,
    addr inet,
    feeling "Weird Schema".mood,
    ratio double precision,
    big bigint
);
INSERT INTO "Weird Schema"."Odd ""Table"" Name"
    ("select", "Mixed Case", "sp ace", raw, doc, numbers, at, day, span, ident, flag, addr,
     feeling, ratio, big)
SELECT
    CASE g % 5
        WHEN 0 THEN NULL
        WHEN 1 THEN E'tab\there\nnewline \\ backslash ''quote'' "dq"'
        WHEN 2 THEN 'ünïcødé ☃ 日本語'
        WHEN 3 THEN ''
        ELSE 'row ' || g
    END,
    g - 1000,
    g * 3.1415926535,
    decode(md5(g::text), 'hex'),
    jsonb_build_object('g', g, 'nested', jsonb_build_array(g, 'x', NULL)),
    ARRAY[g, g * 2, NULL],
    timestamptz '2000-01-01 00:00:00+00' + g * interval '1 hour 1 second',
    date '1999-12-31' + g,
    g * interval '1 minute 3 seconds',
    md5(g::text)::uuid,
    g % 2 = 0,
    ('10.0.' || (g % 256) || '.' || (g % 200))::inet,
    (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::"Weird Schema".mood,
    CASE WHEN g = 7 THEN 'NaN'::float8 WHEN g = 8 THEN '-Infinity'::float8 ELSE g / 7.0 END,
    9223372036854775807 - g
FROM generate_series(1, 3000) g;
CREATE TABLE public."UPPER" (k text PRIMARY KEY, v text);
INSERT INTO public."UPPER" VALUES ('a', NULL), ('b', repeat('long ', 10000));
CREATE SEQUENCE "Weird Schema"."counter seq" START 100;
SELECT setval('"Weird Schema"."counter seq"', 4242);
CREATE SEQUENCE never_called;
SELECT lo_from_bytea(0, decode(repeat(md5('large object'), 20000), 'hex'));
SELECT lo_from_bytea(0, '\x00ff00ff'::bytea);
"""


@pytest.fixture(scope="module")
def varied_db(pg: ThrowawayCluster) -> str:
    from tests.conftest import create_database

    create_database(pg, "varied", VARIED)
    return "varied"


def restore(pg: ThrowawayCluster, command: list[str], target_db: str, dump: Path) -> None:
    """Create `target_db` and run a restore pipeline into it; fails the test on any error."""
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target_db))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target_db)))
    env = cli_env(PGPASSWORD=pg.password)
    connection = [f"--host={pg.host}", f"--port={pg.port}", f"--username={pg.superuser}"]
    if command[0] in ("gunzip", "zstd"):
        with subprocess.Popen([*command, "--stdout", str(dump)], stdout=subprocess.PIPE) as gunzip:
            psql = subprocess.run(
                [
                    str(pg.client_bin("psql")),
                    "--no-psqlrc",
                    "--quiet",
                    "--set=ON_ERROR_STOP=1",
                    *connection,
                    f"--dbname={target_db}",
                ],
                stdin=gunzip.stdout,
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            assert gunzip.wait() == 0
        assert psql.returncode == 0, psql.stderr
    else:
        restored = subprocess.run(
            [
                str(pg.client_bin("pg_restore")),
                "--exit-on-error",
                *connection,
                f"--dbname={target_db}",
                str(dump),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert restored.returncode == 0, restored.stderr


def run_backup(pg: ThrowawayCluster, tmp_path: Path, **backup: Any) -> dict[str, Any]:
    config = write_config(
        tmp_path / "backup.yml",
        {"defaults": server_defaults(pg, tmp_path / "out"), "backups": [backup]},
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["exit_code"] == 0
    job: dict[str, Any] = report["jobs"][0]
    return job


RESTORES = {
    # name: (format, compression, file suffix, restore pipeline)
    "plain-gzip": ("plain", {"algorithm": "gzip", "threads": 1}, ".sql.gz", ["gunzip"]),
    "plain-gzip-parallel": (
        "plain",
        {"algorithm": "gzip", "level": 6, "threads": 2},
        ".sql.gz",
        ["gunzip"],
    ),
    "plain-zstd": ("plain", {"algorithm": "zstd", "threads": 2}, ".sql.zst", ["zstd", "-d"]),
    "custom": ("custom", {}, ".dump", ["pg_restore"]),
}


@pytest.mark.parametrize("case", RESTORES)
def test_backup_then_restore_reproduces_every_row_sequence_and_large_object(
    pg: ThrowawayCluster, varied_db: str, tmp_path: Path, case: str
) -> None:
    fmt, compression, suffix, restore_with = RESTORES[case]
    job = run_backup(
        pg, tmp_path, name="varied", database=varied_db, format=fmt, compression=compression
    )
    dump = Path(job["file"])
    assert dump.name.endswith(suffix)
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600

    target = f"varied_restored_{case.replace('-', '_')}"
    restore(pg, restore_with, target, dump)

    original = fingerprint(pg.conninfo(varied_db))
    copy = fingerprint(pg.conninfo(target))
    assert set(original.tables) == {'"Weird Schema"."Odd ""Table"" Name"', 'public."UPPER"'}
    assert original.tables['"Weird Schema"."Odd ""Table"" Name"'][0] == 3000
    assert original.sequences['"Weird Schema"."counter seq"'] == (4242, True)
    assert len(original.large_objects) == 2
    assert copy == original


def test_manifest_describes_the_backup(
    pg: ThrowawayCluster, varied_db: str, tmp_path: Path
) -> None:
    import gzip
    import hashlib

    job = run_backup(pg, tmp_path, name="varied", database=varied_db)
    dump, manifest_path = Path(job["file"]), Path(job["manifest"])
    manifest = json.loads(manifest_path.read_text())
    content = dump.read_bytes()
    assert manifest_path == dump.with_name(dump.name + ".json")
    assert stat.S_IMODE(manifest_path.stat().st_mode) == 0o600
    assert manifest["file"] == dump.name
    assert manifest["sha256"] == hashlib.sha256(content).hexdigest() == job["sha256"]
    assert manifest["stored_bytes"] == len(content)
    assert manifest["raw_bytes"] == len(gzip.decompress(content))
    assert manifest["job"] == "varied"
    assert manifest["database"] == varied_db
    assert manifest["server"] == f"{pg.host}:{pg.port}"
    assert manifest["server_version"].startswith("15.")
    assert manifest["client"].startswith("pg_dump 15.")
    assert manifest["compression"] == {"algorithm": "gzip", "level": 1}
    assert manifest["format"] == "plain"
    assert manifest["started_at"] <= manifest["finished_at"]
    assert manifest["duration_seconds"] >= 0
    assert manifest["tool_version"]
    leftovers = [p.name for p in dump.parent.iterdir() if p.name.endswith(".partial")]
    assert leftovers == []


def test_globals_are_saved_beside_the_dumps(
    pg: ThrowawayCluster, varied_db: str, tmp_path: Path
) -> None:
    import gzip

    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS globals_probe")
        conn.execute("CREATE ROLE globals_probe NOLOGIN")
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [{"name": "varied", "database": varied_db, "globals": True}],
        },
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    jobs = {job["job"]: job for job in json.loads(result.stdout)["jobs"]}
    globals_job = jobs[f"globals-{pg.host}-{pg.port}"]
    assert globals_job["kind"] == "globals"
    text = gzip.decompress(Path(globals_job["file"]).read_bytes()).decode()
    assert "CREATE ROLE globals_probe;" in text
    assert "-- PostgreSQL database cluster dump complete" in text
