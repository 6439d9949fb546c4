"""MySQL and MariaDB, pure: the client option file that carries the password, argv for
mariadb-dump / mysqldump and the mariadb / mysql client, which schemas are the server's own,
and how a complete dump ends. No I/O here (my_server.py connects, my_source.py runs).
"""

from __future__ import annotations

import re

from db_backup.config.schema import MysqlBackup

# Schemas of the server itself: never dumped as databases (`database: "*"` leaves them out).
SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
# mariadb-dump / mysqldump end every dump (with --comments, their default) with this line.
END_MARKER = b"\n-- Dump completed"
# Looked for in this order on PATH when `dump_path` is not set: MariaDB's names first (its
# mysqldump is a deprecated alias), then MySQL's.
DUMP_PROGRAMS = ("mariadb-dump", "mysqldump")
CLIENT_PROGRAMS = ("mariadb", "mysql")
# Storage engines whose tables --single-transaction makes consistent; others (MyISAM,
# Aria, MEMORY...) are dumped as they are at that moment, table by table.
TRANSACTIONAL_ENGINES = frozenset({"InnoDB", "XtraDB", "RocksDB", "TokuDB"})
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def option_file(password: str) -> str:
    """A client option file holding the password, handed to the child on an inherited pipe
    (process.spawn's `inherited_file`), so it is neither in argv nor anywhere on disk. The
    value is double-quoted with its backslashes, quotes and line breaks escaped, so `#`, `;`,
    quotes and spaces in it mean nothing to the option parser."""
    escaped = (
        password.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'[client]\npassword="{escaped}"\n'


def connection_args(backup: MysqlBackup, options_path: str | None) -> list[str]:
    """How a client reaches the backup's server; `options_path` names the client option
    file with the password (see option_file()), or None. `--defaults-extra-file` must come
    first (the client reads option-file options only there); without one the user's own
    option files (~/.my.cnf) apply, as for the mysql client."""
    args = [f"--defaults-extra-file={options_path}"] if options_path is not None else []
    if backup.socket:
        args += [f"--socket={backup.socket}", "--protocol=SOCKET"]
    elif backup.host:
        args += [f"--host={backup.host}", f"--port={backup.port}", "--protocol=TCP"]
    else:
        args.append(f"--port={backup.port}")
    if backup.username:
        args.append(f"--user={backup.username}")
    return args  # no --connect-timeout: mariadb-dump knows none (the probe bounded it)


def dump_argv(
    program: str, backup: MysqlBackup, database: str, options_path: str | None
) -> list[str]:
    """One database, consistent for InnoDB tables (one snapshot, read row by row), with its
    routines, triggers and events, binary data as hex, in utf8mb4. No CREATE DATABASE nor
    USE: a dump restores into whatever database it is given."""
    return [
        program,
        *connection_args(backup, options_path),
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--comments",  # the end marker ("-- Dump completed") is a comment
        "--",
        database,
    ]


def client_argv(
    program: str, backup: MysqlBackup, database: str | None, options_path: str | None
) -> list[str]:
    """The client reading a dump from stdin into `database` (None: server-wide, users and
    grants), stopping at the first error."""
    return [
        program,
        *connection_args(backup, options_path),
        f"--connect-timeout={max(1, round(backup.connect_timeout))}",
        "--default-character-set=utf8mb4",
        "--batch",
        *([f"--database={database}"] if database is not None else []),
    ]


def version_number(version: str) -> int:
    """`10.11.19-MariaDB-0+deb12u1` → 101119: comparable."""
    match = _VERSION.search(version)
    if match is None:
        return 0
    major, minor, patch = (int(part) for part in match.groups())
    return major * 10000 + minor * 100 + patch


# Accounts the server makes for itself (MySQL's mysql.sys, mysql.session, mysql.infoschema;
# MariaDB's mariadb.sys): a restore must not touch them.
_SERVER_ACCOUNT_PREFIX = "mysql."
_SERVER_ACCOUNTS = frozenset({"mariadb.sys"})


# The proxy grant every install gives root@localhost on the anonymous user: the server
# recreates it, and only an account that holds it WITH GRANT OPTION (root over the socket, no
# admin over TCP) may grant it again, so restoring it would fail where nothing is missing.
_BOOTSTRAP_PROXY = re.compile(r"GRANT PROXY ON (''|``)@(''|``|'%'|`%`) TO ")


def is_server_account(user: str) -> bool:
    """Is `user` one of the accounts a server creates for its own use?"""
    return user.startswith(_SERVER_ACCOUNT_PREFIX) or user in _SERVER_ACCOUNTS


def create_if_missing(statement: str) -> str:
    """SHOW CREATE USER's (or a role's) statement, made to pass over an account the server
    has already, so a restore of users into a server that has some goes on."""
    for verb in ("CREATE USER ", "CREATE ROLE "):
        if statement.startswith(verb) and not statement.startswith(f"{verb}IF NOT EXISTS "):
            return f"{verb}IF NOT EXISTS {statement[len(verb) :]}"
    return statement


def users_script(server: str, creates: list[str], grants: list[str], completed: str) -> str:
    """The SQL that recreates a server's accounts: every CREATE first (a grant of a role
    needs the role), then every GRANT; ending with the end marker as mysqldump's does."""
    lines = [f"-- Users, roles and grants of {server} (SHOW CREATE USER, SHOW GRANTS)", ""]
    lines += [f"{create_if_missing(statement)};" for statement in creates]
    lines += [f"{statement};" for statement in grants if not _BOOTSTRAP_PROXY.match(statement)]
    return "\n".join([*lines, "", f"-- Dump completed on {completed}", ""])
