"""PostgreSQL as a dump source, the pure part: argv, environment and client-version choice.

Commands are data: lists of arguments, never shell strings. The database travels as a quoted
libpq conninfo (`dbname='…'`), so names with spaces, quotes, `=`, unicode or a leading `-` reach
the server unchanged. The password travels only in the child's environment (PGPASSWORD).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from db_backup.config.schema import BackupConfig
from db_backup.errors import ClientVersionError
from db_backup.stages import TAIL_BYTES

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class ClientBinary:
    """An installed pg_dump and the version it reports."""

    pg_dump: Path
    version: str  # "15.18"

    @property
    def major(self) -> int:
        return major_of(self.version)

    @property
    def bindir(self) -> Path:
        return self.pg_dump.parent

    def sibling(self, tool: str) -> Path:
        """pg_dumpall / pg_restore / psql from the same installation."""
        return self.bindir / tool


def major_of(version: str) -> int:
    """Comparable major version: "15.18" → 1500, "9.6.24" → 906 (majors were X.Y before 10)."""
    parts = [int(p) for p in version.split(".")[:2]]
    first = parts[0]
    if first >= 10:
        return first * 100
    return first * 100 + (parts[1] if len(parts) > 1 else 0)


def server_major(version_num: int) -> int:
    """`server_version_num` (150018, 90624) → the same scale as major_of (1500, 906)."""
    return version_num // 10000 * 100 if version_num >= 100000 else version_num // 100


def display_major(major: int) -> str:
    return str(major // 100) if major >= 1000 else f"{major // 100}.{major % 100}"


def parse_client_version(output: str) -> str:
    """`pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → "15.18"."""
    match = _VERSION.search(output)
    if not match:
        raise ValueError(f"not a PostgreSQL client version: {output.strip()[:80]!r}")
    return match.group(1) + (f".{match.group(2)}" if match.group(2) else "")


def choose_client(candidates: Sequence[ClientBinary], server_version_num: int) -> ClientBinary:
    """The newest installed pg_dump whose major version is at least the server's.

    pg_dump refuses servers newer than itself, and a newer pg_dump dumps older servers fine.
    """
    needed = server_major(server_version_num)
    usable = [client for client in candidates if client.major >= needed]
    if usable:
        return max(usable, key=lambda client: client.major)
    found = ", ".join(f"{c.pg_dump} ({c.version})" for c in candidates) or "none"
    raise ClientVersionError(
        f"the server runs PostgreSQL {display_major(needed)} but no pg_dump of version "
        f"{display_major(needed)} or newer is installed (found: {found}); install "
        f"postgresql-client-{display_major(needed)} or set pg_dump_path"
    )


def conninfo_quote(value: str) -> str:
    """A libpq conninfo value in single quotes, with `\\` and `'` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _connection_options(backup: BackupConfig) -> list[str]:
    options = []
    if backup.host:
        options.append(f"--host={backup.host}")
    options.append(f"--port={backup.port}")
    if backup.username:
        options.append(f"--username={backup.username}")
    # Never prompt: an unattended run must fail, not hang, when no password is available.
    options.append("--no-password")
    return options


def dump_argv(client: ClientBinary, backup: BackupConfig, database: str) -> list[str]:
    """pg_dump writing one database to stdout in the configured format."""
    argv = [str(client.pg_dump), *_connection_options(backup)]
    if backup.format == "custom":
        argv.append("--format=custom")
        level = custom_format_level(backup)
        if level is not None:  # None: pg_dump's own default
            argv.append(f"--compress={level}")
    else:
        argv.append("--format=plain")
    argv.append(f"--dbname=dbname={conninfo_quote(database)}")
    return argv


def custom_format_level(backup: BackupConfig) -> int | None:
    """pg_dump's --compress for custom format: 0 for `none`, an explicit level, else None."""
    compression = backup.compression
    return 0 if compression.algorithm == "none" else compression.level


def globals_argv(client: ClientBinary, backup: BackupConfig, database: str) -> list[str]:
    """pg_dumpall writing the server's roles and tablespaces to stdout."""
    return [
        str(client.sibling("pg_dumpall")),
        *_connection_options(backup),
        "--globals-only",
        f"--database={database}",
    ]


@dataclass(frozen=True)
class DumpCommand:
    """What to run for one job, and what its output will be."""

    tool: str  # "pg_dump" or "pg_dumpall", for messages and the manifest
    argv: list[str]
    plain: bool  # plain SQL (we compress it) vs custom format (pg_dump compresses it)
    globals_only: bool

    @property
    def format(self) -> str:
        return "plain" if self.plain else "custom"

    def is_complete(self, tail: bytes) -> bool:
        """Does output ending in `tail` look finished? Custom format carries no marker."""
        return not self.plain or plain_dump_is_complete(tail, globals_only=self.globals_only)


def restore_argv(
    bindir: Path,
    server: BackupConfig,
    database: str,
    *,
    format: str,
    globals_only: bool = False,
    jobs: int = 1,
    file: Path | None = None,
) -> list[str]:
    """The program that reads a dump into `database`, from stdin unless `file` is given.

    Plain SQL: psql in one transaction that stops at the first error, so a failed restore
    commits nothing (`--single-transaction` applies only to `--file`, hence `--file=-`).
    Globals: psql carrying on past errors (a role the server already has is no fault; the
    caller judges each error line). Custom format: pg_restore, stopping at the first error,
    in one transaction unless it runs `jobs` > 1 workers on a staged `file`.
    """
    connection = [*_connection_options(server), f"--dbname=dbname={conninfo_quote(database)}"]
    if format == "custom":
        argv = [str(bindir / "pg_restore"), *connection, "--exit-on-error"]
        if jobs > 1 and file is not None:
            return [*argv, f"--jobs={jobs}", str(file)]
        return [*argv, "--single-transaction", *([str(file)] if file else [])]
    argv = [str(bindir / "psql"), "--no-psqlrc", "--quiet", "--output=/dev/null", *connection]
    if not globals_only:
        argv += ["--set=ON_ERROR_STOP=1", "--single-transaction"]
    return [*argv, f"--file={file or '-'}"]


def expected_bytes(command: DumpCommand, database_size: int | None) -> int | None:
    """Raw output to expect from a dump: plain SQL of a database is about as large as the
    database on disk; pg_dump's own compression makes that size say nothing about custom
    format's, and globals are small."""
    return database_size if command.plain and not command.globals_only else None


def dump_command(
    client: ClientBinary, backup: BackupConfig, database: str, *, globals_only: bool
) -> DumpCommand:
    """pg_dumpall for a server's globals, else pg_dump of `database` in the backup's format."""
    if globals_only:
        return DumpCommand("pg_dumpall", globals_argv(client, backup, database), True, True)
    plain = backup.format == "plain"
    return DumpCommand("pg_dump", dump_argv(client, backup, database), plain, False)


def child_env(
    base: Mapping[str, str], backup: BackupConfig, password: str | None
) -> dict[str, str]:
    """The dump child's environment: ours, plus the password and a connect timeout.

    Without a configured password, an inherited PGPASSWORD, PGPASSFILE or ~/.pgpass applies,
    exactly as for a pg_dump run by hand.
    """
    env = dict(base)
    if password is not None:
        env["PGPASSWORD"] = password
    env["PGCONNECT_TIMEOUT"] = str(max(1, round(backup.connect_timeout)))
    return env


# The last lines pg_dump writes to a plain dump that ran to completion.
PLAIN_DUMP_COMPLETE = b"-- PostgreSQL database dump complete"
PLAIN_GLOBALS_COMPLETE = b"-- PostgreSQL database cluster dump complete"


def plain_dump_is_complete(tail: bytes, *, globals_only: bool = False) -> bool:
    """Does the end of a plain dump carry pg_dump's (or pg_dumpall's) completion marker?"""
    marker = PLAIN_GLOBALS_COMPLETE if globals_only else PLAIN_DUMP_COMPLETE
    return marker in tail[-TAIL_BYTES:]


# What pg_dump (libpq) prints when the server or the network, not the request, is at fault.
TRANSIENT_DUMP_MARKERS = (
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "connection reset",
    "connection refused",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "ssl syscall error",
)
PERMANENT_DUMP_MARKERS = (
    "password authentication failed",
    "does not exist",
    "permission denied",
)
