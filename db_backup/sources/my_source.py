"""`MysqlSource`: MySQL and MariaDB behind the one engine interface (sources/base.py), made of
mysql.py (pure: option file, argv, markers), my_contents.py (pure: rows per table from the
stream), my_server.py (PyMySQL checks, discovery, programs on disk) and my_admin.py
(databases for a restore).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from db_backup.config.schema import BackupConfig, MysqlBackup
from db_backup.errors import BackupError, DumpError, RestoreError
from db_backup.manifest import Contents, Manifest
from db_backup.model import JobKind, JobSpec
from db_backup.process import INHERITED_FILE
from db_backup.redact import remember
from db_backup.retry import is_transient
from db_backup.sources import my_admin
from db_backup.sources.base import (
    Completion,
    DatabaseState,
    Dump,
    RestoreProgram,
    Sandbox,
    ServerInfo,
    counting,
)
from db_backup.sources.my_contents import MysqlDumpContents
from db_backup.sources.my_server import (
    check_connection,
    connect_options,
    find_client_program,
    find_dump_program,
    list_databases,
    program_version,
    query,
    resolve_password,
)
from db_backup.sources.mysql import END_MARKER, client_argv, dump_argv, option_file
from db_backup.threads import in_thread

# What a dump program's last words mean for another attempt (lower case).
TRANSIENT_DUMP_MARKERS = (
    "lost connection to",
    "server has gone away",
    "can't connect to",
    "too many connections",
    "deadlock found",
    "lock wait timeout",
    "server shutdown in progress",
)
PERMANENT_DUMP_MARKERS = ("access denied", "unknown database", "doesn't exist")
# The client environment variable that would carry a password to every child that inherits
# it (and to `ps e`): never passed on.
_PASSWORD_VARIABLES = ("MYSQL_PWD",)


# mariadb-dump (10.11) cannot select a database whose name holds a quote when it dumps its
# events ("Unknown database" at `--events`); without events it can.
QUOTES = frozenset("'\"")


async def _without_events(
    backup: MysqlBackup, database: str, password: str | None, argv: list[str]
) -> None:
    """Leave `--events` out of `argv` for a database whose name holds a quote, if it has no
    events (nothing is lost); if it has some, say why it cannot be dumped whole."""
    rows = await in_thread(
        query,
        backup,
        None,
        password,
        "SELECT COUNT(*) FROM information_schema.events WHERE event_schema = %s",
        database,
    )
    if rows[0][0]:
        raise DumpError(
            f"database {database!r} has {rows[0][0]} event(s), which mariadb-dump cannot dump "
            "from a database whose name holds a quote (a known limit of the tool); rename "
            "the database, or move its events elsewhere",
            stderr_tail="",
        )
    argv.remove("--events")


def _child_env() -> dict[str, str]:
    """Our environment without a password a shared environment may carry."""
    return {k: v for k, v in os.environ.items() if k not in _PASSWORD_VARIABLES}


def _mysql(backup: BackupConfig) -> MysqlBackup:
    assert isinstance(backup, MysqlBackup), f"not a MySQL backup: {backup.name}"
    return backup


class MysqlSource:
    """MySQL / MariaDB behind the Source interface: PyMySQL for the checks, mariadb-dump
    (or mysqldump) for the dumps, the password on an inherited pipe as a client option
    file (never in argv, the environment or on disk)."""

    name = "mysql"
    renames_databases = False  # no RENAME DATABASE: see restore.py

    async def probe(self, backup: BackupConfig, database: str) -> ServerInfo:
        mysql = _mysql(backup)
        return await check_connection(mysql, database or None, resolve_password(mysql))

    async def list_databases(self, backup: BackupConfig) -> list[str]:
        mysql = _mysql(backup)
        return await list_databases(mysql, resolve_password(mysql))

    async def dump(self, job: JobSpec, server: ServerInfo) -> Dump:
        backup = _mysql(job.backup)
        password = resolve_password(backup)
        if job.kind is JobKind.GLOBALS:
            return self._users_dump(backup, password, job.kind)
        program = find_dump_program(backup)
        version = await in_thread(program_version, program)
        option = INHERITED_FILE if password is not None else None
        argv = dump_argv(str(program), backup, job.database, option)
        if set(job.database) & QUOTES:
            await _without_events(backup, job.database, password, argv)
        return Dump(
            program=program.name,
            client=f"{program.name} {version}",
            argv=argv,
            env=_child_env(),
            format="plain",
            completion=self.completion("plain", job.kind),
            compression=None,
            expected_bytes=server.database_size,
            secret=password,
            inherited_file=option_file(password).encode() if password is not None else None,
            counter=MysqlDumpContents() if counting() else None,
        )

    def _users_dump(self, backup: MysqlBackup, password: str | None, kind: JobKind) -> Dump:
        """The server's users, roles and grants, by a child of ours (my_users.py) that asks
        SHOW CREATE USER / SHOW GRANTS, the password on its inherited pipe."""
        import pymysql

        options = connect_options(backup, None, password)
        return Dump(
            program="db-backup users",
            client=f"db-backup users (PyMySQL {pymysql.__version__})",
            argv=[sys.executable, "-I", "-m", "db_backup.sources.my_users", INHERITED_FILE],
            env=_child_env(),
            format="plain",
            completion=self.completion("plain", kind),
            compression=None,
            expected_bytes=None,
            secret=password,
            inherited_file=json.dumps(options).encode(),
        )

    def maintenance_database(self, backup: BackupConfig) -> str:
        return "" if backup.is_wildcard else backup.database  # "": the server alone

    def completion(self, format: str, kind: JobKind) -> Completion:
        return Completion(
            "end marker",
            passed="dump complete (ends with the dump program's completion comment)",
            failed="the SQL dump does not end with the dump program's '-- Dump completed'",
            end_marker=END_MARKER,
        )

    async def reader_argv(self) -> list[str]:
        raise BackupError("MySQL dumps are told complete by their end marker, not read through")

    def is_transient(self, error: BackupError) -> bool:
        return is_transient(
            error, transient=TRANSIENT_DUMP_MARKERS, permanent=PERMANENT_DUMP_MARKERS
        )

    # -- restore: `server` is a backup's connection settings --------------------------------

    async def database_state(self, server: BackupConfig, database: str) -> DatabaseState:
        return await my_admin.database_state(_mysql(server), database)

    async def create_database(self, server: BackupConfig, database: str) -> None:
        await my_admin.create_database(_mysql(server), database)

    async def drop_database(self, server: BackupConfig, database: str) -> None:
        await my_admin.drop_database(_mysql(server), database)

    async def rename_database(self, server: BackupConfig, old: str, new: str) -> None:
        raise RestoreError("MySQL renames no database")  # renames_databases = False

    async def restore_program(
        self, server: BackupConfig, database: str, record: Manifest, *, jobs: int, file: Path | None
    ) -> RestoreProgram:
        mysql = _mysql(server)
        password = resolve_password(mysql)
        program = await in_thread(find_client_program)
        option = INHERITED_FILE if password is not None else None
        globals_only = record.kind == JobKind.GLOBALS.value
        argv = client_argv(str(program), mysql, None if globals_only else database, option)
        if globals_only:  # users the server has already: say so, and go on
            argv.append("--force")
        return RestoreProgram(
            program=program.name,
            argv=argv,
            env=_child_env(),
            secret=password,
            inherited_file=option_file(password).encode() if password is not None else None,
            error_marker="ERROR" if globals_only else None,
            tolerated=("already exists", "Operation CREATE USER failed") if globals_only else (),
        )

    def restore_needs_file(self, record: Manifest, jobs: int) -> bool:
        return False  # SQL from stdin; -j does not apply

    async def count_contents(
        self, server: BackupConfig, database: str, expected: Contents
    ) -> Contents:
        return await my_admin.count_contents(_mysql(server), database, expected)

    @contextlib.asynccontextmanager
    async def sandbox(self, template: BackupConfig) -> AsyncIterator[Sandbox]:
        """A throwaway MariaDB from the local binaries (mariadbcluster.py), removed on
        leaving, also when cancelled. Its globals are not applied: the users and grants of
        a dump would replace the account the test reaches the sandbox through."""
        from db_backup.mariadbcluster import MariaDBError, ThrowawayMariaDB

        server = ThrowawayMariaDB()
        try:
            try:
                await in_thread(server.start)
            except (MariaDBError, BackupError, OSError) as exc:
                raise RestoreError(f"the throwaway MariaDB did not start: {exc}") from None
            remember(server.password)
            sandbox = msgspec.structs.replace(
                _mysql(template),
                host=server.host,
                port=server.port,
                socket=None,
                username=server.superuser,
                password=server.password,
                password_file=None,
            )
            description = f"throwaway MariaDB {server.version}"
            yield Sandbox(sandbox, description, server.version, scratch=True)
        finally:
            await asyncio.shield(in_thread(server.stop))
