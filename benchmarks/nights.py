"""Ten nights of backups of one database: a restic repository against `.sql.gz` files.

    nox -s nights -- [--size-mb 530] [--nights 10] [--patterns append,random]

Starts its own throwaway PostgreSQL, creates a database of realistic rows (the benchmark's
`events` table), and backs it up once a night for ten nights, changing it between nights in
one of two ways:

- append: about 1 % new rows, and updates among the most recent rows (the common OLTP shape);
- random: 1 % of all rows updated, uniformly at random.

Each night runs db-backup twice — to a folder with the default compression (today's
`.sql.gz`) and to a restic repository — in alternating order, timing each, and records the
`.sql.gz` file's size and the repository's size on disk. For the append pattern it also pipes
`pg_dump | gzip --rsyncable | restic backup --stdin` into a third repository, to show what a
pre-compressed stream does to deduplication. Finally it measures the memory of `restic dump`
on a multi-GB file. Results go to benchmarks/results/nights-*.{json,md} and into the README
between the `nights:start` / `nights:end` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from db_backup.pgcluster import ThrowawayCluster

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from bench import BYTES_PER_ROW, REALISTIC, into_readme, machine, save_results  # noqa: E402

PASSWORD = "bench-restic-password"  # noqa: S105 (a throwaway repository)
ONE_PERCENT_ROWS = """
INSERT INTO events
SELECT g, timestamptz '2025-01-01' + g * interval '17 seconds',
       round((random() * 10000)::numeric, 2), md5(g::text), 'pending',
       'customer-' || (g % 50000) || '@example.com',
       jsonb_build_object('ip', '10.' || (g % 256) || '.' || (g % 199) || '.' || (g % 97),
                          'agent', 'firefox', 'items', g % 7, 'score', round(random()::numeric, 4))
FROM generate_series({first}, {last}) g;
"""
CHANGES = {
    # 1 % new rows; a fifth of the newest 5 % change state (paid, shipped: the OLTP tail).
    "append": [
        ONE_PERCENT_ROWS,
        "UPDATE events SET status = 'shipped', amount = amount + 1 "
        "WHERE id > {newest} - {rows} / 20 AND id % 5 = {night} % 5;",
    ],
    # 1 % of all rows, anywhere.
    "random": ["UPDATE events SET amount = amount + 1 WHERE random() < 0.01;"],
}


def du(path: Path) -> int:
    """Bytes on disk under `path` (as `du -sb`)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Nights:
    def __init__(self, cluster: ThrowawayCluster, out: Path) -> None:
        self.cluster = cluster
        self.out = out
        self.env = {
            **os.environ,
            "NO_COLOR": "1",
            "BENCH_PG_PASSWORD": cluster.password,
            "RESTIC_PW": PASSWORD,
            "DB_BACKUP_STATE_DIR": str(out / "state"),
        }

    def config(self, name: str, storage: dict[str, Any]) -> Path:
        c = self.cluster
        document = {
            "backups": [
                {
                    "name": name,
                    "database": "nightly",
                    "host": c.host,
                    "port": c.port,
                    "username": c.superuser,
                    "password": "${BENCH_PG_PASSWORD}",
                    "storage": storage,
                }
            ]
        }
        path = self.out / f"{name}.yml"
        path.write_text(json.dumps(document))
        path.chmod(0o600)
        return path

    def backup(self, config: Path) -> tuple[float, dict[str, Any]]:
        """One run: its wall time, and its job with the run's peak RSS added."""
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "db_backup", "backup", "-c", str(config), "--json"],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"backup failed: {done.stderr[-2000:]}")
        report = json.loads(done.stdout)
        [job] = report["jobs"]
        return seconds, {**job, "peak_rss_bytes": report["peak_rss_bytes"]}

    def rsyncable(self, repository: Path) -> float:
        """pg_dump | gzip --rsyncable | restic backup --stdin, as a shell line would."""
        c = self.cluster
        dump = [
            str(c.client_bin("pg_dump")), f"--host={c.host}", f"--port={c.port}",
            f"--username={c.superuser}", "nightly",
        ]  # fmt: skip
        env = {**self.env, "PGPASSWORD": c.password, "RESTIC_PASSWORD": PASSWORD}
        started = time.perf_counter()
        producer = subprocess.Popen(dump, stdout=subprocess.PIPE, env=env)
        squeeze = subprocess.Popen(
            ["gzip", "-6", "--rsyncable"], stdin=producer.stdout, stdout=subprocess.PIPE
        )
        assert producer.stdout is not None
        producer.stdout.close()
        stored = subprocess.run(
            ["restic", "-r", str(repository), "backup", "--stdin", "--stdin-filename",
             "nightly.sql.gz", "--quiet"],
            stdin=squeeze.stdout, env=env, capture_output=True, check=False,
        )  # fmt: skip
        if producer.wait() or squeeze.wait() or stored.returncode:
            raise RuntimeError(f"rsyncable pipeline failed: {stored.stderr[-500:]!r}")
        return time.perf_counter() - started

    def sql(self, database: str, statement: str) -> None:
        with psycopg.connect(**self.cluster.conninfo(database), autocommit=True) as conn:
            conn.execute(statement.encode())

    def fresh_copy(self) -> int:
        """`nightly`, a new copy of `realistic`; returns its row count."""
        self.sql("postgres", "DROP DATABASE IF EXISTS nightly")
        self.sql("postgres", "CREATE DATABASE nightly TEMPLATE realistic")
        with psycopg.connect(**self.cluster.conninfo("nightly")) as conn:
            row = conn.execute("SELECT count(*), max(id) FROM events").fetchone()
        assert row is not None
        return int(row[0])

    def change(self, pattern: str, night: int, rows: int) -> None:
        with psycopg.connect(**self.cluster.conninfo("nightly")) as conn:
            newest = conn.execute("SELECT max(id) FROM events").fetchone()
        assert newest is not None
        hundredth = rows // 100
        for template in CHANGES[pattern]:
            self.sql(
                "nightly",
                template.format(
                    first=newest[0] + 1, last=newest[0] + hundredth, newest=newest[0],
                    rows=rows, night=night,
                ),
            )  # fmt: skip
        self.sql("nightly", "VACUUM ANALYZE events")  # as autovacuum would, by the next night


def run_pattern(nights: Nights, pattern: str, count: int) -> dict[str, Any]:
    rows = nights.fresh_copy()
    folder = nights.out / f"files-{pattern}"
    repository = nights.out / f"restic-{pattern}"
    subprocess.run(
        ["restic", "-r", str(repository), "init"],
        env={**nights.env, "RESTIC_PASSWORD": PASSWORD}, capture_output=True, check=True,
    )  # fmt: skip
    rsyncable = nights.out / f"restic-rsyncable-{pattern}"
    with_rsyncable = pattern == "append"
    if with_rsyncable:
        subprocess.run(
            ["restic", "-r", str(rsyncable), "init"],
            env={**nights.env, "RESTIC_PASSWORD": PASSWORD}, capture_output=True, check=True,
        )  # fmt: skip
    files = nights.config(f"files_{pattern}", {"path": str(folder)})
    restic = nights.config(
        f"restic_{pattern}",
        {"kind": "restic", "repository": str(repository), "password": "${RESTIC_PW}"},
    )
    table = []
    for night in range(1, count + 1):
        if night > 1:
            nights.change(pattern, night, rows)
        order = [(files, "files"), (restic, "restic")]
        timed: dict[str, float] = {}
        jobs: dict[str, dict[str, Any]] = {}
        for config, label in order if night % 2 else reversed(order):
            timed[label], jobs[label] = nights.backup(config)
        entry = {
            "night": night,
            "raw_mb": round(jobs["files"]["raw_bytes"] / 1e6, 1),
            "sql_gz_mb": round(jobs["files"]["stored_bytes"] / 1e6, 1),
            "files_total_mb": round(du(folder) / 1e6, 1),
            "restic_repository_mb": round(du(repository) / 1e6, 1),
            "files_seconds": round(timed["files"], 2),
            "restic_seconds": round(timed["restic"], 2),
            "files_peak_rss_mib": round(jobs["files"]["peak_rss_bytes"] / 2**20, 1),
            "restic_peak_rss_mib": round(jobs["restic"]["peak_rss_bytes"] / 2**20, 1),
        }
        if with_rsyncable:
            entry["rsyncable_seconds"] = round(nights.rsyncable(rsyncable), 2)
            entry["rsyncable_repository_mb"] = round(du(rsyncable) / 1e6, 1)
        table.append(entry)
        print(json.dumps(entry), flush=True)
    first_gz = table[0]["sql_gz_mb"]
    last = table[-1]
    summary = {
        "pattern": pattern,
        "nights": table,
        "one_full_sql_gz_mb": first_gz,
        "files_after_all_mb": last["files_total_mb"],
        "restic_after_all_mb": last["restic_repository_mb"],
        "restic_vs_one_full": round(last["restic_repository_mb"] / first_gz, 2),
        "files_vs_one_full": round(last["files_total_mb"] / first_gz, 2),
        "peak_rss_mib": {
            "files": max(n["files_peak_rss_mib"] for n in table),
            "restic": max(n["restic_peak_rss_mib"] for n in table),
        },
        "time_ratio_median": round(
            statistics.median(n["restic_seconds"] / n["files_seconds"] for n in table), 3
        ),
    }
    if with_rsyncable:
        summary["rsyncable_vs_one_full"] = round(last["rsyncable_repository_mb"] / first_gz, 2)
    shutil.rmtree(folder)
    return summary


def dump_memory(nights: Nights, gigabytes: float) -> dict[str, Any]:
    """Peak RSS of `restic dump` of one multi-GB file (and of the backup that stored it)."""
    repository = nights.out / "restic-big"
    env = {**nights.env, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repository)}
    subprocess.run(["restic", "init"], env=env, capture_output=True, check=True)
    numbers = int(gigabytes * 1e9 / 10)  # `seq` lines of ~10 bytes: distinct text, no repeats
    producer = subprocess.Popen(["seq", "1", str(numbers)], stdout=subprocess.PIPE)
    storing = subprocess.Popen(
        ["restic", "backup", "--stdin", "--stdin-filename", "big.sql", "--quiet"],
        stdin=producer.stdout, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert producer.stdout is not None
    producer.stdout.close()
    _, _, backup_usage = os.wait4(storing.pid, 0)
    producer.wait()
    started = time.perf_counter()
    reading = subprocess.Popen(
        ["restic", "dump", "latest", "/big.sql"], env=env, stdout=subprocess.PIPE
    )
    assert reading.stdout is not None
    size = 0
    while chunk := reading.stdout.read(1 << 20):
        size += len(chunk)
    _, status, dump_usage = os.wait4(reading.pid, 0)
    seconds = time.perf_counter() - started
    shutil.rmtree(repository)
    return {
        "file_gb": round(size / 1e9, 2),
        "backup_peak_rss_mib": round(backup_usage.ru_maxrss / 1024, 1),
        "dump_peak_rss_mib": round(dump_usage.ru_maxrss / 1024, 1),
        "dump_seconds": round(seconds, 1),
        "dump_exit": os.waitstatus_to_exitcode(status),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Measured {result['when']} on {result['machine']}, restic {result['restic']}: "
        f"{result['settings']['nights']} nights of a {result['settings']['size_mb']} MB "
        "database (raw SQL), db-backup to a folder (default `.sql.gz`) and to a restic "
        "repository, in alternating order.",
        "",
        "| pattern | one full `.sql.gz` | ten `.sql.gz` files | restic repository | "
        "restic / one full | `gzip --rsyncable` into restic | time, restic / folder (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for summary in result["patterns"]:
        rsyncable = summary.get("rsyncable_vs_one_full")
        lines.append(
            f"| {summary['pattern']} | {summary['one_full_sql_gz_mb']} MB "
            f"| {summary['files_after_all_mb']} MB ({summary['files_vs_one_full']}x) "
            f"| {summary['restic_after_all_mb']} MB | {summary['restic_vs_one_full']}x "
            f"| {f'{rsyncable}x' if rsyncable is not None else 'not run'} "
            f"| {summary['time_ratio_median']} |"
        )
    for summary in result["patterns"]:
        lines += [
            "",
            f"Per night, {summary['pattern']}:",
            "",
            "| night | raw SQL MB | `.sql.gz` MB | restic repository MB | growth MB "
            "| folder s | restic s |",
            "|---|---|---|---|---|---|---|",
        ]
        previous = 0.0
        for night in summary["nights"]:
            growth = night["restic_repository_mb"] - previous
            previous = night["restic_repository_mb"]
            lines.append(
                f"| {night['night']} | {night['raw_mb']} | {night['sql_gz_mb']} "
                f"| {night['restic_repository_mb']} | {growth:.1f} "
                f"| {night['files_seconds']} | {night['restic_seconds']} |"
            )
    lines += [
        "",
        "Peak RSS of the runner, largest of the ten nights: "
        + "; ".join(
            f"{summary['pattern']}: {summary['peak_rss_mib']['files']} MiB to a folder, "
            f"{summary['peak_rss_mib']['restic']} MiB to restic"
            for summary in result["patterns"]
        )
        + " (restic's own process aside).",
    ]
    memory = result.get("dump_memory")
    if memory:
        lines += [
            "",
            f"`restic dump` of one {memory['file_gb']} GB file: peak RSS "
            f"{memory['dump_peak_rss_mib']} MiB ({memory['dump_seconds']} s); the `restic "
            f"backup --stdin` that stored it: {memory['backup_peak_rss_mib']} MiB.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=530, help="raw SQL of the database")
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--patterns", default="append,random")
    parser.add_argument("--dump-gb", type=float, default=3.0, help="0: skip the memory check")
    args = parser.parse_args()
    if shutil.which("restic") is None:
        sys.exit("nights: restic is needed (apt-get install restic)")
    memory = Path("/dev/shm")
    parent = memory if memory.is_dir() and shutil.disk_usage(memory).free > 12 << 30 else None
    restic_version = subprocess.run(
        ["restic", "version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    with (
        ThrowawayCluster(parent=parent) as cluster,
        tempfile.TemporaryDirectory(dir=parent) as scratch,
    ):
        nights = Nights(cluster, Path(scratch))
        rows = int(args.size_mb * 1e6 / BYTES_PER_ROW)
        print(f"creating 'realistic' ({rows} rows, ~{args.size_mb} MB of SQL) ...", flush=True)
        nights.sql("postgres", "CREATE DATABASE realistic")
        nights.sql("realistic", REALISTIC.format(rows=rows))
        nights.sql("realistic", "VACUUM ANALYZE")
        result: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "restic": restic_version,
            "settings": vars(args),
            "patterns": [
                run_pattern(nights, pattern, args.nights) for pattern in args.patterns.split(",")
            ],
        }
        if args.dump_gb:
            result["dump_memory"] = dump_memory(nights, args.dump_gb)
    table = markdown(result)
    save_results(result, table, prefix="nights-")
    if args.nights == 10:  # the published measurement: ten nights
        into_readme("nights", table)


if __name__ == "__main__":
    main()
