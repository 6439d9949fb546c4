"""db-backup against shell pipelines, measured in one run on this machine.

    nox -s bench -- [--size-mb 600] [--pgbench-scale 40] [--pairs 3] [--many-size 1.0]
                    [--two-targets-mb 1000] [--mariadb-size-mb 400]
                    [--only two-targets|restore|encryption|mariadb]

Starts its own throwaway PostgreSQL (data on /dev/shm when there is room), creates a large
database of realistic rows, a pgbench database, 20 databases of 20-50 MB and 200 small ones,
then measures alternating A/B pairs (A then B, then B then A, ...) and reports the median of
the per-pair time ratios. Machines here are shared and noisy: single timings mean little.
Results go to benchmarks/results/ (JSON and Markdown) and into the README between the
`bench:start` / `bench:end` markers.

The MariaDB rows (when its server binaries are installed) start a throwaway MariaDB and time
db-backup against `mariadb-dump > /dev/null` and `mariadb-dump | gzip -6`, and counting rows
against not counting, as for PostgreSQL.

The encryption rows time the default with `encryption:` (age) against the default, one job
on the large database and four copies of it at once.

The two-targets case streams one dump to a local folder and an S3 bucket at once (SeaweedFS,
started here as in the test suite) at two sizes, to show the runner's peak memory does not grow
with the dump, and times it against the same dump to the folder alone.

Shell baselines are real pipelines of the same programs a cron line would use (pg_dump, gzip,
pigz, zstd), connected with pipes by this script rather than by a shell.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from db_backup.mariadbcluster import ThrowawayMariaDB
from db_backup.pgcluster import ThrowawayCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.seaweed import SeaweedServer

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
BYTES_PER_ROW = 176  # plain-dump bytes per row of REALISTIC, measured

REALISTIC = """
CREATE TABLE events AS
SELECT g AS id,
       timestamptz '2025-01-01' + g * interval '17 seconds' AS created_at,
       round((random() * 10000)::numeric, 2) AS amount,
       md5(g::text) AS digest,
       (ARRAY['pending','paid','shipped','refunded','cancelled'])[1 + (g % 5)] AS status,
       'customer-' || (g % 50000) || '@example.com' AS email,
       jsonb_build_object('ip', '10.' || (g % 256) || '.' || (g % 199) || '.' || (g % 97),
                          'agent', (ARRAY['firefox','chrome','safari','curl'])[1 + g % 4],
                          'items', g % 7, 'score', round(random()::numeric, 4)) AS meta
FROM generate_series(1, {rows}) g;
"""


@dataclass
class Sample:
    seconds: float
    stored_bytes: int
    raw_bytes: int | None = None
    peak_rss_bytes: int | None = None


@dataclass
class Row:
    case: str
    contender: str
    baseline: str
    ratio: float  # median of per-pair time ratios, contender / baseline
    target: float | None
    contender_seconds: float
    baseline_seconds: float
    contender_mb_per_s: float | None
    stored_mb: float | None
    peak_rss_mb: float | None
    ratios: list[float] = field(default_factory=list)

    @property
    def met(self) -> str:
        if self.target is None:
            return ""
        return "yes" if self.ratio <= self.target else "NO"


class Bench:
    def __init__(self, cluster: ThrowawayCluster, out: Path, pairs: int) -> None:
        self.cluster = cluster
        self.out = out
        self.pairs = pairs
        self.env = {**os.environ, "PGPASSWORD": cluster.password}
        self.raw_size: dict[str, int] = {}
        self.s3: SeaweedServer | None = None  # set when a case writes to S3

    def s3_target(self, prefix: str) -> dict[str, Any]:
        assert self.s3 is not None
        return {
            "kind": "s3",
            "bucket": self.s3.bucket,
            "prefix": prefix,
            "endpoint_url": self.s3.endpoint,
            "path_style": True,
        }

    # -- the contenders -------------------------------------------------------------------------

    def pg_dump_argv(self, database: str, *extra: str) -> list[str]:
        c = self.cluster
        return [
            str(c.client_bin("pg_dump")),
            f"--host={c.host}",
            f"--port={c.port}",
            f"--username={c.superuser}",
            *extra,
            database,
        ]

    def pipeline(self, database: str, compressor: list[str] | None, suffix: str) -> Sample:
        """pg_dump [| compressor] > file, timed; like the cron line a user would write."""
        target = self.out / f"shell-{database}{suffix}"
        started = time.perf_counter()
        with target.open("wb") as sink:
            if compressor is None:
                subprocess.run(self.pg_dump_argv(database), stdout=sink, env=self.env, check=True)
            else:
                dump = subprocess.Popen(
                    self.pg_dump_argv(database), stdout=subprocess.PIPE, env=self.env
                )
                assert dump.stdout is not None
                squeeze = subprocess.run(compressor, stdin=dump.stdout, stdout=sink, check=False)
                dump.stdout.close()
                if dump.wait() != 0 or squeeze.returncode != 0:
                    raise RuntimeError(f"pipeline for {database} failed")
        seconds = time.perf_counter() - started
        size = target.stat().st_size
        target.unlink()
        return Sample(seconds, size)

    def raw(self, database: str) -> Sample:
        started = time.perf_counter()
        subprocess.run(
            self.pg_dump_argv(database), stdout=subprocess.DEVNULL, env=self.env, check=True
        )
        return Sample(time.perf_counter() - started, 0)

    def custom_format(self, database: str) -> Sample:
        target = self.out / f"shell-{database}.dump"
        started = time.perf_counter()
        subprocess.run(
            self.pg_dump_argv(database, "--format=custom", "--compress=6", f"--file={target}"),
            env=self.env,
            check=True,
        )
        seconds = time.perf_counter() - started
        size = target.stat().st_size
        target.unlink()
        return Sample(seconds, size)

    def write_config(
        self,
        databases: list[str],
        compression: dict[str, Any],
        storage: Path,
        jobs: int = 1,
        s3_prefix: str | None = None,
        **extra: Any,
    ) -> Path:
        """A config backing up `databases` to `storage` (and the bucket, with `s3_prefix`)."""
        config = self.out / "bench.yml"
        c = self.cluster
        targets: Any = {"path": str(storage)}
        if s3_prefix is not None:
            targets = [targets, self.s3_target(s3_prefix)]
        document = {
            "concurrency": jobs,
            "defaults": {
                "host": c.host,
                "port": c.port,
                "username": c.superuser,
                "storage": targets,
                "compression": compression,
                **extra,
            },
            "backups": [{"name": f"b{i}", "database": db} for i, db in enumerate(databases)],
        }
        config.write_text(json.dumps(document))
        config.chmod(0o600)
        return config

    def run_cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        """The real CLI; its stdout. Fails the benchmark when it fails."""
        full_env = {**self.env, **(self.s3.environment() if self.s3 else {}), **(env or {})}
        result = subprocess.run(
            [sys.executable, "-m", "db_backup", *args],
            capture_output=True,
            text=True,
            env=full_env,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"db-backup {args[0]} failed: {result.stderr[-2000:]}")
        return result.stdout

    def db_backup(
        self,
        databases: list[str],
        compression: dict[str, Any],
        jobs: int = 1,
        s3_prefix: str | None = None,
        env: dict[str, str] | None = None,
        **extra: Any,
    ) -> Sample:
        """The real CLI, timed from the outside (start-up and connection checks included).
        With `s3_prefix`, every dump also goes to the bucket, under that prefix."""
        storage = self.out / "db-backup"
        config = self.write_config(databases, compression, storage, jobs, s3_prefix, **extra)
        started = time.perf_counter()
        stdout = self.run_cli("backup", "-c", str(config), "--json", env=env)
        seconds = time.perf_counter() - started
        report = json.loads(stdout)
        shutil.rmtree(storage)
        if s3_prefix is not None:
            assert self.s3 is not None
            client = self.s3.client()
            for key in self.s3.objects(f"{s3_prefix}/"):
                client.delete_object(Bucket=self.s3.bucket, Key=key)
        return Sample(
            seconds,
            sum(job["stored_bytes"] for job in report["jobs"]),
            raw_bytes=sum(job["raw_bytes"] for job in report["jobs"]),
            peak_rss_bytes=report["peak_rss_bytes"],
        )

    def gunzip_psql(self, dump: Path) -> Sample:
        """`gunzip -c dump | psql` into a fresh database, as a restore by hand goes."""
        c = self.cluster
        with psycopg.connect(**c.conninfo(), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bench_restore")
            conn.execute("CREATE DATABASE bench_restore TEMPLATE template0")
        started = time.perf_counter()
        gunzip = subprocess.Popen(["gunzip", "-c", str(dump)], stdout=subprocess.PIPE)
        psql = subprocess.run(
            [
                str(c.client_bin("psql")),
                "--no-psqlrc",
                "--quiet",
                "--output=/dev/null",
                "--set=ON_ERROR_STOP=1",
                f"--host={c.host}",
                f"--port={c.port}",
                f"--username={c.superuser}",
                "--dbname=bench_restore",
            ],
            stdin=gunzip.stdout,
            env=self.env,
            check=False,
        )
        assert gunzip.stdout is not None
        gunzip.stdout.close()
        if gunzip.wait() != 0 or psql.returncode != 0:
            raise RuntimeError("gunzip | psql failed")
        seconds = time.perf_counter() - started
        with psycopg.connect(**c.conninfo(), autocommit=True) as conn:
            conn.execute("DROP DATABASE bench_restore")
        return Sample(seconds, 0)

    # -- measuring -----------------------------------------------------------------------------

    def pair(
        self,
        case: str,
        contender: tuple[str, Callable[[], Sample]],
        baseline: tuple[str, Callable[[], Sample]],
        target: float | None,
        raw_bytes: int | None,
    ) -> Row:
        """Alternate A/B `pairs` times; the median of the per-pair ratios is the result."""
        ratios, a_samples, b_samples = [], [], []
        for index in range(self.pairs):
            if index % 2 == 0:
                a, b = contender[1](), baseline[1]()
            else:
                b, a = baseline[1](), contender[1]()
            a_samples.append(a)
            b_samples.append(b)
            ratios.append(a.seconds / b.seconds)
        a_median = statistics.median(s.seconds for s in a_samples)
        rss = [s.peak_rss_bytes for s in a_samples if s.peak_rss_bytes]
        row = Row(
            case=case,
            contender=contender[0],
            baseline=baseline[0],
            ratio=round(statistics.median(ratios), 3),
            target=target,
            contender_seconds=round(a_median, 2),
            baseline_seconds=round(statistics.median(s.seconds for s in b_samples), 2),
            contender_mb_per_s=round(raw_bytes / a_median / 1e6, 1) if raw_bytes else None,
            stored_mb=round(a_samples[0].stored_bytes / 1e6, 1)
            if a_samples[0].stored_bytes
            else None,
            peak_rss_mb=round(max(rss) / 2**20, 1) if rss else None,
            ratios=[round(r, 3) for r in ratios],
        )
        print(
            f"  {case:34s} {row.contender:24s} vs {row.baseline:22s} ratio {row.ratio:5.3f}"
            f" {row.ratios} target {target} {row.met}",
            flush=True,
        )
        return row


def create_databases(
    cluster: ThrowawayCluster, args: argparse.Namespace, *, only_realistic: bool = False
) -> dict[str, Any]:
    """realistic, pgbench, 20 DBs of 20-50 MB, 200 small ones. Returns names and raw sizes."""
    conninfo = cluster.conninfo()

    def create(name: str, script: str = "", template: str | None = None) -> None:
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(statement)
        if script:
            with psycopg.connect(**cluster.conninfo(name), autocommit=True) as conn:
                conn.execute(script.encode())
                conn.execute("VACUUM ANALYZE")

    rows = int(args.size_mb * 1e6 / BYTES_PER_ROW)
    print(f"creating 'realistic' ({rows} rows, ~{args.size_mb} MB of SQL) ...", flush=True)
    create("realistic", REALISTIC.format(rows=rows))
    if only_realistic:
        return {}
    print(f"creating 'pgbench' (scale {args.pgbench_scale}) ...", flush=True)
    create("pgbench")
    subprocess.run(
        [
            str(cluster.client_bin("pgbench")),
            "-i",
            "-q",
            "-s",
            str(args.pgbench_scale),
            f"--host={cluster.host}",
            f"--port={cluster.port}",
            f"--username={cluster.superuser}",
            "pgbench",
        ],
        env={**os.environ, "PGPASSWORD": cluster.password},
        check=True,
        capture_output=True,
    )
    many = []
    print("creating 20 databases of 20-50 MB and 200 small ones ...", flush=True)
    for size in (20, 30, 40, 50):
        template = f"tpl{size}"
        create(template, REALISTIC.format(rows=int(size * args.many_size * 1e6 / BYTES_PER_ROW)))
        for copy in range(5):
            name = f"many{size}_{copy}"
            create(name, template=template)
            many.append(name)
    create("tpl_small", REALISTIC.format(rows=500))
    small = [f"small{i:03d}" for i in range(200)]
    for name in small:
        create(name, template="tpl_small")
    return {"many": many, "small": small}


def run(args: argparse.Namespace) -> dict[str, Any]:
    memory = Path("/dev/shm")
    parent = memory if memory.is_dir() and shutil.disk_usage(memory).free > 8 << 30 else None
    with (
        ThrowawayCluster(parent=parent) as cluster,
        tempfile.TemporaryDirectory(dir=parent) as scratch,
    ):
        bench = Bench(cluster, Path(scratch), args.pairs)
        result: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "settings": vars(args),
            "rows": [],
        }
        if args.only in ("all", "two-targets"):
            with SeaweedServer(parent=parent) as bench.s3:
                result["two_targets"] = two_targets(bench, cluster, args)
        if args.only == "two-targets":
            return result
        if args.only == "mariadb":
            measured = mariadb_rows(bench, args, parent)
            return result | {"rows": [asdict(row) | {"met": row.met} for row in measured]}
        made = create_databases(
            cluster, args, only_realistic=args.only in ("restore", "encryption")
        )
        if args.only == "encryption":
            measured = encryption_rows(bench, cluster)
            return result | {"rows": [asdict(row) | {"met": row.met} for row in measured]}
        rows: list[Row] = (
            restore_rows(bench, parent)
            + encryption_rows(bench, cluster)
            + mariadb_rows(bench, args, parent)
        )
        if args.only == "restore":
            return result | {"rows": [asdict(row) | {"met": row.met} for row in rows]}

        for database, label, default_target in (
            ("realistic", "realistic rows", 1.5),
            ("pgbench", "pgbench rows", 1.1),
        ):
            raw_bytes = bench.db_backup([database], {"algorithm": "none"}).raw_bytes
            print(f"{label}: {raw_bytes / 1e6:.0f} MB of SQL", flush=True)

            def contender(compression: dict[str, Any], db: str = database) -> Callable[[], Sample]:
                return lambda: bench.db_backup([db], compression)

            def shell(
                command: list[str] | None, suffix: str, db: str = database
            ) -> Callable[[], Sample]:
                return lambda: bench.pipeline(db, command, suffix)

            raw = ("pg_dump > /dev/null", lambda db=database: bench.raw(db))
            gzip6 = ("pg_dump | gzip -6", shell(["gzip", "-6"], ".sql.gz"))
            if database == "realistic":
                rows.append(
                    bench.pair(
                        f"large DB, {label}: gzip-6 1 thread",
                        ("db-backup gzip-6 t1", contender({"level": 6, "threads": 1})),
                        gzip6,
                        0.95,
                        raw_bytes,
                    )
                )
                rows.append(
                    bench.pair(
                        f"large DB, {label}: gzip-6 parallel",
                        ("db-backup gzip-6 parallel", contender({"level": 6})),
                        gzip6,
                        0.65,
                        raw_bytes,
                    )
                )
                rows.append(
                    bench.pair(
                        f"large DB, {label}: zstd-3",
                        ("db-backup zstd-3", contender({"algorithm": "zstd", "level": 3})),
                        ("pg_dump | zstd -3", shell(["zstd", "-3", "-q"], ".sql.zst")),
                        1.05,
                        raw_bytes,
                    )
                )
                rows.append(
                    bench.pair(
                        f"large DB, {label}: pigz -6 (for reference)",
                        ("pg_dump | pigz -6", shell(["pigz", "-6"], ".sql.gz")),
                        gzip6,
                        None,
                        raw_bytes,
                    )
                )
                rows.append(
                    bench.pair(
                        f"large DB, {label}: pg_dump -Fc -Z6 (reference)",
                        ("pg_dump -Fc -Z6", lambda: bench.custom_format("realistic")),
                        gzip6,
                        None,
                        raw_bytes,
                    )
                )
            rows.append(
                bench.pair(
                    f"large DB, {label}: the default",
                    ("db-backup default", contender({})),
                    raw,
                    default_target,
                    raw_bytes,
                )
            )
            rows.append(
                bench.pair(
                    f"large DB, {label}: gzip-6 (size reference)",
                    ("pg_dump | gzip -6", shell(["gzip", "-6"], ".sql.gz")),
                    raw,
                    None,
                    raw_bytes,
                )
            )

        many = made["many"]
        many_raw = bench.db_backup(many, {"algorithm": "none"}, jobs=2).raw_bytes

        def sequential() -> Sample:
            samples = [bench.pipeline(db, ["gzip", "-6"], ".sql.gz") for db in many]
            return Sample(sum(s.seconds for s in samples), sum(s.stored_bytes for s in samples))

        def xargs_p2() -> Sample:
            started = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                samples = list(
                    pool.map(lambda db: bench.pipeline(db, ["gzip", "-6"], ".sql.gz"), many)
                )
            return Sample(time.perf_counter() - started, sum(s.stored_bytes for s in samples))

        gzip6_many: dict[str, Any] = {"level": 6}
        rows.append(
            bench.pair(
                "20 DBs, gzip-6: -j 2 vs xargs -P2",
                ("db-backup -j 2", lambda: bench.db_backup(many, gzip6_many, jobs=2)),
                ("xargs -P2 pg_dump|gzip -6", xargs_p2),
                1.0,
                many_raw,
            )
        )
        rows.append(
            bench.pair(
                "20 DBs, gzip-6: -j 2 vs sequential",
                ("db-backup -j 2", lambda: bench.db_backup(many, gzip6_many, jobs=2)),
                ("for db: pg_dump|gzip -6", sequential),
                0.70,
                many_raw,
            )
        )
        rows.append(
            bench.pair(
                "20 DBs, gzip-6: -j 4 vs xargs -P2",
                ("db-backup -j 4", lambda: bench.db_backup(many, gzip6_many, jobs=4)),
                ("xargs -P2 pg_dump|gzip -6", xargs_p2),
                None,
                many_raw,
            )
        )
        rows.append(
            bench.pair(
                "20 DBs, the default: -j 2 vs xargs -P2 gzip-6",
                ("db-backup default -j 2", lambda: bench.db_backup(many, {}, jobs=2)),
                ("xargs -P2 pg_dump|gzip -6", xargs_p2),
                None,
                many_raw,
            )
        )

        small = made["small"]
        load = bench.db_backup(small, {}, jobs=8, max_per_host=4)
        print(
            f"  200 small DBs, -j 8, max_per_host 4: {load.seconds:.1f}s, "
            f"peak RSS {load.peak_rss_bytes / 2**20:.1f} MiB",
            flush=True,
        )
        one_small = bench.db_backup(small[:1], {})

        help_times = []
        for _ in range(11):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "db_backup", "--help"], capture_output=True, check=True
            )
            help_times.append(time.perf_counter() - started)

        return result | {
            "rows": [asdict(row) | {"met": row.met} for row in rows],
            "load_200_small": {
                "seconds": round(load.seconds, 2),
                "peak_rss_mb": round((load.peak_rss_bytes or 0) / 2**20, 1),
                "one_small_db_peak_rss_mb": round((one_small.peak_rss_bytes or 0) / 2**20, 1),
            },
            "help_seconds_median": round(statistics.median(help_times), 3),
        }


def restore_rows(bench: Bench, parent: Path | None) -> list[Row]:
    """What proving a backup costs: counting rows while dumping (the default, against the same
    run with counting off), and `verify --restore` (a throwaway server of its own included)
    against `gunzip | psql` into a fresh database of the benchmark's server."""
    raw_bytes = bench.db_backup(["realistic"], {"algorithm": "none"}).raw_bytes
    counting_off = {"DB_BACKUP_COUNT_CONTENTS": "0"}
    rows = [
        bench.pair(
            "large DB, realistic rows: counting rows",
            ("db-backup default", lambda: bench.db_backup(["realistic"], {})),
            (
                "db-backup default, not counting",
                lambda: bench.db_backup(["realistic"], {}, env=counting_off),
            ),
            1.03,
            raw_bytes,
        )
    ]
    kept = bench.out / "kept"
    config = bench.write_config(["realistic"], {}, kept)
    bench.run_cli("backup", "-c", str(config))
    (dump,) = kept.glob("*.sql.gz")
    # The sandbox's files where the benchmark server keeps its own (/dev/shm): a fair race.
    sandbox_env = {"TMPDIR": str(parent)} if parent else {}

    def verify_restore() -> Sample:
        started = time.perf_counter()
        bench.run_cli("verify", "-c", str(config), "--restore", env=sandbox_env)
        return Sample(time.perf_counter() - started, 0)

    rows.append(
        bench.pair(
            "large DB, realistic rows: verify --restore",
            ("db-backup verify --restore", verify_restore),
            ("gunzip | psql, fresh database", lambda: bench.gunzip_psql(dump)),
            1.3,
            raw_bytes,
        )
    )
    shutil.rmtree(kept)
    return rows


MARIADB_ROW_BYTES = 150  # dump bytes per row of MARIADB_REALISTIC, measured
MARIADB_REALISTIC = """
CREATE TABLE events (id BIGINT PRIMARY KEY, created_at DATETIME(6), amount DECIMAL(12,2),
                     digest CHAR(32), status VARCHAR(12), meta JSON) ENGINE=InnoDB;
INSERT INTO events
SELECT seq, '2025-01-01' + INTERVAL seq * 17 SECOND, ROUND(RAND() * 10000, 2), MD5(seq),
       ELT(1 + seq % 5, 'pending', 'paid', 'shipped', 'refunded', 'cancelled'),
       JSON_OBJECT('ip', CONCAT('10.', seq % 256, '.', seq % 199, '.', seq % 97),
                   'agent', ELT(1 + seq % 4, 'firefox', 'chrome', 'safari', 'curl'),
                   'items', seq % 7, 'score', ROUND(RAND(), 4))
FROM seq_1_to_{rows};
"""


def encryption_rows(bench: Bench, cluster: ThrowawayCluster) -> list[Row]:
    """What encrypting costs: the default with `encryption:` (age, one X25519 recipient)
    against the default, one job on the large database, and four such jobs at once (four
    copies of it); and the runner's peak memory with and without."""
    import pyrage

    recipient = str(pyrage.x25519.Identity.generate().to_public())
    age = {"recipients": [recipient]}  # `encryption:` in defaults
    copies = [f"realistic_copy{i}" for i in range(4)]
    with psycopg.connect(**cluster.conninfo(), autocommit=True) as conn:
        for name in copies:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE realistic").format(sql.Identifier(name))
            )
    raw_bytes = bench.db_backup(["realistic"], {"algorithm": "none"}).raw_bytes
    rows = [
        bench.pair(
            "large DB, realistic rows: encrypted (age), one job",
            ("db-backup default + age", lambda: bench.db_backup(["realistic"], {}, encryption=age)),
            ("db-backup default", lambda: bench.db_backup(["realistic"], {})),
            1.10,
            raw_bytes,
        ),
        bench.pair(
            "4 large DBs at once: encrypted (age), -j 4",
            ("db-backup + age -j 4", lambda: bench.db_backup(copies, {}, 4, encryption=age)),
            ("db-backup default -j 4", lambda: bench.db_backup(copies, {}, 4)),
            1.10,
            raw_bytes * 4 if raw_bytes else None,
        ),
    ]
    plain = bench.db_backup(["realistic"], {})
    encrypted = bench.db_backup(["realistic"], {}, encryption=age)
    print(
        f"  peak RSS, one job: {(plain.peak_rss_bytes or 0) / 2**20:.1f} MiB plain, "
        f"{(encrypted.peak_rss_bytes or 0) / 2**20:.1f} MiB encrypted (the age child aside)",
        flush=True,
    )
    return rows


def mariadb_rows(bench: Bench, args: argparse.Namespace, parent: Path | None) -> list[Row]:
    """A large MariaDB database of realistic rows: the default against `mariadb-dump >
    /dev/null`, parallel gzip -6 against `mariadb-dump | gzip -6`, counting rows against the
    same run without. Left out when MariaDB's server binaries are not installed."""
    if shutil.which("mariadbd") is None and not Path("/usr/sbin/mariadbd").exists():
        print("mariadb: no mariadbd; the MariaDB rows are left out", flush=True)
        return []
    with ThrowawayMariaDB(parent=parent) as server:
        rows_wanted = args.mariadb_size_mb * 1_000_000 // MARIADB_ROW_BYTES
        server.sql(f"CREATE DATABASE realistic; USE realistic; "
                   f"{MARIADB_REALISTIC.format(rows=rows_wanted)}")  # fmt: skip
        env = {**bench.env, "MYSQL_PWD": server.password}  # the shell baselines' way
        dump = [
            "mariadb-dump", f"--host={server.host}", f"--port={server.port}",
            f"--user={server.superuser}", "--single-transaction", "--quick", "--routines",
            "--triggers", "--events", "--hex-blob", "--default-character-set=utf8mb4",
            "realistic",
        ]  # fmt: skip
        storage = bench.out / "db-backup-mariadb"
        config = bench.out / "mariadb.yml"

        def db_backup(
            compression: dict[str, Any], extra_env: dict[str, str] | None = None
        ) -> Sample:
            document = {
                "backups": [
                    {
                        "name": "realistic",
                        "type": "mariadb",
                        "host": server.host,
                        "port": server.port,
                        "username": server.superuser,
                        "password": "${BENCH_MARIADB_PASSWORD}",
                        "database": "realistic",
                        "storage": {"path": str(storage)},
                        "compression": compression,
                    }
                ]
            }
            config.write_text(json.dumps(document))
            config.chmod(0o600)
            started = time.perf_counter()
            stdout = bench.run_cli(
                "backup", "-c", str(config), "--json",
                env={"BENCH_MARIADB_PASSWORD": server.password, **(extra_env or {})},
            )  # fmt: skip
            seconds = time.perf_counter() - started
            report = json.loads(stdout)
            shutil.rmtree(storage)
            return Sample(
                seconds,
                sum(job["stored_bytes"] for job in report["jobs"]),
                raw_bytes=sum(job["raw_bytes"] for job in report["jobs"]),
                peak_rss_bytes=report["peak_rss_bytes"],
            )

        def shell(compressor: list[str] | None) -> Sample:
            target = bench.out / "shell-mariadb.sql"
            started = time.perf_counter()
            with target.open("wb") as sink:
                if compressor is None:
                    subprocess.run(dump, stdout=subprocess.DEVNULL, env=env, check=True)
                else:
                    producer = subprocess.Popen(dump, stdout=subprocess.PIPE, env=env)
                    assert producer.stdout is not None
                    squeeze = subprocess.run(compressor, stdin=producer.stdout, stdout=sink)
                    producer.stdout.close()
                    if producer.wait() != 0 or squeeze.returncode != 0:
                        raise RuntimeError("mariadb-dump pipeline failed")
            seconds = time.perf_counter() - started
            size = target.stat().st_size
            target.unlink()
            return Sample(seconds, size)

        raw_bytes = db_backup({"algorithm": "none"}).raw_bytes
        print(f"mariadb realistic rows: {(raw_bytes or 0) / 1e6:.0f} MB of SQL", flush=True)
        label = "large MariaDB DB, realistic rows"
        return [
            bench.pair(
                f"{label}: the default",
                ("db-backup default", lambda: db_backup({})),
                ("mariadb-dump > /dev/null", lambda: shell(None)),
                1.5,
                raw_bytes,
            ),
            bench.pair(
                f"{label}: gzip-6 parallel",
                ("db-backup gzip-6 parallel", lambda: db_backup({"level": 6})),
                ("mariadb-dump | gzip -6", lambda: shell(["gzip", "-6"])),
                0.65,
                raw_bytes,
            ),
            bench.pair(
                f"{label}: counting rows",
                ("db-backup default", lambda: db_backup({})),
                (
                    "db-backup default, not counting",
                    lambda: db_backup({}, {"DB_BACKUP_COUNT_CONTENTS": "0"}),
                ),
                1.03,
                raw_bytes,
            ),
        ]


def two_targets(
    bench: Bench, cluster: ThrowawayCluster, args: argparse.Namespace
) -> dict[str, Any]:
    """One dump to a folder and a bucket at once, at two sizes: peak RSS of the runner, and
    time against the same dump to the folder alone (uncompressed, so every byte of the dump
    goes through both targets)."""
    sizes = {"quarter": args.two_targets_mb // 4, "full": args.two_targets_mb}
    for label, mb in sizes.items():
        rows = int(mb * 1e6 / BYTES_PER_ROW)
        print(f"creating 'two_{label}' ({rows} rows, ~{mb} MB of SQL) ...", flush=True)
        with psycopg.connect(**cluster.conninfo(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE two_{label}")
        with psycopg.connect(**cluster.conninfo(f"two_{label}"), autocommit=True) as conn:
            conn.execute(REALISTIC.format(rows=rows).encode())
    cases = {}
    plain: dict[str, Any] = {"algorithm": "none"}
    for label in sizes:
        database = f"two_{label}"
        row = bench.pair(
            f"{database}: folder + S3 vs folder",
            ("db-backup local+S3", lambda db=database: bench.db_backup([db], plain, s3_prefix="b")),
            ("db-backup local", lambda db=database: bench.db_backup([db], plain)),
            None,
            None,
        )
        alone = bench.db_backup([database], plain)
        both = bench.db_backup([database], plain, s3_prefix="b")
        cases[label] = {
            "raw_mb": round(both.raw_bytes / 1e6, 1),
            "peak_rss_mb_two_targets": row.peak_rss_mb,
            "peak_rss_mb_one_target": round((alone.peak_rss_bytes or 0) / 2**20, 1),
            "peak_rss_mb_two_targets_again": round((both.peak_rss_bytes or 0) / 2**20, 1),
            "time_ratio_vs_folder_alone": row.ratio,
            "ratios": row.ratios,
        }
        print(f"  {database}: {cases[label]}", flush=True)
    return cases


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    pg = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {pg}, "
        f"{platform.system()} {platform.release()}"
    )


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Measured {result['when']} on {result['machine']}; medians of "
        f"{result['settings']['pairs']} alternating pairs.",
    ]
    if result["rows"]:
        lines += [
            "",
            "| case | contender | baseline | time ratio | target | met | contender s "
            "| baseline s | contender MB/s (raw) | stored MB | peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    for row in result["rows"]:
        lines.append(
            f"| {cell(row['case'])} | {cell(row['contender'])} | {cell(row['baseline'])} "
            f"| {row['ratio']:.3f} "
            f"| {'≤ ' + str(row['target']) if row['target'] else ''} | {row['met']} "
            f"| {row['contender_seconds']} | {row['baseline_seconds']} "
            f"| {row['contender_mb_per_s'] or ''} | {row['stored_mb'] or ''} "
            f"| {row['peak_rss_mb'] or ''} |"
        )
    two = result.get("two_targets")
    if two is None:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "One dump to a folder and an S3 bucket (SeaweedFS on loopback) at once, uncompressed, "
        "default part size 8 MiB and 4 parts in flight (medians of alternating pairs):",
        "",
        "| dump | peak RSS, folder + S3 (MiB) | peak RSS, folder alone (MiB) "
        "| time, folder + S3 / folder alone |",
        "|---|---|---|---|",
        *(
            f"| {case['raw_mb']} MB | {case['peak_rss_mb_two_targets']}, "
            f"{case['peak_rss_mb_two_targets_again']} | {case['peak_rss_mb_one_target']} "
            f"| {case['time_ratio_vs_folder_alone']:.3f} |"
            for case in two.values()
        ),
    ]
    if "load_200_small" not in result:
        return "\n".join(lines) + "\n"
    load = result["load_200_small"]
    lines += [
        "",
        f"200 small databases, `-j 8`, `max_per_host: 4`: {load['seconds']} s, peak RSS "
        f"{load['peak_rss_mb']} MiB (one small database: {load['one_small_db_peak_rss_mb']} MiB). "
        f"`db-backup --help`: {result['help_seconds_median']} s (median of 11).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=600, help="plain-dump size of 'realistic'")
    parser.add_argument("--pgbench-scale", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--many-size", type=float, default=1.0, help="scale of the 20 DBs")
    parser.add_argument("--two-targets-mb", type=int, default=1000, help="the larger dump")
    parser.add_argument("--mariadb-size-mb", type=int, default=400, help="MariaDB dump size")
    parser.add_argument(
        "--only",
        choices=["all", "two-targets", "restore", "encryption", "mariadb"],
        default="all",
    )
    args = parser.parse_args()
    for tool in ("gzip", "pigz", "zstd"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is needed (apt-get install gzip pigz zstd)")
    result = run(args)
    table = markdown(result)
    save_results(result, table)
    if args.only != "all":
        return  # a partial run: the README and latest.md keep the last full one
    (RESULTS / "latest.md").write_text(table)
    into_readme("bench", table)


def save_results(result: dict[str, Any], table: str, prefix: str = "") -> None:
    """The run as `<prefix><time>.json` and `.md` under benchmarks/results/; the table printed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = result["when"].replace(":", "").replace("-", "")[:15]
    (RESULTS / f"{prefix}{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{prefix}{stamp}.md").write_text(table)
    print("\n" + table)


def into_readme(marker: str, table: str) -> None:
    """Replace what the README holds between `<!-- marker:start -->` and `<!-- marker:end -->`."""
    readme = REPO / "README.md"
    text = readme.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        readme.write_text(head + start + "\n" + table + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    main()
