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


def globals_argv(program: str, backup: MysqlBackup, options_path: str | None) -> list[str]:
    """The server's users, roles and grants (MariaDB's mariadb-dump --system=users), as SQL
    that recreates them: what `globals: true` keeps, once per server."""
    return [
        program,
        *connection_args(backup, options_path),
        "--system=users",
        "--default-character-set=utf8mb4",
        "--comments",
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
