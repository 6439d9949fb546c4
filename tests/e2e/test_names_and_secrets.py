"""Awkward database names and passwords; the password never shows in argv, logs or manifests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import StartCli, cli_env, run_cli, write_config
from tests.fakes import recording_pg_dump
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

ODD_NAMES = ["my db", 'it\'s "quoted"', "ünïcødé ☃", "-leading", "a=b c", "back\\slash"]
ODD_PASSWORD = "pa'ss\"wo\\rd:$x ${NOT_A_VAR} end"
ROLE = "odd user"


@pytest.fixture(scope="module")
def odd_setup(pg: ThrowawayCluster) -> list[str]:
    """A role with an awkward password owning databases with awkward names."""
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        for name in ODD_NAMES:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(ODD_PASSWORD)
            )
        )
        for name in ODD_NAMES:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(ROLE)
                )
            )
    for name in ODD_NAMES:
        with psycopg.connect(**pg.conninfo(name, user=ROLE, password=ODD_PASSWORD)) as conn:
            conn.execute("CREATE TABLE marker (db text)")
            conn.execute("INSERT INTO marker VALUES (current_database())")
    return ODD_NAMES


def test_odd_names_and_password_back_up_without_leaking_the_password(
    pg: ThrowawayCluster, odd_setup: list[str], tmp_path: Path
) -> None:
    argv_log = tmp_path / "argv.jsonl"
    wrapper = recording_pg_dump(tmp_path, pg.client_bin("pg_dump"), argv_log)
    out = tmp_path / "out"
    # The password is written literally in the config ($ and ${...} escaped as $$).
    literal = ODD_PASSWORD.replace("$", "$$")
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": {
                "host": pg.host,
                "port": pg.port,
                "username": ROLE,
                "password": literal,
                "pg_dump_path": str(wrapper),
                "storage": {"path": str(out)},
            },
            "backups": [
                {"name": f"odd{index}", "database": name} for index, name in enumerate(odd_setup)
            ],
        },
    )
    result = run_cli("--log-level", "debug", "backup", "-c", str(config), "--json", env=cli_env())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [job["status"] for job in report["jobs"]] == ["succeeded"] * len(odd_setup)

    # Each dump holds its own database's marker row: the name reached the server intact.
    for job, name in zip(report["jobs"], odd_setup, strict=True):
        assert job["database"] == name
        text = gzip.decompress(Path(job["file"]).read_bytes()).decode()
        assert f"\n{name}\n" in text.replace("\\\\", "\\")

    argvs = [json.loads(line) for line in argv_log.read_text().splitlines()]
    dumps = [argv for argv in argvs if argv[1:] != ["--version"]]
    assert len(dumps) == len(odd_setup)
    assert len(argvs) - len(dumps) == 1  # the version was probed once for all jobs
    manifests = "".join(Path(job["manifest"]).read_text() for job in report["jobs"])
    for text in (json.dumps(argvs), result.stderr, result.stdout, manifests):
        assert ODD_PASSWORD not in text
        assert "pa'ss" not in text
    assert "spawning" in result.stderr  # debug logging was on, so the commands were logged


def test_password_file_and_a_wildcard_over_odd_names(
    pg: ThrowawayCluster, odd_setup: list[str], tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(ODD_PASSWORD + "\n")
    secret.chmod(0o600)
    # A role may only see its own databases' contents, but it lists them all; exclude the rest.
    with psycopg.connect(**pg.conninfo()) as conn:
        others = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    exclude = [name.replace("[", "[[]") for name in others if name not in odd_setup]
    config = write_config(
        tmp_path / "backup.yml",
        {
            "backups": [
                {
                    "name": "all",
                    "host": pg.host,
                    "port": pg.port,
                    "username": ROLE,
                    "password_file": str(secret),
                    "database": "*",
                    "exclude": exclude,
                    "storage": {"path": str(tmp_path / "out")},
                }
            ]
        },
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env())
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = json.loads(result.stdout)["jobs"]
    assert sorted(job["database"] for job in jobs) == sorted(odd_setup)
    for job in jobs:
        file_name = Path(job["file"]).name
        assert file_name.startswith("all.")
        assert Path(job["file"]).parent == tmp_path / "out"
        assert all(ch.isalnum() or ch in "._-" for ch in file_name)


def test_the_password_is_not_visible_in_the_running_childs_argv(
    pg: ThrowawayCluster, odd_setup: list[str], tmp_path: Path, start_cli: StartCli
) -> None:
    """Inspect /proc/<pid>/cmdline of a live pg_dump child while it runs."""
    from tests.fakes import fake_pg_dump

    started = tmp_path / "started"
    hanging = fake_pg_dump(tmp_path, "hangs")
    config = write_config(
        tmp_path / "backup.yml",
        {
            "backups": [
                {
                    "name": "odd",
                    "host": pg.host,
                    "port": pg.port,
                    "username": ROLE,
                    "password": "${ODD_PW}",
                    "database": odd_setup[0],
                    "pg_dump_path": str(hanging),
                    "timeout": "60s",
                    "storage": {"path": str(tmp_path / "out")},
                }
            ]
        },
    )
    env = cli_env(ODD_PW=ODD_PASSWORD, FAKE_STARTED_FILE=str(started))
    runner = start_cli("backup", "-c", str(config), env=env)
    wait_for(started.exists, what="the fake pg_dump to start", process=runner)
    pid = int(started.read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert any(arg.startswith(b"--dbname=") for arg in cmdline)
    assert not any(ODD_PASSWORD.encode() in arg for arg in cmdline)
    assert f"PGPASSWORD={ODD_PASSWORD}".encode() in environ
