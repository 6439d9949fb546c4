"""PostgreSQL as a dump source, the I/O part: connection checks, discovery, installed clients.

psycopg's errors are translated here, once, into ConnectionCheckError with a `kind` a person
can act on (auth failed / database missing / timed out / unreachable). libpq reports connection
failures without a SQLSTATE, so the kind is read from its message.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db_backup.config.schema import BackupConfig
from db_backup.credentials import password_of
from db_backup.errors import (
    CheckFailure,
    ConnectionCheckError,
    ToolNotFoundError,
)
from db_backup.redact import redact
from db_backup.sources.base import ServerInfo
from db_backup.sources.postgres import (
    ClientBinary,
    choose_client,
    parse_client_version,
)
from db_backup.threads import in_thread

if TYPE_CHECKING:
    import psycopg

CLIENT_GLOB = "/usr/lib/postgresql/*/bin/pg_dump"

_AUTH_MARKERS = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    'role "',  # role "x" does not exist
    "permission denied for database",
)
_UNREACHABLE_MARKERS = (
    "connection refused",
    "could not translate host name",
    "no route to host",
    "network is unreachable",
    "no such file or directory",  # the local socket does not exist
)


def resolve_password(backup: BackupConfig) -> str | None:
    """The configured password, read from `password_file` if that is how it is given."""
    return password_of(backup.password, backup.password_file)


def _connect_kwargs(backup: BackupConfig, database: str, password: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "dbname": database,
        "port": backup.port,
        "connect_timeout": max(1, round(backup.connect_timeout)),
        "application_name": "db-backup",
    }
    if backup.host:
        kwargs["host"] = backup.host
    if backup.username:
        kwargs["user"] = backup.username
    if password is not None:
        kwargs["password"] = password
    return kwargs


_UNAVAILABLE_MARKERS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "too many clients already",
    "remaining connection slots are reserved",
)


def _classify(message: str) -> CheckFailure:
    lowered = message.lower()
    if any(marker in lowered for marker in _UNAVAILABLE_MARKERS):
        return CheckFailure.UNAVAILABLE
    if "does not exist" in lowered and "database" in lowered:
        return CheckFailure.DATABASE_MISSING
    if any(marker in lowered for marker in _AUTH_MARKERS):
        return CheckFailure.AUTH_FAILED
    if "timeout" in lowered or "timed out" in lowered:
        return CheckFailure.TIMED_OUT
    if any(marker in lowered for marker in _UNREACHABLE_MARKERS):
        return CheckFailure.UNREACHABLE
    return CheckFailure.ERROR


def tidy(message: str, password: str | None) -> str:
    """libpq's multi-line message on one line, without any password it might echo."""
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return redact(text.removeprefix("connection failed: "), password)


async def connect(
    backup: BackupConfig, database: str, password: str | None
) -> psycopg.AsyncConnection[Any]:
    import psycopg  # deferred: only runs that talk to a server pay its import time

    kwargs = _connect_kwargs(backup, database, password)
    try:
        # libpq's connect_timeout bounds each attempt; this bounds DNS and retries too.
        async with asyncio.timeout(backup.connect_timeout):
            return await psycopg.AsyncConnection.connect(**kwargs, autocommit=True)
    except (TimeoutError, psycopg.errors.ConnectionTimeout):
        raise ConnectionCheckError(
            CheckFailure.TIMED_OUT, f"no answer within {backup.connect_timeout:g}s"
        ) from None
    except psycopg.Error as exc:
        detail = tidy(str(exc), password)
        raise ConnectionCheckError(_classify(detail), detail) from None


async def check_connection(backup: BackupConfig, database: str, password: str | None) -> ServerInfo:
    """Connect to `database` as the dump will, and read the server version and database size."""
    import psycopg

    conn = await connect(backup, database, password)
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT current_setting('server_version_num')::int,"
                " current_setting('server_version'),"
                " pg_database_size(current_database())"
            )
            row = await cur.fetchone()
    except psycopg.Error as exc:
        raise ConnectionCheckError(CheckFailure.ERROR, tidy(str(exc), password)) from None
    finally:
        await conn.close()
    assert row is not None
    return ServerInfo("PostgreSQL", version=row[1], version_num=row[0], database_size=row[2])


async def list_databases(backup: BackupConfig, password: str | None) -> list[str]:
    """Every database on the backup's server that accepts connections and is not a template."""
    import psycopg

    conn = await connect(backup, "postgres", password)
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate"
            )
            return [row[0] for row in await cur.fetchall()]
    except psycopg.Error as exc:
        raise ConnectionCheckError(CheckFailure.ERROR, tidy(str(exc), password)) from None
    finally:
        await conn.close()


@cache
def _client_version(pg_dump: Path, modified: int, size: int) -> str:
    """`pg_dump --version`, asked once per binary as it is on disk (an upgrade changes its
    modification time and size, so an upgraded pg_dump is asked again)."""
    import subprocess

    try:
        result = subprocess.run(
            [str(pg_dump), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise ToolNotFoundError(f"{pg_dump}: cannot run: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise ToolNotFoundError(f"{pg_dump} --version did not answer within 30s") from None
    try:
        return parse_client_version(result.stdout)
    except ValueError as exc:
        raise ToolNotFoundError(f"{pg_dump}: {exc}") from None


# Jobs start together; one probe of each pg_dump's version serves them all. A thread lock,
# not an asyncio one: it is taken on worker threads, and works under any event loop.
_probe_lock = threading.Lock()


def client_version(pg_dump: Path) -> str:
    try:
        status = pg_dump.stat()
    except OSError as exc:
        raise ToolNotFoundError(f"{pg_dump}: cannot run: {exc.strerror or exc}") from None
    with _probe_lock:
        return _client_version(pg_dump, status.st_mtime_ns, status.st_size)


def installed_clients() -> tuple[ClientBinary, ...]:
    """Every pg_dump in /usr/lib/postgresql/*/bin, else the one on PATH."""
    paths = [Path(p) for p in sorted(glob.glob(CLIENT_GLOB)) if os.access(p, os.X_OK)]
    if not paths:
        on_path = shutil.which("pg_dump")
        paths = [Path(on_path)] if on_path else []
    return tuple(ClientBinary(path, client_version(path)) for path in paths)


async def client_for(backup: BackupConfig, server_version_num: int) -> ClientBinary:
    """The pg_dump to use against this server: `pg_dump_path`, else the best installed one."""
    configured = getattr(backup, "pg_dump_path", None)  # a PostgresBackup's own key
    if configured:
        path = Path(configured)
        if not os.access(path, os.X_OK):
            raise ToolNotFoundError(f"pg_dump_path {path} is not an executable file")
        version = await in_thread(client_version, path)
        return choose_client([ClientBinary(path, version)], server_version_num)
    clients = await in_thread(installed_clients)
    if not clients:
        raise ToolNotFoundError(
            "pg_dump not found (looked in /usr/lib/postgresql/*/bin and PATH); install "
            "postgresql-client or set pg_dump_path"
        )
    return choose_client(clients, server_version_num)


def newest_client() -> ClientBinary:
    """The newest installed PostgreSQL client (its psql and pg_restore read dumps of every
    older version)."""
    clients = installed_clients()
    if not clients:
        raise ToolNotFoundError(
            "no PostgreSQL client found (looked in /usr/lib/postgresql/*/bin and PATH); "
            "install postgresql-client"
        )
    return max(clients, key=lambda client: client.major)


def find_pg_restore() -> Path:
    """The newest installed pg_restore (it reads dumps of every older version)."""
    clients = sorted(installed_clients(), key=lambda client: client.major, reverse=True)
    for client in clients:
        candidate = client.sibling("pg_restore")
        if candidate.exists():
            return candidate
    on_path = shutil.which("pg_restore")
    if on_path:
        return Path(on_path)
    raise ToolNotFoundError("pg_restore not found; it is needed to check custom-format dumps")


def read_through_argv(pg_restore: Path, *, to_stdout: bool = False) -> list[str]:
    """pg_restore reading a custom-format dump from stdin to the end, restoring nothing:
    the SQL it makes goes to /dev/null, or to stdout for someone to count."""
    return [str(pg_restore), "--file=-" if to_stdout else "--file=/dev/null"]
