"""A throwaway PostgreSQL cluster: initdb + pg_ctl on a free loopback port in a temp dir.

Used by `db-backup demo`, the test suite and the benchmark. PostgreSQL refuses to run as root,
so when we are root the server runs as an unprivileged user (``nobody`` by default) and the
temp dir is handed to that user. Password authentication (scram-sha-256) is on, so clients
exercise the same code paths as against a real server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from db_backup.errors import ToolNotFoundError

_SERVER_USER_WHEN_ROOT = os.environ.get("DB_BACKUP_PG_RUN_AS", "nobody")


def find_server_bindir() -> Path:
    """The newest PostgreSQL server bin dir (holding initdb), or $DB_BACKUP_PG_BINDIR."""
    override = os.environ.get("DB_BACKUP_PG_BINDIR")
    if override:
        return Path(override)
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if candidates:

        def major(path: str) -> int:
            match = re.search(r"/postgresql/(\d+)/", path)
            return int(match.group(1)) if match else 0

        return Path(max(candidates, key=major)).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ToolNotFoundError(
        "no PostgreSQL server binaries found (looked for /usr/lib/postgresql/*/bin/initdb and "
        "initdb on PATH); install Debian's postgresql package or set DB_BACKUP_PG_BINDIR"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ThrowawayCluster:
    """A private PostgreSQL server; `start()` it, use `conninfo()`, `stop()` removes everything."""

    bindir: Path = field(default_factory=find_server_bindir)
    superuser: str = "postgres"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    host: str = "127.0.0.1"
    port: int = 0
    parent: Path | None = None  # where the temp dir goes (default: the system's temp dir)
    workdir: Path | None = None
    # Reachable only through a socket in its private folder, without a password: a sandbox
    # for restore tests, where a restored globals backup may change any role's password.
    private: bool = False
    _run_as: pwd.struct_passwd | None = None

    @property
    def datadir(self) -> Path:
        assert self.workdir is not None, "cluster not started"
        return self.workdir / "data"

    @property
    def logfile(self) -> Path:
        assert self.workdir is not None, "cluster not started"
        return self.workdir / "server.log"

    def start(self) -> Self:
        """initdb, configure and start the server; waits until it accepts connections."""
        self.workdir = Path(tempfile.mkdtemp(prefix="db-backup-pg-", dir=self.parent))
        if os.geteuid() == 0:
            self._run_as = pwd.getpwnam(_SERVER_USER_WHEN_ROOT)
            os.chown(self.workdir, self._run_as.pw_uid, self._run_as.pw_gid)
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._run_as:
            os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
        self._server_cmd(
            "initdb",
            "--pgdata",
            str(self.datadir),
            "--username",
            self.superuser,
            "--pwfile",
            str(pwfile),
            "--auth",
            "trust" if self.private else "scram-sha-256",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        pwfile.unlink()
        self.port = free_port()
        if self.private:
            self.host = str(self.workdir)  # libpq: a host that is a path means its socket
        settings = {
            "listen_addresses": "''" if self.private else f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.workdir}'",
            "max_connections": "300",
            # A throwaway server: durability buys nothing here and costs test time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        if self.private:
            # A sandbox for restore tests: a restore in one transaction writes no WAL for
            # the tables it creates (wal_level minimal), and nothing vacuums meanwhile.
            settings |= {
                "wal_level": "minimal",
                "max_wal_senders": "0",
                "max_wal_size": "4GB",
                "autovacuum": "off",
            }
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.resume()
        return self

    def pause(self, mode: str = "fast") -> None:
        """Stop the server but keep its files (`mode`: fast, or immediate to simulate a crash)."""
        self._server_cmd("pg_ctl", "--pgdata", str(self.datadir), "-m", mode, "-w", "stop")

    def resume(self) -> None:
        """Start the (initialised) server again on the same port; returns once it accepts."""
        self._server_cmd(
            "pg_ctl", "--pgdata", str(self.datadir), "--log", str(self.logfile), "-w", "start"
        )

    def stop(self) -> None:
        """Stop the server (immediately; it is throwaway) and remove its files."""
        if self.workdir is None:
            return
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._server_cmd(
                    "pg_ctl", "--pgdata", str(self.datadir), "-m", "immediate", "-w", "stop"
                )
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def conninfo(self, dbname: str = "postgres", **extra: Any) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect()."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.superuser,
            "password": self.password,
            "dbname": dbname,
            **extra,
        }

    def client_bin(self, name: str) -> Path:
        """A client binary (psql, pg_dump, pg_restore) of the server's own version."""
        return self.bindir / name

    def _server_cmd(self, tool: str, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if self._run_as:
            kwargs = {
                "user": self._run_as.pw_uid,
                "group": self._run_as.pw_gid,
                "extra_groups": [],
                "cwd": self.workdir,
            }
        result = subprocess.run(
            [str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
            **kwargs,
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
