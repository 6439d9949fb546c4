"""`db-backup demo`: a whole backup story on a throwaway local PostgreSQL (and MariaDB, when
its server binaries are installed).

Start private servers, seed databases of different sizes (one with an awkward name), write a
config for them, let the CLI run the real concurrent backup, restore dumps into new
databases and compare every table with the original, print where everything is, clean up.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rich.console import Console

from db_backup.errors import DemoError, ToolNotFoundError
from db_backup.mariadbcluster import MariaDBError, ThrowawayMariaDB, find_mariadb_program
from db_backup.model import JobStatus, RunReport
from db_backup.pgcluster import ThrowawayCluster
from db_backup.units import format_bytes

PASSWORD_VARIABLE = "DB_BACKUP_DEMO_PASSWORD"  # noqa: S105 - a variable name, not a secret
MARIADB_PASSWORD_VARIABLE = "DB_BACKUP_DEMO_MARIADB_PASSWORD"  # noqa: S105 - a name too
RESTORE_SOURCE = "shop"
MARIADB_SOURCE = "shop-mariadb"  # the backup; its database is `shop`
MARIADB_SHOP = """
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(200),
                        created_at DATETIME(6)) ENGINE=InnoDB;
INSERT INTO customers SELECT seq, CONCAT('Customer ', seq), CONCAT('c', seq, '@example.com'),
                             '2026-01-01' + INTERVAL seq * 7 MINUTE FROM seq_1_to_20000;
CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT, total DECIMAL(10,2),
                     status ENUM('new','paid','shipped','returned'), items JSON) ENGINE=InnoDB;
INSERT INTO orders SELECT seq, 1 + seq % 20000, (seq * 7919 % 50000) / 100, 1 + seq % 4,
                          JSON_OBJECT('sku', MD5(seq), 'quantity', 1 + seq % 5)
                   FROM seq_1_to_100000;
"""

# name → SQL that fills it. Sizes differ so the live bars finish at different times.
SAMPLE_DATABASES: dict[str, str] = {
    "shop": """
        CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text,
                                created_at timestamptz NOT NULL);
        INSERT INTO customers (name, email, created_at)
            SELECT 'Customer ' || g, 'customer' || g || '@example.com',
                   timestamptz '2026-01-01' + g * interval '7 minutes'
            FROM generate_series(1, 20000) g;
        CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers,
                             total numeric(10,2), status text, placed_at timestamptz,
                             items jsonb);
        INSERT INTO orders (customer_id, total, status, placed_at, items)
            SELECT 1 + g % 20000, (g * 7919 % 50000) / 100.0,
                   (ARRAY['new','paid','shipped','returned'])[1 + g % 4],
                   timestamptz '2026-01-01' + g * interval '13 seconds',
                   jsonb_build_object('sku', md5(g::text), 'quantity', 1 + g % 5)
            FROM generate_series(1, 150000) g;
    """,
    "analytics": """
        CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz, kind text,
                             session char(32), payload jsonb);
        INSERT INTO events (at, kind, session, payload)
            SELECT timestamptz '2026-06-01' + g * interval '1 second',
                   (ARRAY['view','click','buy','leave'])[1 + g % 4], md5(g::text),
                   jsonb_build_object('path', '/item/' || (g % 977), 'ms', g % 3000,
                                      'ref', md5((g % 101)::text))
            FROM generate_series(1, 450000) g;
    """,
    "crm": """
        CREATE TABLE contacts (id serial PRIMARY KEY, name text, phone text, notes text);
        INSERT INTO contacts (name, phone, notes)
            SELECT 'Contact ' || g, '+1-555-' || lpad(g::text, 4, '0'), repeat('note ', g % 20)
            FROM generate_series(1, 5000) g;
    """,
    "café & co": """
        CREATE TABLE "Menu Items" ("Name" text PRIMARY KEY, "Price €" numeric(6,2));
        INSERT INTO "Menu Items" VALUES ('Espresso', 2.20), ('Crème brûlée', 6.50),
                                        ('Tea "Earl Grey"', 3.10);
    """,
}

_USER_TABLES = """
    SELECT format('%I.%I', n.nspname, c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    ORDER BY 1
"""


@dataclass(frozen=True)
class Fingerprint:
    """A database's content in comparable form: tables, sequences and large objects."""

    tables: dict[str, tuple[int, str]]  # name → (rows, md5 of all rows in a stable order)
    sequences: dict[str, tuple[int | None, bool]]  # name → (last_value, is_called)
    large_objects: dict[int, str]  # oid → md5 of its bytes


def fingerprint(conninfo: dict[str, Any]) -> Fingerprint:
    """Read what a restore must reproduce, to compare a restored copy with its source."""
    import psycopg

    with psycopg.connect(**conninfo) as conn:
        tables = {}
        for (table,) in conn.execute(_USER_TABLES).fetchall():
            row = conn.execute(
                # The name comes quoted from format('%I') above.
                "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '')"  # noqa: S608
                f" FROM {table} t"
            ).fetchone()
            assert row is not None
            tables[table] = (row[0], row[1])
        sequences = {}
        for (sequence,) in conn.execute(
            "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences ORDER BY 1"
        ).fetchall():
            state = conn.execute(f"SELECT last_value, is_called FROM {sequence}").fetchone()  # noqa: S608
            assert state is not None
            sequences[sequence] = (state[0], state[1])
        large_objects = dict(
            conn.execute(
                "SELECT oid::bigint, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1"
            ).fetchall()
        )
    return Fingerprint(tables, sequences, large_objects)


def restore_plain_dump(cluster: ThrowawayCluster, dump: Path, database: str) -> None:
    """Create `database` and feed the gzipped SQL dump to psql, streaming."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(**cluster.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    env = {**os.environ, "PGPASSWORD": cluster.password}
    argv = [
        str(cluster.client_bin("psql")),
        "--no-psqlrc",
        "--quiet",
        "--set=ON_ERROR_STOP=1",
        f"--host={cluster.host}",
        f"--port={cluster.port}",
        f"--username={cluster.superuser}",
        f"--dbname={database}",
    ]
    psql = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    stdin, stderr = psql.stdin, psql.stderr
    assert stdin is not None
    assert stderr is not None
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(stderr.read()))
    drain.start()
    try:
        with gzip.open(dump, "rb") as source:
            shutil.copyfileobj(source, stdin, 1024 * 1024)
        stdin.close()
    except BrokenPipeError:
        pass
    code = psql.wait()
    drain.join()
    if code != 0:
        message = b"".join(errors).decode("utf-8", "replace").strip()
        raise DemoError(f"psql restore of {dump} failed (exit {code}): {message[-500:]}")


class DemoSite:
    """The demo's world: server, databases, config and backup folder; a context manager."""

    def __init__(self, *, keep: bool = False, console: Console | None = None) -> None:
        self.keep = keep
        self.console = console or Console()
        self.cluster = ThrowawayCluster()
        self.mariadb: ThrowawayMariaDB | None = None  # when its binaries are installed
        self.workdir = Path(tempfile.mkdtemp(prefix="db-backup-demo-"))
        self.config_path = self.workdir / "backup.yml"
        self.backup_dir = self.workdir / "backups"
        self._saved_passwords: dict[str, str | None] = {}

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        say = self.console.print
        say(f"[bold]1.[/bold] Starting a throwaway PostgreSQL from {self.cluster.bindir} ...")
        try:
            self.cluster.start()
        except subprocess.CalledProcessError as exc:
            raise DemoError(f"could not start PostgreSQL: {(exc.stderr or '').strip()}") from None
        say(
            f"   listening on {self.cluster.host}:{self.cluster.port}"
            + (
                " (server runs as an unprivileged user, since we are root)"
                if os.geteuid() == 0
                else ""
            )
        )
        self._start_mariadb()
        say(f"[bold]2.[/bold] Creating {len(SAMPLE_DATABASES)} sample databases ...")
        self._seed()
        if self.mariadb is not None:
            self.mariadb.sql(f"CREATE DATABASE shop; USE shop; {MARIADB_SHOP}")
            say("   'shop' on MariaDB: customers and orders")
        self._write_config()
        say(f"[bold]3.[/bold] Wrote {self.config_path}; running the backup:\n")
        # The config names the passwords by variable, as a real one should.
        passwords = {PASSWORD_VARIABLE: self.cluster.password}
        if self.mariadb is not None:
            passwords[MARIADB_PASSWORD_VARIABLE] = self.mariadb.password
        for variable, password in passwords.items():
            self._saved_passwords[variable] = os.environ.get(variable)
            os.environ[variable] = password

    def _start_mariadb(self) -> None:
        try:
            find_mariadb_program("mariadbd")
        except ToolNotFoundError:
            self.console.print(
                "   (no MariaDB server binaries: the MariaDB part is left out; install "
                "mariadb-server and mariadb-client to see it)"
            )
            return
        self.console.print("   and a throwaway MariaDB ...")
        self.mariadb = ThrowawayMariaDB()
        try:
            self.mariadb.start()
        except MariaDBError as exc:
            raise DemoError(f"could not start MariaDB: {exc}") from None
        self.console.print(f"   listening on {self.mariadb.host}:{self.mariadb.port}")

    def _seed(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(**self.cluster.conninfo(), autocommit=True) as conn:
            for name in SAMPLE_DATABASES:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        for name, script in SAMPLE_DATABASES.items():
            with psycopg.connect(**self.cluster.conninfo(name)) as conn:
                conn.execute(script.encode())
                size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            assert size is not None
            self.console.print(f"   {name!r}: {format_bytes(size[0])}")

    def _write_config(self) -> None:
        lines = [
            "# Written by `db-backup demo`.",
            "concurrency: 3",
            "defaults:",
            f"  host: {self.cluster.host}",
            f"  port: {self.cluster.port}",
            f"  username: {self.cluster.superuser}",
            f"  password: ${{{PASSWORD_VARIABLE}}}",
            "  max_per_host: 3",
            f"  storage: {{path: {self.backup_dir}, prefix: demo}}",
            "  compression: {algorithm: gzip, level: 6}",
            "backups:",
            "  - name: shop",
            "    database: shop",
            "    globals: true",
            "  - name: analytics",
            "    database: analytics",
            "    format: custom",
            "  - name: all",
            '    database: "*"',
            "    exclude: [postgres, shop, analytics]",
        ]
        if self.mariadb is not None:
            lines += [
                f"  - name: {MARIADB_SOURCE}",
                "    type: mariadb",
                f"    host: {self.mariadb.host}",
                f"    port: {self.mariadb.port}",
                f"    username: {self.mariadb.superuser}",
                f"    password: ${{{MARIADB_PASSWORD_VARIABLE}}}",
                "    database: shop",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.config_path.chmod(0o600)

    def restore_and_check(self, report: RunReport) -> None:
        """Restore the shop dump into a new database and compare every table with the source."""
        say = self.console.print
        result = next((r for r in report.results if r.job.name == RESTORE_SOURCE and r.file), None)
        if result is None or result.status is not JobStatus.SUCCEEDED or result.file is None:
            raise DemoError(f"the {RESTORE_SOURCE!r} backup did not succeed; nothing to restore")
        restored = f"{RESTORE_SOURCE}_restored"
        dump = Path(result.file)
        say(f"\n[bold]4.[/bold] Restoring {dump.name} into a new database {restored!r} ...")
        restore_plain_dump(self.cluster, dump, restored)
        original = fingerprint(self.cluster.conninfo(RESTORE_SOURCE))
        copy = fingerprint(self.cluster.conninfo(restored))
        for table, (rows, digest) in original.tables.items():
            same = copy.tables.get(table) == (rows, digest)
            mark = "[green]identical[/green]" if same else "[red]DIFFERENT[/red]"
            say(f"   {table}: {rows} rows, md5 {digest[:12]}… {mark}")
        say(
            f"   {len(original.sequences)} sequences: "
            + (
                "[green]identical[/green]"
                if original.sequences == copy.sequences
                else "[red]DIFFERENT[/red]"
            )
        )
        if original != copy:
            raise DemoError(f"restored {restored!r} differs from {RESTORE_SOURCE!r}")
        if self.mariadb is not None:
            self._restore_and_check_mariadb(report)
        say("\n[bold]5.[/bold] Where everything is:")
        say(f"   config:  {self.config_path}")
        say(f"   backups: {self.backup_dir}")
        for path in sorted(self.backup_dir.iterdir()):
            say(f"     {path.name}  ({format_bytes(path.stat().st_size)})")
        say(f"   server:  {self.cluster.host}:{self.cluster.port}, log {self.cluster.logfile}")

    def _restore_and_check_mariadb(self, report: RunReport) -> None:
        """Restore the MariaDB dump into a new database with the mariadb client; compare
        every table's rows and checksum with the source's."""
        assert self.mariadb is not None
        result = next((r for r in report.results if r.job.name == MARIADB_SOURCE), None)
        if result is None or result.status is not JobStatus.SUCCEEDED or result.file is None:
            raise DemoError(f"the {MARIADB_SOURCE!r} backup did not succeed; nothing to restore")
        dump = Path(result.file)
        self.console.print(f"   and {dump.name} into a new MariaDB database 'shop_restored' ...")
        self.mariadb.sql("CREATE DATABASE shop_restored")
        with gzip.open(dump, "rb") as source:
            script = source.read().decode()  # the demo's dump is a few MB
        try:
            self.mariadb.sql(script, database="shop_restored")
        except MariaDBError as exc:
            raise DemoError(f"mariadb restore of {dump} failed: {exc}") from None
        for table in ("customers", "orders"):
            check = f"SELECT COUNT(*) FROM {table}; CHECKSUM TABLE {table} EXTENDED;"  # noqa: S608
            original = self.mariadb.sql(check, database="shop").split()
            copy = self.mariadb.sql(check, database="shop_restored").split()
            same = (original[0], original[-1]) == (copy[0], copy[-1])  # rows, checksum
            mark = "[green]identical[/green]" if same else "[red]DIFFERENT[/red]"
            self.console.print(
                f"   MariaDB {table}: {original[0]} rows, checksum {original[-1]} {mark}"
            )
            if not same:
                raise DemoError(f"restored MariaDB table {table!r} differs from the original")

    def close(self) -> None:
        """Stop the server; remove the config and backups unless --keep."""
        for variable, saved in self._saved_passwords.items():
            if saved is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = saved
        self.cluster.stop()
        if self.mariadb is not None:
            self.mariadb.stop()
        if self.keep:
            self.console.print(f"\nKept {self.workdir} (the server was stopped and removed).")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.console.print(
                "\nCleaned up: server stopped, its files, the config and the backups removed "
                "(--keep keeps them)."
            )
