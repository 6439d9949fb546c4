"""A fleet on one machine: 40 databases of uneven sizes, backed up by 1, 2 and 4 runners.

    nox -s fleet -- [--total-mb 400] [--rounds 3]

Starts its own PostgreSQL and SeaweedFS, creates 40 databases (the benchmark's realistic
rows; sizes spread 1:20), and seeds the catalog: one unsharded run whose manifests are then
moved two days back, so every runner reads them as last night's sizes and the partition is
balanced by bytes. Then, for N = 1, 2 and 4 in alternating order each round, N runners
start together (`backup --shard i/N`, each with a state folder of its own, as pods are, one
run id), into one bucket prefix; recorded: the fleet's wall time (first start to last exit),
each runner's time (its run report), the raw bytes dumped. Per N, medians over the rounds of
the wall time, the fleet's raw MB/s, and slowest shard / mean shard. Results go to
benchmarks/results/fleet-*.{json,md} and into the README between the `fleet:` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from db_backup.pgcluster import ThrowawayCluster

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
from bench import BYTES_PER_ROW, REALISTIC, into_readme, machine, save_results  # noqa: E402

from tests.seaweed import SeaweedServer  # noqa: E402

DATABASES = 40
RUNNER_COUNTS = (1, 2, 4)


def weights() -> list[int]:
    """Relative sizes 1..20, uneven: a few large databases among many small ones."""
    return [1 + (i * 7) % 20 if i % 3 else 1 + i % 4 for i in range(DATABASES)]


def create_databases(cluster: ThrowawayCluster, total_mb: int) -> dict[str, int]:
    """The 40 databases; returns each one's rows."""
    sizes = weights()
    rows_per_unit = int(total_mb * 1e6 / BYTES_PER_ROW / sum(sizes))
    made = {}
    for index, weight in enumerate(sizes):
        name = f"fleet{index:02d}"
        rows = weight * rows_per_unit
        with psycopg.connect(**cluster.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with psycopg.connect(**cluster.conninfo(name), autocommit=True) as conn:
            conn.execute(REALISTIC.format(rows=rows).encode())
        made[name] = rows
    return made


def write_config(path: Path, cluster: ThrowawayCluster, s3: SeaweedServer) -> Path:
    config = {
        "concurrency": 2,
        "defaults": {
            "host": cluster.host,
            "port": cluster.port,
            "username": cluster.superuser,
            "password": "${BENCH_PG_PASSWORD}",
            "pg_dump_path": str(cluster.client_bin("pg_dump")),
            "storage": {
                "kind": "s3",
                "bucket": s3.bucket,
                "prefix": "fleet",
                "endpoint_url": s3.endpoint,
                "path_style": True,
                "access_key_id": "${AWS_ACCESS_KEY_ID}",
                "secret_access_key": "${AWS_SECRET_ACCESS_KEY}",
            },
        },
        "backups": [
            {"name": f"fleet{i:02d}", "database": f"fleet{i:02d}"} for i in range(DATABASES)
        ],
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def environment(cluster: ThrowawayCluster, s3: SeaweedServer, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_BACKUP_", "AWS_"))}
    return (
        env
        | s3.environment()
        | {
            "BENCH_PG_PASSWORD": cluster.password,
            "DB_BACKUP_STATE_DIR": str(state),
            "NO_COLOR": "1",
        }
    )


def backdate_manifests(s3: SeaweedServer, days: int) -> int:
    """Move the seeding run's manifests `days` back: last night's sizes for every runner."""
    client = s3.client()
    moved = 0
    for key in s3.objects("fleet/"):
        if not key.endswith(".json"):
            continue
        record = json.loads(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
        for field in ("started_at", "finished_at"):
            when = datetime.fromisoformat(record[field]) - timedelta(days=days)
            record[field] = when.isoformat()
        client.put_object(Bucket=s3.bucket, Key=key, Body=json.dumps(record).encode())
        moved += 1
    return moved


def night(
    count: int, config: Path, cluster: ThrowawayCluster, s3: SeaweedServer, work: Path, tag: str
) -> dict[str, Any]:
    """N runners started together; their reports and the fleet's wall time."""
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "db_backup",
                "backup",
                "-c",
                str(config),
                "--json",
                "--shard",
                f"{index}/{count}",
                "--run-id",
                f"bench-{tag}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(cluster, s3, work / f"{tag}-pod{index}"),
        )
        for index in range(count)
    ]
    reports = []
    for process in processes:
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            sys.exit(f"fleet: a runner failed ({process.returncode}): {stderr[-2000:]}")
        reports.append(json.loads(stdout))
    wall = time.monotonic() - started
    shard_seconds = [
        (
            datetime.fromisoformat(r["finished_at"]) - datetime.fromisoformat(r["started_at"])
        ).total_seconds()
        for r in reports
    ]
    raw = sum(job["raw_bytes"] for r in reports for job in r["jobs"])
    jobs = sorted(job["job"] for r in reports for job in r["jobs"] if job["status"] == "succeeded")
    if jobs != [f"fleet{i:02d}" for i in range(DATABASES)]:
        sys.exit(f"fleet: {count} runners did not back up each database once: {jobs}")
    return {
        "runners": count,
        "wall_seconds": round(wall, 2),
        "shard_seconds": [round(s, 2) for s in shard_seconds],
        "slowest_over_mean": round(max(shard_seconds) / statistics.mean(shard_seconds), 3),
        "raw_bytes": raw,
        "peak_rss_mb": [round(r["peak_rss_bytes"] / 2**20, 1) for r in reports],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        ThrowawayCluster() as cluster,
        SeaweedServer() as s3,
        tempfile.TemporaryDirectory(prefix="db-backup-fleet-") as scratch,
    ):
        work = Path(scratch)
        print(f"creating {DATABASES} databases, ~{args.total_mb} MB of SQL ...", flush=True)
        rows = create_databases(cluster, args.total_mb)
        config = write_config(work / "backup.yml", cluster, s3)
        print("seeding the catalog (one unsharded run, moved two days back) ...", flush=True)
        night(1, config, cluster, s3, work, "seed")
        print(f"  {backdate_manifests(s3, 2)} manifests moved", flush=True)
        nights: dict[int, list[dict[str, Any]]] = {count: [] for count in RUNNER_COUNTS}
        for round_ in range(args.rounds):
            order = RUNNER_COUNTS if round_ % 2 == 0 else tuple(reversed(RUNNER_COUNTS))
            for count in order:
                result = night(count, config, cluster, s3, work, f"r{round_}n{count}")
                print(f"  round {round_}, {count} runners: {result}", flush=True)
                nights[count].append(result)
    summary = []
    for count, results in nights.items():
        wall = statistics.median(r["wall_seconds"] for r in results)
        raw = statistics.median(r["raw_bytes"] for r in results)
        summary.append(
            {
                "runners": count,
                "wall_seconds": round(wall, 2),
                "raw_mb_per_s": round(raw / 1e6 / wall, 1),
                "slowest_over_mean": statistics.median(r["slowest_over_mean"] for r in results),
                "peak_rss_mb": max(max(r["peak_rss_mb"]) for r in results),
            }
        )
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"total_mb": args.total_mb, "rounds": args.rounds, "concurrency": 2},
        "rows": rows,
        "nights": nights,
        "summary": summary,
    }


def markdown(result: dict[str, Any]) -> str:
    settings = result["settings"]
    lines = [
        f"Measured {result['when']} on {result['machine']}: {DATABASES} databases, "
        f"~{settings['total_mb']} MB of SQL (sizes 1:20), to SeaweedFS on loopback, "
        f"`concurrency: {settings['concurrency']}` per runner; medians of {settings['rounds']} "
        "rounds, the runner counts in alternating order.",
        "",
        "| runners | fleet wall s | raw MB/s (fleet) | slowest shard / mean "
        "| peak RSS per runner MiB |",
        "|---|---|---|---|---|",
    ]
    for row in result["summary"]:
        lines.append(
            f"| {row['runners']} | {row['wall_seconds']} | {row['raw_mb_per_s']} "
            f"| {row['slowest_over_mean']} | {row['peak_rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total-mb", type=int, default=400, help="plain SQL of all 40")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = run(args)
    table = markdown(result)
    save_results(result, table, prefix="fleet-")
    into_readme("fleet", table)


if __name__ == "__main__":
    main()
