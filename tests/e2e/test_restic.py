"""restic repositories as targets (Debian's restic 0.14), in a folder and on the suite's
SeaweedFS bucket: backup → restic → restore compared row by row; a fan-out to a folder and
restic at once with byte-identical content; deduplication measured by restic's own stats; no
snapshot and no lock after a failed dump or a runner killed with SIGKILL; retention with the
same decisions as a folder's; a wrong password fails that target only and is printed nowhere."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg import sql

from db_backup import manifest
from db_backup.config.schema import LocalStorage, ResticStorage
from db_backup.demo import fingerprint
from db_backup.naming import run_stamp_of, timestamp
from db_backup.pgcluster import ThrowawayCluster
from db_backup.storage.local import LocalStore
from db_backup.storage.restic import ResticStore
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    run_cli,
    s3_storage,
    server_defaults,
    write_config,
)
from tests.e2e.test_backup_restore import VARIED
from tests.fakes import fake_pg_dump, holding_dump
from tests.seaweed import SeaweedServer
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

PASSWORD = "restic pa$$ 'w0rd'"  # as a user might write it; must show up nowhere
# ~45 MB of SQL that compresses about 3x, as table data does: rows of words and numbers.
SIZED = """
CREATE TABLE orders AS
SELECT g AS id, 'customer-' || (g % 5000) AS customer, (g::bigint * 7919) % 100000 AS cents,
       md5(g::text) AS reference, 'street ' || (g % 977) || ', city ' || (g % 131) AS note
FROM generate_series(1, 400000) g;
"""


@pytest.fixture(scope="module")
def varied_db(pg: ThrowawayCluster) -> str:
    create_database(pg, "restic_varied", VARIED)
    return "restic_varied"


@pytest.fixture(scope="module")
def sized_db(pg: ThrowawayCluster) -> str:
    create_database(pg, "restic_sized", SIZED)
    return "restic_sized"


def restic_target(repository: Path | str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "restic",
        "repository": str(repository),
        "password": "${RESTIC_PW}",
        "init": True,
        **extra,
    }


def configure(
    pg: ThrowawayCluster, tmp_path: Path, storage: Any, database: str, **extra: Any
) -> Path:
    backup = {"name": "shop", "database": database, "storage": storage, **extra}
    return write_config(
        tmp_path / "backup.yml",
        {"defaults": server_defaults(pg, tmp_path / "out"), "backups": [backup]},
    )


def env_for(pg: ThrowawayCluster, s3: SeaweedServer | None = None) -> dict[str, str]:
    return cli_env(pg, s3=s3, RESTIC_PW=PASSWORD)


def restic(repository: Path | str, *args: str, **env: str) -> Any:
    """restic itself, as a person would run it against the repository."""
    result = subprocess.run(
        ["restic", *args],
        capture_output=True,
        env={
            **os.environ,
            "RESTIC_REPOSITORY": str(repository),
            "RESTIC_PASSWORD": PASSWORD,
            **env,
        },
        check=True,
    )
    return result.stdout


def snapshots(repository: Path | str, **env: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(restic(repository, "snapshots", "--json", **env))
    return found


def locks(repository: Path) -> list[str]:
    listed: bytes = restic(repository, "list", "locks", "--no-lock")
    return listed.decode().split()


def backup(config: Path, env: dict[str, str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    result = run_cli("backup", "-c", str(config), "--json", *args, env=env, timeout=300)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)["jobs"], result.stderr


def drop(pg: ThrowawayCluster, name: str) -> None:
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_fan_out_to_restic_a_folder_and_a_bucket_then_verify_and_restore_from_restic(
    pg: ThrowawayCluster, s3: SeaweedServer, varied_db: str, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    out = tmp_path / "out"
    bucket = s3_storage(s3, f"fan-{tmp_path.name}")
    storage = [restic_target(repository), {"path": str(out)}, bucket]
    config = configure(pg, tmp_path, storage, varied_db)
    env = env_for(pg, s3)
    code, [job], stderr = backup(config, env)
    assert code == 0, stderr
    assert job["status"] == "succeeded"
    stored = {target["target"] for target in job["targets"] if target["stored"]}
    restic_label = f"restic:{repository}"
    assert len(stored) == 3
    assert {f"local:{out}", restic_label} < stored

    # One snapshot of the dump (tagged), one of its manifest, under the fixed host.
    found = snapshots(repository)
    by_path = {s["paths"][0]: s for s in found}
    [dump_path] = [p for p in by_path if p.endswith(".sql")]
    assert set(by_path) == {dump_path, f"{dump_path}.json"}
    assert all(s["hostname"] == "db-backup" for s in found)
    tags = set(by_path[dump_path]["tags"])
    assert {"db-backup", "job=shop", "backup=shop", f"database={varied_db}"} <= tags
    assert any(tag.startswith("tool=db-backup%20") for tag in tags)

    # restic holds the dump as pg_dump wrote it: the folder's and the bucket's file,
    # uncompressed, byte for byte.
    [gz] = out.glob("*.sql.gz")
    held = restic(repository, "dump", "--path", dump_path, "latest", dump_path)
    assert held == gzip.decompress(gz.read_bytes())
    key = f"{bucket['prefix']}/{gz.name}"
    in_bucket = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert in_bucket == gz.read_bytes()
    record = json.loads(
        restic(repository, "dump", by_path[f"{dump_path}.json"]["id"], f"{dump_path}.json")
    )
    assert record["compression"]["algorithm"] == "none"
    assert record["sha256"] == hashlib.sha256(held).hexdigest()
    assert record["stored_bytes"] == record["raw_bytes"] == len(held)

    listed = run_cli("list", "-c", str(config), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    targets = {entry["target"] for entry in json.loads(listed.stdout)["backups"]}
    assert targets == stored

    verified = run_cli("verify", "-c", str(config), env=env, timeout=300)
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert f"OK      target {restic_label} (restic check: no errors)" in verified.stdout
    assert f"OK      {restic_label}:{dump_path}" in verified.stdout

    # Restore tests of every copy: the restic one is a backup of its own (its bytes differ
    # from the .sql.gz that the folder and the bucket hold).
    tested = run_cli("verify", "-c", str(config), "--restore", "--all", env=env, timeout=300)
    assert tested.returncode == 0, tested.stderr + tested.stdout
    assert f"OK      {restic_label}:{dump_path} restore-tested" in tested.stdout
    relisted = json.loads(run_cli("list", "-c", str(config), "--json", env=env).stdout)
    [in_restic] = [entry for entry in relisted["backups"] if entry["target"] == restic_label]
    assert in_restic["restore_test"]["ok"] is True  # the record went into the repository

    into = "restic_restored"
    drop(pg, into)
    restored = run_cli(
        "restore", "-c", str(config), "-n", "shop", "--to-database", into,
        "--from", restic_label, env=env, timeout=300,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert fingerprint(pg.conninfo(into)) == fingerprint(pg.conninfo(varied_db))
    drop(pg, into)
    for output in (listed, verified, tested, restored):
        assert PASSWORD not in output.stdout + output.stderr
    assert not locks(repository)


def stored(repository: str, **env: str) -> tuple[int, int]:
    """What the repository holds after deduplication and compression, by restic's own stats:
    (bytes, blobs)."""
    stats = json.loads(restic(repository, "stats", "--mode", "raw-data", "--json", **env))
    return int(stats["total_size"]), int(stats["total_blob_count"])


def test_a_repository_in_the_bucket_deduplicates_and_restores(
    pg: ThrowawayCluster, s3: SeaweedServer, sized_db: str, tmp_path: Path
) -> None:
    # The bucket's credentials reach restic through the target's `env:` only: the runner's
    # environment has them under other names, none that restic would read by itself.
    repository = f"s3:{s3.endpoint}/{s3.bucket}/restic-{tmp_path.name}"
    target = restic_target(
        repository,
        env={"AWS_ACCESS_KEY_ID": "${S3_KEY}", "AWS_SECRET_ACCESS_KEY": "${S3_SECRET}"},
    )
    config = configure(pg, tmp_path, target, sized_db)
    env = {**env_for(pg), "S3_KEY": s3.access_key, "S3_SECRET": s3.secret_key}
    assert not any(name.startswith("AWS_") for name in env)
    aws = s3.environment()

    code, [first], stderr = backup(config, env)
    assert code == 0, stderr
    assert first["file"].endswith(".sql")
    bytes_one, blobs_one = stored(repository, **aws)
    code, _, stderr = backup(config, env)
    assert code == 0, stderr
    bytes_two, blobs_two = stored(repository, **aws)
    # The same database again. pg_dump's output differs only in its first and last lines
    # (a random `\restrict` key, since 15.14), so restic stores at most the two chunks
    # holding them, the new snapshot's tree, and the manifest's blob and tree — whatever
    # the chunk boundaries, which depend on the repository's random chunker polynomial.
    assert blobs_one >= 20, blobs_one  # ~38 MB in chunks of 0.5-8 MiB
    assert blobs_two - blobs_one <= 5, (blobs_one, blobs_two)
    assert bytes_two - bytes_one < bytes_one * 0.35, (bytes_one, bytes_two)  # 2 chunks at most

    into = "restic_bucket_restored"
    drop(pg, into)
    restored = run_cli(
        "restore", "-c", str(config), "-n", "shop", "--to-database", into, env=env, timeout=300
    )
    assert restored.returncode == 0, restored.stderr
    assert fingerprint(pg.conninfo(into)) == fingerprint(pg.conninfo(sized_db))
    drop(pg, into)
    checked = run_cli("validate", "-c", str(config), "--connect", env=env)
    assert checked.returncode == 0, checked.stderr + checked.stdout


def test_a_dump_that_fails_or_is_cut_short_leaves_no_snapshot_and_no_lock(
    pg: ThrowawayCluster, varied_db: str, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    restic(repository, "init")
    for behaviour in ("dies-halfway", "truncated-exit-0"):  # exit 1; exit 0 without the end
        fake = fake_pg_dump(tmp_path, behaviour)
        config = configure(
            pg, tmp_path, restic_target(repository), varied_db, pg_dump_path=str(fake)
        )
        code, [job], _ = backup(config, env_for(pg))
        assert code != 0, behaviour
        assert (job["status"], job["error_kind"]) == ("failed", "dump"), behaviour
        assert snapshots(repository) == [], behaviour
        assert locks(repository) == [], behaviour


def test_a_runner_killed_mid_dump_leaves_no_snapshot_and_the_next_run_works(
    pg: ThrowawayCluster, sized_db: str, tmp_path: Path, start_cli: StartCli
) -> None:
    repository = tmp_path / "repo"
    restic(repository, "init")
    gate, held = tmp_path / "gate", tmp_path / "held"
    real = Path(pg.bindir) / "pg_dump"
    holding = holding_dump(tmp_path, real, gate, held, after=4_000_000)
    config = configure(pg, tmp_path, restic_target(repository), sized_db, pg_dump_path=str(holding))
    runner = start_cli("backup", "-c", str(config), env=env_for(pg))
    wait_for(held.exists, what="the dump held after 4 MB", process=runner)
    wait_for(lambda: bool(locks(repository)), what="restic's lock: it is taking the dump")
    backing_up = [p for p in restic_processes() if p != runner.pid]
    assert backing_up, "restic backup should be running"
    os.kill(runner.pid, signal.SIGKILL)
    runner.communicate()
    wait_for(
        lambda: not set(backing_up) & set(restic_processes()), what="restic to die with the runner"
    )
    assert snapshots(repository) == []  # restic never saw the end of its stdin as a dump's
    assert locks(repository)  # a killed restic's lock (removed by the next run)

    gate.touch()
    code, [job], stderr = backup(config, env_for(pg))
    assert code == 0, stderr
    paths = sorted(s["paths"][0] for s in snapshots(repository))
    name = Path(job["file"].rsplit(":", 1)[1]).name
    assert paths == [f"/{name}", f"/{name}.json"]
    assert locks(repository) == []


def restic_processes() -> list[int]:
    """PIDs of restic processes running now (backup, from this test's runner)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ours = any(Path(arg.decode(errors="replace")).name == "restic" for arg in argv[:4])
            if ours and b"backup" in argv:
                found.append(int(entry.name))
    return found


def test_wrong_password_fails_that_target_only_and_is_printed_nowhere(
    pg: ThrowawayCluster, varied_db: str, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    restic(repository, "init")
    out = tmp_path / "out"
    wrong = "not-the-password-9f3a"
    config = configure(pg, tmp_path, [{"path": str(out)}, restic_target(repository)], varied_db)
    env = {**env_for(pg), "RESTIC_PW": wrong}
    code, [job], stderr = backup(config, env)
    assert code != 0
    assert job["status"] == "failed"
    [failed] = [t for t in job["targets"] if not t["stored"]]
    assert failed["target"] == f"restic:{repository}"
    assert "wrong password or no key found" in failed["error"]
    assert [t["target"] for t in job["targets"] if t["stored"]] == [f"local:{out}"]
    assert len(list(out.glob("*.sql.gz"))) == 1  # the folder committed its copy
    checked = run_cli("validate", "-c", str(config), "--connect", env=env)
    assert checked.returncode != 0
    assert "wrong password or no key found" in checked.stdout + checked.stderr
    for output in (stderr, checked.stdout, checked.stderr, json.dumps(job)):
        assert wrong not in output
    assert snapshots(repository) == []
    right = run_cli("validate", "-c", str(config), "--connect", env=env_for(pg))
    assert right.returncode == 0, right.stdout + right.stderr


def plant(store: Any, name: str, data: bytes, record: manifest.Manifest) -> None:
    """A backup made on an earlier day, through the store's own interface."""
    upload = store.open_upload(name)
    upload.write(data)
    upload.commit()
    store.put(f"{name}.json", manifest.encode(msgspec.structs.replace(record, file=name)))


def stamps(names: Any) -> list[str]:
    return sorted({stamp for name in names if (stamp := run_stamp_of(name))})


def test_retention_on_restic_decides_as_on_a_folder_and_dry_run_deletes_nothing(
    pg: ThrowawayCluster, varied_db: str, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    out = tmp_path / "out"
    policy = {"keep_daily": 2}
    folder = {"path": str(out), "retention": policy}
    config = configure(pg, tmp_path, [folder, restic_target(repository)], varied_db)
    env = env_for(pg)
    code, [made], stderr = backup(config, env)
    assert code == 0, stderr

    # Four earlier nights, one a day at noon UTC, on both targets.
    [gz] = out.glob("*.sql.gz")
    record = manifest.decode(Path(f"{gz}.json").read_bytes())
    sql_text = gzip.decompress(gz.read_bytes())
    local = LocalStore(LocalStorage(path=str(out)))
    restic_store = ResticStore(ResticStorage(repository=str(repository), password=PASSWORD))
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    nights = [today - timedelta(days=back) for back in range(1, 5)]
    for night in nights:
        name = f"shop_{timestamp(night)}"
        earlier = msgspec.structs.replace(record, started_at=night, finished_at=night)
        plant(local, f"{name}.sql.gz", gz.read_bytes(), earlier)
        raw = msgspec.structs.replace(
            earlier, compression=manifest.CompressionInfo(algorithm="none", level=None), stages=()
        )
        plant(restic_store, f"{name}.sql", sql_text, raw)
    # The policy lives in the config: the restic target gets it too (written per target).
    document = json.loads(config.read_text())
    document["backups"][0]["storage"][1]["retention"] = policy
    config.write_text(json.dumps(document))

    before_files = sorted(p.name for p in out.iterdir())
    before_snapshots = sorted(s["id"] for s in snapshots(repository))
    dry = run_cli("prune", "-c", str(config), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would delete") == 6  # three nights on each target
    assert sorted(p.name for p in out.iterdir()) == before_files
    assert sorted(s["id"] for s in snapshots(repository)) == before_snapshots

    pruned = run_cli("prune", "-c", str(config), env=env)
    assert pruned.returncode == 0, pruned.stderr
    # keep_daily 2: the newest of each of the last two days — today's run and last night's;
    # the same on both targets.
    expected = stamps([made["file"], f"x_{timestamp(nights[0])}.sql"])
    assert stamps(p.name for p in out.iterdir()) == expected
    assert stamps(s["paths"][0] for s in snapshots(repository)) == expected
    assert len(snapshots(repository)) == 4  # two dumps, two manifests
    assert locks(repository) == []
