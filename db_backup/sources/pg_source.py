"""`PostgresSource`: PostgreSQL behind the one engine interface (sources/base.py), made of
postgres.py (pure: argv, versions, markers), pg_server.py (connections, discovery, clients)
and pg_admin.py (databases for a restore).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from db_backup.config.schema import BackupConfig
from db_backup.errors import BackupError, RestoreError
from db_backup.manifest import CompressionInfo, Contents, Manifest
from db_backup.model import JobKind, JobSpec
from db_backup.retry import is_transient
from db_backup.sources import pg_admin
from db_backup.sources.base import (
    Completion,
    DatabaseState,
    Dump,
    RestoreProgram,
    Sandbox,
    ServerInfo,
    counting,
)
from db_backup.sources.pg_contents import PlainDumpContents
from db_backup.sources.pg_server import (
    check_connection,
    client_for,
    find_pg_restore,
    list_databases,
    newest_client,
    read_through_argv,
    resolve_password,
)
from db_backup.sources.postgres import (
    PERMANENT_DUMP_MARKERS,
    PLAIN_DUMP_COMPLETE,
    PLAIN_GLOBALS_COMPLETE,
    TRANSIENT_DUMP_MARKERS,
    child_env,
    custom_format_level,
    dump_command,
    expected_bytes,
    restore_argv,
)
from db_backup.threads import in_thread


class PostgresSource:
    """PostgreSQL behind the Source interface (sources/base.py): psycopg for the checks,
    pg_dump / pg_dumpall for the dumps, pg_restore to read custom format through; psql and
    pg_restore to restore."""

    name = "postgres"
    renames_databases = True

    async def probe(self, backup: BackupConfig, database: str) -> ServerInfo:
        return await check_connection(backup, database, resolve_password(backup))

    async def list_databases(self, backup: BackupConfig) -> list[str]:
        return await list_databases(backup, resolve_password(backup))

    async def dump(self, job: JobSpec, server: ServerInfo) -> Dump:
        backup = job.backup
        password = resolve_password(backup)
        client = await client_for(backup, server.version_num)
        command = dump_command(
            client, backup, job.database, globals_only=job.kind is JobKind.GLOBALS
        )
        reader = None
        if not command.plain:  # no end marker in custom format: pg_restore reads it through
            beside = client.sibling("pg_restore")
            pg_restore = beside if beside.exists() else await in_thread(find_pg_restore)
            reader = read_through_argv(pg_restore, to_stdout=not command.globals_only)
        return Dump(
            program=command.tool,
            client=f"{command.tool} {client.version}",
            argv=command.argv,
            env=child_env(os.environ, backup, password),
            format=command.format,
            completion=self.completion(command.format, job.kind),
            compression=None
            if command.plain
            else CompressionInfo(algorithm="pg_dump", level=custom_format_level(backup)),
            expected_bytes=expected_bytes(command, server.database_size),
            reader_argv=reader,
            secret=password,
            # Plain SQL is counted as it streams; custom format from the SQL pg_restore makes.
            counter=None if command.globals_only or not counting() else PlainDumpContents(),
        )

    def maintenance_database(self, backup: BackupConfig) -> str:
        return "postgres" if backup.is_wildcard else backup.database

    def completion(self, format: str, kind: JobKind) -> Completion:
        if format == "custom":
            return Completion(
                "pg_restore read-through",
                passed="custom-format dump read through by pg_restore",
                failed="the custom-format dump is incomplete or unreadable (pg_restore could "
                "not read it through)",
                read_through=True,
            )
        return Completion(
            "end marker",
            passed="dump complete (ends with pg_dump's marker)",
            failed="the SQL dump does not end with pg_dump's completion marker",
            end_marker=PLAIN_GLOBALS_COMPLETE if kind is JobKind.GLOBALS else PLAIN_DUMP_COMPLETE,
        )

    async def reader_argv(self) -> list[str]:
        return read_through_argv(await in_thread(find_pg_restore))

    def is_transient(self, error: BackupError) -> bool:
        return is_transient(
            error, transient=TRANSIENT_DUMP_MARKERS, permanent=PERMANENT_DUMP_MARKERS
        )

    async def database_state(self, server: BackupConfig, database: str) -> DatabaseState:
        return await pg_admin.database_state(server, database)

    async def create_database(self, server: BackupConfig, database: str) -> None:
        await pg_admin.create_database(server, database)

    async def drop_database(self, server: BackupConfig, database: str) -> None:
        await pg_admin.drop_database(server, database)

    async def rename_database(self, server: BackupConfig, old: str, new: str) -> None:
        await pg_admin.rename_database(server, old, new)

    async def restore_program(
        self, server: BackupConfig, database: str, record: Manifest, *, jobs: int, file: Path | None
    ) -> RestoreProgram:
        # The newest client reads dumps of every older version (pg_restore must be at least
        # the version of the pg_dump that wrote a custom-format dump).
        client = await in_thread(newest_client)
        globals_only = record.kind == JobKind.GLOBALS.value
        argv = restore_argv(
            client.bindir,
            server,
            pg_admin.MAINTENANCE_DATABASE if globals_only else database,
            format=record.format,
            globals_only=globals_only,
            jobs=jobs,
            file=file,
        )
        password = resolve_password(server)
        return RestoreProgram(
            program=Path(argv[0]).name,
            argv=argv,
            env=child_env(os.environ, server, password),
            secret=password,
            error_marker="ERROR:" if globals_only else None,
            tolerated=("already exists",) if globals_only else (),
        )

    def restore_needs_file(self, record: Manifest, jobs: int) -> bool:
        return record.format == "custom" and jobs > 1

    async def count_contents(
        self, server: BackupConfig, database: str, expected: Contents
    ) -> Contents:
        return await pg_admin.count_contents(server, database, expected)

    @contextlib.asynccontextmanager
    async def sandbox(self, template: BackupConfig) -> AsyncIterator[Sandbox]:
        """A throwaway cluster from the newest local server binaries (pgcluster.py), as an
        unprivileged user when run as root; stopped and removed on leaving, also when
        cancelled (SIGINT, SIGTERM)."""
        from db_backup.pgcluster import ThrowawayCluster

        # Private: a socket only, no password (the globals a test restores may set any).
        cluster = ThrowawayCluster(private=True)
        try:
            try:
                await in_thread(cluster.start)
            except subprocess.CalledProcessError as exc:
                said = " | ".join(str(exc.stderr or exc.stdout or "").strip().splitlines()[-3:])
                raise RestoreError(
                    f"the throwaway PostgreSQL did not start: {Path(exc.cmd[0]).name} exited "
                    f"with code {exc.returncode}: {said or 'no message'}"
                ) from None
            except OSError as exc:
                raise RestoreError(
                    f"the throwaway PostgreSQL did not start: {exc.strerror or exc}"
                    + (f": {exc.filename}" if exc.filename else "")
                ) from None
            server = msgspec.structs.replace(
                template,
                host=cluster.host,
                port=cluster.port,
                username=cluster.superuser,
                password=None,
                password_file=None,
            )
            info = await check_connection(server, pg_admin.MAINTENANCE_DATABASE, None)
            yield Sandbox(server, f"throwaway PostgreSQL {info.version}", info.version)
        finally:
            await asyncio.shield(in_thread(cluster.stop))
