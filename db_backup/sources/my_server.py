"""MySQL / MariaDB servers, I/O: connection checks, discovery and what a restore needs to ask,
through PyMySQL (pure Python, no compiler, no libmysqlclient; its calls block, so each runs
on a daemon thread), and the dump program found on disk. Errors are translated here, once.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from db_backup.config.schema import MysqlBackup
from db_backup.credentials import password_of
from db_backup.errors import (
    CheckFailure,
    ConnectionCheckError,
    ToolNotFoundError,
)
from db_backup.redact import redact
from db_backup.sources.base import ServerInfo
from db_backup.sources.mysql import SYSTEM_SCHEMAS, TRANSACTIONAL_ENGINES, version_number
from db_backup.threads import in_thread

log = logging.getLogger(__name__)

# Server error codes (errmsg.h) and client codes (errmsg.h of the client library), by what
# they mean for a connection check.
_AUTH_FAILED = {1044, 1045, 1698}  # access denied (to the database, for the user, plugin)
_DATABASE_MISSING = {1049}  # unknown database
_UNAVAILABLE = {1040, 1053, 2013}  # too many connections, shutting down, lost during connect
_UNREACHABLE = {2002, 2003, 2005, 2006}  # socket, TCP, unknown host, gone away


def resolve_password(backup: MysqlBackup) -> str | None:
    """The configured password, read from `password_file` if that is how it is given; None:
    the user's own option files (~/.my.cnf) say, as for the mysql client."""
    return password_of(backup.password, backup.password_file)


def connect_options(
    backup: MysqlBackup, database: str | None, password: str | None
) -> dict[str, Any]:
    """PyMySQL's connect() arguments for the backup's server (JSON-able: a child takes them)."""
    options: dict[str, Any] = {
        "user": backup.username,
        "database": database or None,
        "connect_timeout": max(1, round(backup.connect_timeout)),
        "read_timeout": max(5, round(backup.connect_timeout) * 3),
        "charset": "utf8mb4",
    }
    if backup.socket:
        options["unix_socket"] = backup.socket
    else:
        options["host"] = backup.host or "localhost"
        options["port"] = backup.port
    if password is not None:
        options["password"] = password
    else:
        own = Path.home() / ".my.cnf"
        if own.is_file():  # as the mysql client: the user's [client] section
            options["read_default_file"] = str(own)
    return options


def connect(options: dict[str, Any]) -> Any:
    """A PyMySQL connection (blocking); its failure as a ConnectionCheckError."""
    import pymysql

    try:
        return pymysql.connect(**options)
    except pymysql.err.MySQLError as exc:
        raise check_error(exc, options.get("password")) from None


def _connect(backup: MysqlBackup, database: str | None, password: str | None) -> Any:
    return connect(connect_options(backup, database, password))


def check_error(exc: Exception, password: str | None) -> ConnectionCheckError:
    """A PyMySQL error as a connection check's verdict, the password masked."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    said = redact(str(exc.args[1] if len(exc.args) > 1 else exc), password)
    if code in _AUTH_FAILED:
        return ConnectionCheckError(CheckFailure.AUTH_FAILED, said)
    if code in _DATABASE_MISSING:
        return ConnectionCheckError(CheckFailure.DATABASE_MISSING, said)
    if "timed out" in said.lower():
        return ConnectionCheckError(CheckFailure.TIMED_OUT, said)
    if code in _UNAVAILABLE:
        return ConnectionCheckError(CheckFailure.UNAVAILABLE, said)
    if code in _UNREACHABLE:
        return ConnectionCheckError(CheckFailure.UNREACHABLE, said)
    return ConnectionCheckError(CheckFailure.ERROR, said)


def query(
    backup: MysqlBackup, database: str | None, password: str | None, sql: str, *args: Any
) -> list[tuple[Any, ...]]:
    """Run one statement (blocking: call it in a thread); its rows."""
    import pymysql

    connection = _connect(backup, database, password)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, args or None)
            return list(cursor.fetchall())
    except pymysql.err.MySQLError as exc:
        raise check_error(exc, password) from None
    finally:
        connection.close()


def _probe(backup: MysqlBackup, database: str | None, password: str | None) -> ServerInfo:
    import pymysql

    connection = _connect(backup, database, password)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            (version,) = cursor.fetchone()
            size = None
            if database:
                cursor.execute(
                    "SELECT COALESCE(SUM(data_length + index_length), 0), "
                    " GROUP_CONCAT(CASE WHEN engine NOT IN %s THEN "
                    "  CONCAT(table_name, ' (', engine, ')') END "
                    "  ORDER BY table_name SEPARATOR ', ') "
                    "FROM information_schema.tables "
                    "WHERE table_schema = %s AND table_type = 'BASE TABLE'",
                    (tuple(TRANSACTIONAL_ENGINES), database),
                )
                size, inconsistent = cursor.fetchone()
                if inconsistent:
                    log.warning(
                        "database %r on %s: not made consistent by --single-transaction "
                        "(dumped table by table as they are): %s",
                        database,
                        backup.socket or f"{backup.host}:{backup.port}",
                        inconsistent,
                    )
    except pymysql.err.MySQLError as exc:
        raise check_error(exc, password) from None
    finally:
        connection.close()
    product = "MariaDB" if "mariadb" in version.lower() else "MySQL"
    return ServerInfo(
        product,
        version=version,
        version_num=version_number(version),
        database_size=int(size) if size is not None else None,
    )


async def check_connection(
    backup: MysqlBackup, database: str | None, password: str | None
) -> ServerInfo:
    """Connect to `database` (None: the server alone) as the dump will; the server's version
    and the database's size. Tables that --single-transaction cannot make consistent
    (MyISAM, Aria, MEMORY...) are warned about, by name."""
    return await in_thread(_probe, backup, database, password)


async def list_databases(backup: MysqlBackup, password: str | None) -> list[str]:
    """Every database on the server but its own schemas (mysql, sys, ...)."""
    rows = await in_thread(query, backup, None, password, "SHOW DATABASES")
    return sorted(name for (name,) in rows if name not in SYSTEM_SCHEMAS)


def find_dump_program(backup: MysqlBackup) -> Path:
    """`dump_path`, else mariadb-dump, else mysqldump, on PATH."""
    if backup.dump_path:
        path = Path(backup.dump_path)
        if not os.access(path, os.X_OK):
            raise ToolNotFoundError(f"dump_path {path} is not an executable file")
        return path
    for name in ("mariadb-dump", "mysqldump"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ToolNotFoundError(
        "neither mariadb-dump nor mysqldump found on PATH; install mariadb-client (or "
        "mysql-client), or set dump_path"
    )


def find_client_program() -> Path:
    """mariadb, else mysql, on PATH: what reads a dump back in."""
    for name in ("mariadb", "mysql"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ToolNotFoundError("neither mariadb nor mysql found on PATH; install mariadb-client")


@cache
def _program_version(path: Path, modified: int, size: int) -> str:
    """`mariadb-dump --version`'s version, asked once per binary as it is on disk."""
    try:
        result = subprocess.run(
            [str(path), "--no-defaults", "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolNotFoundError(f"{path}: cannot run: {exc}") from None
    words = result.stdout.split()
    # "mariadb-dump from 11.x..." or "mysqldump  Ver 10.19 Distrib 10.11.19-MariaDB, ..."
    for marker in ("Distrib", "from"):
        if marker in words and words.index(marker) + 1 < len(words):
            return words[words.index(marker) + 1].rstrip(",")
    return words[-1] if words else "unknown"


def program_version(path: Path) -> str:
    status = path.stat()
    return _program_version(path, status.st_mtime_ns, status.st_size)
