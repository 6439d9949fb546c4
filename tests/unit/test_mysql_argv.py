"""MySQL/MariaDB, pure: the config's `type: mysql | mariadb`, the option file that carries
the password, and the dump program's argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from db_backup.config.load import parse_config
from db_backup.config.schema import MariadbBackup, MysqlBackup, PostgresBackup
from db_backup.errors import ConfigError
from db_backup.plan import server_of
from db_backup.process import INHERITED_FILE
from db_backup.sources.mysql import (
    create_if_missing,
    dump_argv,
    is_server_account,
    option_file,
    users_script,
    version_number,
)

STORAGE = "storage: {path: /srv/b}"


def backups(text: str) -> list[object]:
    config = parse_config(
        f"defaults: {{{STORAGE}}}\nbackups:\n{text}", "b.yml", base_dir=Path("/etc/db"), environ={}
    )
    return list(config.backups)


def test_mysql_and_mariadb_are_one_engine_beside_postgres() -> None:
    pg, my, maria = backups(
        "  - {name: a, database: a}\n"
        "  - {name: b, type: mysql, database: b, host: db}\n"
        "  - {name: c, type: mariadb, database: c, socket: run/mysqld.sock}\n"
    )
    assert isinstance(pg, PostgresBackup)
    assert pg.port == 5432
    assert isinstance(my, MysqlBackup)
    assert (my.engine, my.port, my.format) == ("mysql", 3306, "plain")
    assert isinstance(maria, MariadbBackup)
    assert maria.engine == "mysql"
    assert maria.socket == "/etc/db/run/mysqld.sock"  # relative to the config file
    assert str(server_of(maria)) == "/etc/db/run/mysqld.sock:3306"


def test_keys_of_another_engine_are_named() -> None:
    with pytest.raises(ConfigError) as caught:
        backups(
            "  - {name: b, type: mysql, database: b, pg_dump_path: /x}\n"
            "  - {name: c, type: mariadb, database: c, format: custom}\n"
            "  - {name: d, type: oracle, database: d}\n"
        )
    assert [str(issue) for issue in caught.value.issues] == [
        "b.yml:3:41: backups[0].pg_dump_path: unknown key 'pg_dump_path'; did you mean "
        "'dump_path'?",
        'b.yml:4:51: backups[1].format: invalid value "custom"; expected one of: plain '
        "(backup 'c')",
        'b.yml:5:21: backups[2].type: invalid value "oracle"; expected one of: postgres, '
        "mysql, mariadb (backup 'd')",
    ]


@pytest.mark.parametrize("password", ['a"b', "c'd", "e\\f", "g#h;i$j", " spaced ", "new\nline"])
def test_the_option_file_quotes_whatever_the_password_holds(password: str) -> None:
    text = option_file(password)
    assert text.startswith('[client]\npassword="')
    value = text.split("=", 1)[1].rstrip("\n")
    assert value.startswith('"')
    assert value.endswith('"')
    inner = value[1:-1]
    unescaped = (
        inner.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
    )  # the option parser's escapes
    assert unescaped == password
    assert "\n" not in inner  # one line


def test_the_dump_argv_starts_with_the_option_file_and_ends_with_the_name() -> None:
    [backup] = backups("  - {name: b, type: mariadb, database: '-odd', host: db, username: u}\n")
    assert isinstance(backup, MysqlBackup)
    argv = dump_argv("mariadb-dump", backup, "-odd", INHERITED_FILE)
    assert argv[:2] == ["mariadb-dump", f"--defaults-extra-file={INHERITED_FILE}"]
    assert argv[-2:] == ["--", "-odd"]  # a name starting with '-' is no option
    assert {"--single-transaction", "--quick", "--routines", "--triggers", "--events"} <= set(argv)
    assert not any("password" in arg for arg in argv)
    assert "--defaults-extra-file" not in " ".join(dump_argv("x", backup, "d", None))


def test_versions_compare() -> None:
    assert version_number("10.11.19-MariaDB-0+deb12u1") == 101119
    assert version_number("8.0.36") == 80036 < version_number("10.3.1")


def test_defaults_may_hold_keys_of_either_engine() -> None:
    config = parse_config(
        "defaults: {storage: {path: /srv/b}, pg_dump_path: /opt/pg/bin/pg_dump,"
        " dump_path: /opt/mariadb-dump}\n"
        "backups:\n  - {name: a, database: a}\n  - {name: b, type: mariadb, database: b}\n",
        environ={},
    )
    pg, maria = config.backups
    assert isinstance(pg, PostgresBackup)
    assert pg.pg_dump_path == "/opt/pg/bin/pg_dump"
    assert "dump_path" not in {f for f in pg.__struct_fields__}
    assert isinstance(maria, MariadbBackup)
    assert maria.dump_path == "/opt/mariadb-dump"


def test_a_users_script_creates_every_account_first_and_passes_over_existing_ones() -> None:
    script = users_script(
        "db4 (8.0.40)",
        ["CREATE USER `app`@`%` IDENTIFIED WITH 'caching_sha2_password' AS 0x24",
         "CREATE ROLE IF NOT EXISTS 'auditor'", "CREATE ROLE `reader`"],
        ["GRANT `auditor` TO `app`@`%`", "GRANT PROXY ON ``@`` TO `root`@`localhost`",
         "GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION",
         "GRANT PROXY ON `app`@`%` TO `ops`@`%`"],
        "2026-12-02 04:00:00",
    )  # fmt: skip
    assert script.splitlines()[2:] == [
        "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED WITH 'caching_sha2_password' AS 0x24;",
        "CREATE ROLE IF NOT EXISTS 'auditor';",
        "CREATE ROLE IF NOT EXISTS `reader`;",
        "GRANT `auditor` TO `app`@`%`;",
        "GRANT PROXY ON `app`@`%` TO `ops`@`%`;",  # only the install's own proxy grant goes
        "",
        "-- Dump completed on 2026-12-02 04:00:00",
    ]
    assert create_if_missing("GRANT SELECT ON *.* TO x") == "GRANT SELECT ON *.* TO x"


@pytest.mark.parametrize(
    ("user", "own"),
    [("mysql.sys", True), ("mysql.session", True), ("mariadb.sys", True), ("root", False),
     ("mysql_app", False), ("mariadb.system.app", False)],
)  # fmt: skip
def test_server_accounts(user: str, own: bool) -> None:
    assert is_server_account(user) is own
