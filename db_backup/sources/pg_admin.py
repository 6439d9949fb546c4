"""PostgreSQL databases as a restore sees them: is one there and does it hold anything;
create, drop, rename. Names travel as quoted identifiers (psycopg.sql), never spliced in.

Errors become RestoreError once, here, with the server's message (passwords masked).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from db_backup.config.schema import BackupConfig
from db_backup.errors import ConnectionCheckError, RestoreError
from db_backup.manifest import Contents
from db_backup.sources.base import DatabaseState
from db_backup.sources.pg_server import connect, resolve_password, tidy

if TYPE_CHECKING:
    from psycopg import sql

MAINTENANCE_DATABASE = "postgres"

# What makes a database "not empty" for a restore: anything a dump would bring or clash with.
_HOLDINGS = """
SELECT
  (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%')
  + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
  + (SELECT count(*) FROM pg_namespace
    WHERE nspname NOT IN ('public', 'pg_catalog', 'information_schema')
      AND nspname NOT LIKE 'pg\\_%')
  + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
  + (SELECT count(*) FROM pg_largeobject_metadata)
"""


async def _execute(
    server: BackupConfig,
    database: str,
    statements: Sequence[sql.Composed | sql.SQL | str],
    doing: str,
) -> list[tuple[Any, ...]]:
    """Run `statements` in autocommit on `database`; the last one's rows."""
    import psycopg

    password = resolve_password(server)
    try:
        conn = await connect(server, database, password)
    except ConnectionCheckError as exc:
        raise RestoreError(f"{doing}: cannot connect to {database!r}: {exc}") from None
    try:
        rows: list[tuple[Any, ...]] = []
        async with conn.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
                rows = await cur.fetchall() if cur.description else []
        return rows
    except psycopg.Error as exc:
        raise RestoreError(f"{doing}: {tidy(str(exc), password)}") from None
    finally:
        await conn.close()


async def database_state(server: BackupConfig, database: str) -> DatabaseState:
    """MISSING, EMPTY or NOT_EMPTY (see _HOLDINGS)."""
    from psycopg import sql

    exists = sql.SQL("SELECT 1 FROM pg_database WHERE datname = {}").format(sql.Literal(database))
    found = await _execute(server, MAINTENANCE_DATABASE, [exists], f"looking for {database!r}")
    if not found:
        return DatabaseState.MISSING
    ((holdings,),) = await _execute(server, database, [_HOLDINGS], f"looking into {database!r}")
    return DatabaseState.NOT_EMPTY if holdings else DatabaseState.EMPTY


async def create_database(server: BackupConfig, database: str) -> None:
    """A new, empty database from template0 (template1 may hold local additions that would
    clash with the dump's objects)."""
    from psycopg import sql

    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(database))
    await _execute(server, MAINTENANCE_DATABASE, [statement], f"creating database {database!r}")


async def drop_database(server: BackupConfig, database: str) -> None:
    """Drop it if it exists; sessions connected to it are ended (PostgreSQL 13+: FORCE)."""
    from psycopg import sql

    name = sql.Identifier(database)
    ((version,),) = await _execute(
        server, MAINTENANCE_DATABASE, ["SHOW server_version_num"], "asking the server's version"
    )
    statements: list[sql.Composed | sql.SQL | str]
    if int(version) >= 130000:  # ends the sessions itself, and no new one can slip in
        statements = [sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name)]
    else:
        statements = [
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = {} AND pid <> pg_backend_pid()"
            ).format(sql.Literal(database)),
            sql.SQL("DROP DATABASE IF EXISTS {}").format(name),
        ]
    await _execute(server, MAINTENANCE_DATABASE, statements, f"dropping database {database!r}")


async def rename_database(server: BackupConfig, old: str, new: str) -> None:
    from psycopg import sql

    statement = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
        sql.Identifier(old), sql.Identifier(new)
    )
    await _execute(server, MAINTENANCE_DATABASE, [statement], f"renaming {old!r} to {new!r}")


# schema.name as pg_dump writes it, each part bare or quoted: safe to place in a query as is.
_QUALIFIED_NAME = re.compile(
    r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)\.(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
)


async def count_contents(server: BackupConfig, database: str, expected: Contents) -> Contents:
    """Rows of each table `expected` names, each sequence's value, the large objects: one
    connection, one query per table (exact counts: a restore test must not estimate)."""
    import psycopg

    password = resolve_password(server)
    try:
        conn = await connect(server, database, password)
    except ConnectionCheckError as exc:
        raise RestoreError(f"checking {database!r}: cannot connect: {exc}") from None
    tables: dict[str, int] = {}
    sequences: dict[str, tuple[int, bool]] = {}
    try:
        async with conn.cursor() as cur:
            for name in expected.tables:
                # ONLY: pg_dump's COPY of a table with inheritance children holds its own
                # rows, not theirs (each child is dumped, and counted, under its own name).
                row = await _one(cur, name, "SELECT count(*) FROM ONLY {}")
                if row is not None:
                    tables[name] = int(row[0])
            for name in expected.sequences:
                row = await _one(cur, name, "SELECT last_value, is_called FROM {}")
                if row is not None:
                    sequences[name] = (int(row[0]), bool(row[1]))
            await cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
            (large_objects,) = await cur.fetchone() or (0,)
    except psycopg.Error as exc:
        raise RestoreError(f"checking {database!r}: {tidy(str(exc), password)}") from None
    finally:
        await conn.close()
    return Contents(tables=tables, sequences=sequences, large_objects=int(large_objects))


async def _one(cur: Any, name: str, query: str) -> tuple[Any, ...] | None:
    """The row `query` gives for relation `name`; None when there is no such relation."""
    import psycopg

    if not _QUALIFIED_NAME.fullmatch(name):
        return None  # not a name pg_dump writes: report it missing rather than run it
    try:
        await cur.execute(query.format(name))
    except psycopg.errors.UndefinedTable:
        return None  # autocommit: nothing to roll back
    row: tuple[Any, ...] | None = await cur.fetchone()
    return row
