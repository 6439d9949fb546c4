"""A throwaway MariaDB server: mariadb-install-db + mariadbd on a free loopback port in a
temp dir, removed on stop. For the test suite (and later `verify --restore` and the demo).

`--no-defaults` everywhere: nothing from /etc/mysql or ~/.my.cnf reaches it. As root it runs
with `--user=root` (mariadbd refuses root otherwise); its files are private to its folder.
Password authentication is on for TCP, so clients exercise the same paths as against a real
server; the socket in its folder lets the owner in as root without one (unix_socket).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from db_backup.errors import ToolNotFoundError
from db_backup.pgcluster import free_port

START_SECONDS = 30.0


class MariaDBError(RuntimeError):
    """A step of the throwaway server (or a statement run on it) failed: the tool's message."""


def find_mariadb_program(name: str) -> str:
    """A MariaDB server program (mariadbd, mariadb-install-db) on PATH or in /usr/sbin."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise ToolNotFoundError(
            f"{name} not found; install Debian's mariadb-server package (and mariadb-client)"
        )
    return found


@dataclass
class ThrowawayMariaDB:
    """A private MariaDB server; `start()` it, connect as `superuser` with `password` over
    TCP at host:port, `stop()` removes everything."""

    superuser: str = "root"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    host: str = "127.0.0.1"
    port: int = 0
    parent: Path | None = None  # where the temp dir goes (default: the system's temp dir)
    workdir: Path | None = None
    version: str = ""
    _process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        assert self.workdir is not None, "server not started"
        return self.workdir / "mariadb.sock"

    @property
    def datadir(self) -> Path:
        assert self.workdir is not None, "server not started"
        return self.workdir / "data"

    def start(self) -> Self:
        """Create the data folder, start the server, set the superuser's password; returns
        once it accepts connections."""
        self.workdir = Path(tempfile.mkdtemp(prefix="db-backup-mariadb-", dir=self.parent))
        as_root = ["--user=root"] if os.geteuid() == 0 else []
        self._run(
            find_mariadb_program("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            *as_root,
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            "--skip-name-resolve",
        )
        self.port = free_port()
        self._process = subprocess.Popen(
            [
                find_mariadb_program("mariadbd"),
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                f"--bind-address={self.host}",
                f"--pid-file={self.workdir / 'mariadbd.pid'}",
                f"--log-error={self.workdir / 'error.log'}",
                *as_root,
                "--skip-name-resolve",
                "--skip-log-bin",
                # A throwaway server: durability buys nothing here and costs test time.
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=32M",
                "--max-connections=300",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_until_up()
        self.sql(
            "\n".join(
                f"CREATE OR REPLACE USER '{self.superuser}'@'{host}' IDENTIFIED BY "
                f"'{self.password}'; GRANT ALL ON *.* TO '{self.superuser}'@'{host}' "
                "WITH GRANT OPTION;"
                for host in ("127.0.0.1", "::1", "%")
            )
        )
        self.version = self.sql("SELECT VERSION()").strip()
        return self

    def sql(self, script: str, database: str | None = None) -> str:
        """Run `script` with the mariadb client as root over the socket; its output (tab
        separated, no headers). Raises MariaDBError with the client's message."""
        argv = [
            "mariadb",
            "--no-defaults",
            f"--socket={self.socket}",
            "--user=root",
            "--batch",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
            *([f"--database={database}"] if database else []),
        ]
        return self._run(*argv, input=script)

    def stop(self) -> None:
        """Stop the server (at once: it is throwaway) and remove its files."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            self._process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_until_up(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = (self.workdir / "error.log") if self.workdir else None
                tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
                raise RuntimeError(f"mariadbd exited at start:\n{tail}")
            with contextlib.suppress(MariaDBError):
                self.sql("SELECT 1")
                return
            time.sleep(0.05)  # polling a server that is starting: no event to wait on
        raise RuntimeError(f"mariadbd did not accept connections within {START_SECONDS:g}s")

    def _run(self, *argv: str, input: str | None = None) -> str:
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            said = result.stderr.strip().splitlines()[-1:] or ["no message"]
            raise MariaDBError(
                f"{Path(argv[0]).name} exited with code {result.returncode}: {said[0]}"
            )
        return result.stdout
