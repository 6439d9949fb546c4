"""pg_dump argv and environment as data: quoting, secrets, client choice, completion marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from db_backup.config.load import parse_config
from db_backup.errors import ClientVersionError
from db_backup.sources.postgres import (
    ClientBinary,
    child_env,
    choose_client,
    conninfo_quote,
    dump_argv,
    globals_argv,
    major_of,
    parse_client_version,
    plain_dump_is_complete,
    server_major,
)

PASSWORD = "pa'ss\"wo\\rd:$x"
CLIENT = ClientBinary(Path("/usr/lib/postgresql/15/bin/pg_dump"), "15.18")


def backup(**extra: str):  # type: ignore[no-untyped-def]
    lines = "".join(f"    {k}: {v}\n" for k, v in extra.items())
    text = (
        "backups:\n  - name: a\n    database: a\n    host: db1\n    port: 5433\n"
        "    username: bob\n    password: ${PW}\n    storage: {path: /b}\n" + lines
    )
    return parse_config(text, environ={"PW": PASSWORD}).backups[0]


def test_plain_dump_argv() -> None:
    assert dump_argv(CLIENT, backup(), "shop") == [
        "/usr/lib/postgresql/15/bin/pg_dump",
        "--host=db1",
        "--port=5433",
        "--username=bob",
        "--no-password",
        "--format=plain",
        "--dbname=dbname='shop'",
    ]


def test_custom_format_compresses_inside_pg_dump() -> None:
    argv = dump_argv(CLIENT, backup(format="custom", compression="{level: 3}"), "shop")
    assert argv[-3:] == ["--format=custom", "--compress=3", "--dbname=dbname='shop'"]
    argv = dump_argv(CLIENT, backup(format="custom", compression="{algorithm: none}"), "x")
    assert "--compress=0" in argv


@pytest.mark.parametrize(
    ("database", "quoted"),
    [
        ("my db", "'my db'"),
        ("it's", "'it\\'s'"),
        ("back\\slash", "'back\\\\slash'"),
        ("-leading", "'-leading'"),
        ("a=b c", "'a=b c'"),
        ("ünï", "'ünï'"),
    ],
)
def test_database_names_travel_as_quoted_conninfo(database: str, quoted: str) -> None:
    assert conninfo_quote(database) == quoted
    assert dump_argv(CLIENT, backup(), database)[-1] == f"--dbname=dbname={quoted}"


def test_the_password_is_in_the_environment_and_never_in_argv() -> None:
    config = backup()
    argv = dump_argv(CLIENT, config, "shop") + globals_argv(CLIENT, config, "shop")
    assert not any(PASSWORD in arg or "password=" in arg for arg in argv)
    env = child_env({"PATH": "/bin", "PGPASSWORD": "inherited"}, config, config.password)
    assert env["PGPASSWORD"] == PASSWORD
    assert env["PGCONNECT_TIMEOUT"] == "10"
    assert env["PATH"] == "/bin"


def test_without_a_configured_password_libpq_defaults_apply() -> None:
    text = "backups:\n  - name: a\n    database: a\n    storage: {path: /b}\n"
    config = parse_config(text, environ={}).backups[0]
    env = child_env({"PGPASSFILE": "/home/x/.pgpass"}, config, None)
    assert "PGPASSWORD" not in env
    assert env["PGPASSFILE"] == "/home/x/.pgpass"
    argv = dump_argv(CLIENT, config, "a")
    assert not any(arg.startswith(("--host", "--username")) for arg in argv)


def test_globals_argv() -> None:
    assert globals_argv(CLIENT, backup(), "postgres") == [
        "/usr/lib/postgresql/15/bin/pg_dumpall",
        "--host=db1",
        "--port=5433",
        "--username=bob",
        "--no-password",
        "--globals-only",
        "--database=postgres",
    ]


def test_dump_command_picks_the_tool_format_and_completeness_rule() -> None:
    from db_backup.sources.postgres import dump_command

    plain = dump_command(CLIENT, backup(), "shop", globals_only=False)
    assert (plain.tool, plain.format) == ("pg_dump", "plain")
    assert plain.is_complete(b"\n-- PostgreSQL database dump complete\n--\n\n")
    assert not plain.is_complete(b"COPY t FROM stdin;\n1\n")
    custom = dump_command(CLIENT, backup(format="custom"), "shop", globals_only=False)
    assert (custom.tool, custom.format, custom.is_complete(b"PGDMP...")) == (
        "pg_dump",
        "custom",
        True,
    )
    cluster = dump_command(CLIENT, backup(format="custom"), "postgres", globals_only=True)
    assert (cluster.tool, cluster.format) == ("pg_dumpall", "plain")
    assert cluster.argv[0].endswith("/pg_dumpall")
    assert not cluster.is_complete(b"\n-- PostgreSQL database dump complete\n--\n\n")


def test_versions() -> None:
    assert parse_client_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n") == "15.18"
    assert parse_client_version("pg_dump (PostgreSQL) 9.6.24") == "9.6"
    assert (major_of("15.18"), major_of("9.6"), major_of("17.0")) == (1500, 906, 1700)
    assert (server_major(150018), server_major(90624), server_major(170002)) == (1500, 906, 1700)
    with pytest.raises(ValueError, match="not a PostgreSQL client version"):
        parse_client_version("bash: pg_dump: not found")


def test_client_choice_prefers_the_newest_that_is_new_enough() -> None:
    v13 = ClientBinary(Path("/usr/lib/postgresql/13/bin/pg_dump"), "13.9")
    v15 = ClientBinary(Path("/usr/lib/postgresql/15/bin/pg_dump"), "15.18")
    v17 = ClientBinary(Path("/usr/lib/postgresql/17/bin/pg_dump"), "17.2")
    assert choose_client([v13, v15, v17], 130009) == v17
    assert choose_client([v13, v15], 150004) == v15
    with pytest.raises(ClientVersionError, match="server runs PostgreSQL 16 but no pg_dump"):
        choose_client([v13, v15], 160001)
    with pytest.raises(ClientVersionError, match="postgresql-client-16"):
        choose_client([], 160001)


def test_completion_marker() -> None:
    complete = b"...\n--\n-- PostgreSQL database dump complete\n--\n\n"
    assert plain_dump_is_complete(complete)
    assert not plain_dump_is_complete(b"COPY public.t (a) FROM stdin;\n1\n2\n")
    assert plain_dump_is_complete(
        b"--\n-- PostgreSQL database cluster dump complete\n--\n\n", globals_only=True
    )
    assert not plain_dump_is_complete(complete, globals_only=True)
