"""MySQL / MariaDB databases for a restore, I/O: what a destination holds, creating and
dropping one, counting what a restored one holds. Names are quoted here, once
(backquotes doubled), and passed as parameters wherever SQL allows.
"""

from __future__ import annotations

from db_backup.config.schema import MysqlBackup
from db_backup.errors import ConnectionCheckError, RestoreError
from db_backup.manifest import Contents
from db_backup.sources.base import DatabaseState
from db_backup.sources.my_server import query, resolve_password
from db_backup.threads import in_thread

# Everything a dump may have made in a database: a destination holding any of it is not empty.
_HOLDINGS = """
SELECT (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s)
     + (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = %s)
     + (SELECT COUNT(*) FROM information_schema.events WHERE event_schema = %s)
"""


def quoted(name: str) -> str:
    """An identifier as MySQL reads it: in backquotes, a backquote doubled."""
    return "`" + name.replace("`", "``") + "`"


async def _run(server: MysqlBackup, sql: str, *args: str) -> list[tuple[object, ...]]:
    try:
        return await in_thread(query, server, None, resolve_password(server), sql, *args)
    except ConnectionCheckError as exc:
        raise RestoreError(f"{server.host or server.socket}:{server.port}: {exc}") from None


async def database_state(server: MysqlBackup, database: str) -> DatabaseState:
    """Missing, empty (no table, view, routine or event), or not empty."""
    found = await _run(
        server, "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s",
        database,
    )  # fmt: skip
    if not found[0][0]:
        return DatabaseState.MISSING
    held = await _run(server, _HOLDINGS, database, database, database)
    return DatabaseState.NOT_EMPTY if held[0][0] else DatabaseState.EMPTY


async def create_database(server: MysqlBackup, database: str) -> None:
    await _run(server, f"CREATE DATABASE {quoted(database)} CHARACTER SET utf8mb4")


async def drop_database(server: MysqlBackup, database: str) -> None:
    await _run(server, f"DROP DATABASE IF EXISTS {quoted(database)}")


async def count_contents(server: MysqlBackup, database: str, expected: Contents) -> Contents:
    """Rows of each table of `expected` that the restored database has."""
    present = {
        str(name)
        for (name,) in await _run(
            server,
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            database,
        )
    }
    tables = {}
    for table in sorted(set(expected.tables) & present):
        rows = await _run(
            server,
            f"SELECT COUNT(*) FROM {quoted(database)}.{quoted(table)}",  # noqa: S608
        )
        tables[table] = int(str(rows[0][0]))
    return Contents(tables=tables)
