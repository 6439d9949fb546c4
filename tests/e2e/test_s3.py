"""S3 targets against a real S3-compatible server (SeaweedFS): fan-out, restore, faults.

The server enforces credentials and per-part checksums as S3 does; nothing here is mocked.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from db_backup.demo import fingerprint
from db_backup.lease import lease_name
from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import (
    cli_env,
    create_database,
    run_cli,
    s3_storage,
    server_defaults,
    write_config,
)
from tests.e2e.test_backup_restore import VARIED, restore
from tests.fakes import fake_pg_dump
from tests.seaweed import SeaweedServer
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def varied_s3_db(pg: ThrowawayCluster) -> str:
    create_database(pg, "varied_s3", VARIED)
    return "varied_s3"


def backup_config(pg: ThrowawayCluster, tmp_path: Path, backups: list[dict[str, Any]]) -> Path:
    return write_config(
        tmp_path / "backup.yml",
        {"defaults": server_defaults(pg, tmp_path / "out"), "backups": backups},
    )


def run_json(config: Path, env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("backup", "-c", str(config), "--json", *args, env=env)
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    return result.returncode, {job["job"]: job for job in report["jobs"]}


@dataclass(frozen=True)
class HeldRun:
    """A backup run in the background whose (fake) dump has written its first 6 MiB and
    waits for `gate` to exist before it writes the rest."""

    config: Path
    env: dict[str, str]
    process: subprocess.Popen[str]
    started: Path
    gate: Path

    @classmethod
    def start(
        cls, pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path, storage: Any, start_cli: Any
    ) -> HeldRun:
        started, gate = tmp_path / "started", tmp_path / "gate"
        backup = {
            "name": "pg",
            "database": "postgres",
            "pg_dump_path": str(fake_pg_dump(tmp_path, "pauses-halfway")),
            "compression": {"algorithm": "none"},  # 6 MiB stay 6 MiB: more than a part
            "storage": storage,
        }
        config = backup_config(pg, tmp_path, [backup])
        env = cli_env(pg, s3=s3, FAKE_STARTED_FILE=str(started), FAKE_GATE=str(gate))
        process = start_cli("backup", "-c", str(config), "--json", env=env)
        wait_for(started.exists, what="the dump's first half", process=process)
        return cls(config, env, process, started, gate)


def key_of(s3: SeaweedServer, url: str) -> str:
    prefix = f"s3://{s3.bucket}/"
    assert url.startswith(prefix), url
    return url.removeprefix(prefix)


@pytest.mark.parametrize(
    ("fmt", "compression", "pipeline"),
    [("plain", {"algorithm": "gzip"}, ["gunzip"]), ("custom", {}, ["pg_restore"])],
)
def test_one_dump_goes_to_a_folder_and_a_bucket_at_once_and_restores_from_the_bucket(
    pg: ThrowawayCluster,
    s3: SeaweedServer,
    varied_s3_db: str,
    tmp_path: Path,
    fmt: str,
    compression: dict[str, Any],
    pipeline: list[str],
) -> None:
    folder = tmp_path / "out"
    prefix = f"fanout-{fmt}"
    storage = [{"path": str(folder)}, s3_storage(s3, prefix)]
    backup = {
        "name": "varied",
        "database": varied_s3_db,
        "format": fmt,
        "compression": compression,
        "storage": storage,
    }
    config = backup_config(pg, tmp_path, [backup])
    code, jobs = run_json(config, cli_env(pg, s3=s3))
    job = jobs["varied"]
    assert code == 0, job["error"]
    local, remote = job["targets"]
    assert local["stored"]
    assert remote["stored"]
    assert remote["file"].startswith(f"s3://{s3.bucket}/{prefix}/varied_")

    # Both copies are byte for byte the dump the manifest describes.
    key = key_of(s3, remote["file"])
    downloaded = s3.download(key, tmp_path / Path(key).name)
    assert downloaded.read_bytes() == Path(local["file"]).read_bytes()
    manifest = json.loads(
        s3.client().get_object(Bucket=s3.bucket, Key=key + ".json")["Body"].read()
    )
    assert manifest["file"] == Path(key).name
    assert manifest["stored_bytes"] == downloaded.stat().st_size
    assert manifest["sha256"] == hashlib.sha256(downloaded.read_bytes()).hexdigest()
    assert set(manifest["checks"]) == {
        "sha256",
        "end marker" if fmt == "plain" else "pg_restore read-through",
    }
    assert s3.objects(f"{prefix}/") == sorted([key, key + ".json"])
    assert s3.incomplete_uploads(f"{prefix}/") == []

    restored = f"restored_s3_{fmt}"
    restore(pg, pipeline, restored, downloaded)
    assert fingerprint(pg.conninfo(restored)) == fingerprint(pg.conninfo(varied_s3_db))


def test_a_dump_larger_than_several_parts_arrives_whole(
    pg: ThrowawayCluster, s3: SeaweedServer, big_db: str, tmp_path: Path
) -> None:
    """~110 MB of SQL, uncompressed, in 5 MiB parts: many parts, several in flight."""
    backup = {
        "name": "big",
        "database": big_db,
        "compression": {"algorithm": "none"},
        "storage": s3_storage(s3, "multipart", upload_concurrency=3),
    }
    code, jobs = run_json(backup_config(pg, tmp_path, [backup]), cli_env(pg, s3=s3))
    assert code == 0, jobs["big"]["error"]
    key = key_of(s3, jobs["big"]["file"])
    head = s3.client().head_object(Bucket=s3.bucket, Key=key)
    parts = int(head["ETag"].strip('"').rsplit("-", 1)[1])  # multipart ETags end in -<parts>
    assert parts == -(-jobs["big"]["stored_bytes"] // (5 * 1024 * 1024)) > 10
    downloaded = s3.download(key, tmp_path / "big.sql")
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == jobs["big"]["sha256"]


def test_wrong_credentials_fail_that_target_by_name_and_the_folder_keeps_the_backup(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    backup = {
        "name": "pg",
        "database": "postgres",
        "storage": [{"path": str(folder)}, s3_storage(s3, "wrong-credentials")],
    }
    env = cli_env(pg, s3=s3, AWS_SECRET_ACCESS_KEY="not-the-secret")
    code, jobs = run_json(backup_config(pg, tmp_path, [backup]), env)
    job = jobs["pg"]
    assert code == 1
    assert job["status"] == "failed"
    label = f"s3://{s3.bucket}/wrong-credentials/ at {s3.endpoint}"
    # The first request, the job's lease in the bucket, was refused.
    lease = f"s3://{s3.bucket}/wrong-credentials/{lease_name('pg')}"
    assert job["error"].startswith(f"target {label} failed: cannot take the job's lease: ")
    assert f"creating {lease}: SignatureDoesNotMatch" in job["error"]
    assert "SignatureDoesNotMatch" in job["error"]
    assert "wrong credentials" in job["error"]
    assert "not-the-secret" not in job["error"]
    assert job["error"].endswith(f"stored on the other targets as {job['targets'][0]['file']}")
    local, remote = job["targets"]
    assert local["stored"]
    assert Path(local["file"]).is_file()
    assert Path(local["manifest"]).is_file()
    assert not remote["stored"]
    assert "SignatureDoesNotMatch" in remote["error"]
    assert s3.objects("wrong-credentials/") == []

    # The plain summary names the failed target too.
    text = run_cli("backup", "-c", str(backup_config(pg, tmp_path, [backup])), env=env)
    assert text.returncode == 1
    assert f"target {label} failed" in text.stdout + text.stderr


def test_server_stopped_mid_upload_leaves_no_object_and_the_next_run_removes_the_upload(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path, start_cli: Any
) -> None:
    """Part 1 is on the server, the dump is held; the server dies (SIGKILL); the dump goes on.
    The local copy commits, the S3 target fails, and the upload it could not abort (the
    server was gone) is aborted by the next run of the job."""
    folder, prefix = tmp_path / "out", "crash"
    storage = [{"path": str(folder)}, s3_storage(s3, prefix)]
    held = HeldRun.start(pg, s3, tmp_path, storage, start_cli)
    process = held.process

    def first_part_uploaded() -> bool:
        uploads = s3.incomplete_uploads(f"{prefix}/")
        if not uploads:
            return False
        (key, upload_id), *_ = uploads
        parts = s3.client().list_parts(Bucket=s3.bucket, Key=key, UploadId=upload_id)
        return bool(parts.get("Parts"))

    wait_for(first_part_uploaded, what="part 1 on the server", process=process)
    (key, upload_id), *_ = s3.incomplete_uploads(f"{prefix}/")
    s3.stop(crash=True)
    try:
        held.gate.touch()
        stdout, stderr = process.communicate(timeout=120)
    finally:
        s3.start()  # the session's server: back for the tests after this one, whatever happens

    assert process.returncode == 1, stderr
    job = json.loads(stdout)["jobs"][0]
    local, remote = job["targets"]
    assert local["stored"]
    assert Path(local["file"]).is_file()
    assert not remote["stored"]
    assert job["error"].startswith(f"target s3://{s3.bucket}/{prefix}/ at {s3.endpoint} failed: ")
    assert s3.objects(f"{prefix}/") == []  # nothing under the final key, no manifest
    assert s3.incomplete_uploads(f"{prefix}/") == [(key, upload_id)]  # the abort could not reach it

    held.started.unlink()  # the gate stays open: the next run's fake runs straight through
    code, jobs = run_json(held.config, held.env)
    assert code == 0, jobs["pg"]["error"]
    assert s3.incomplete_uploads(f"{prefix}/") == []
    assert key not in s3.objects(f"{prefix}/")
    assert len(s3.objects(f"{prefix}/")) == 2  # the new backup and its manifest


def test_list_and_retention_work_per_target(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path
) -> None:
    """Three runs; the folder keeps 1, the bucket keeps 2 (its own policy); a run whose
    bucket target fails deletes nothing from the bucket. `list` and `prune` see both."""
    folder, prefix = tmp_path / "out", "retention"
    backup = {
        "name": "pg",
        "database": "postgres",
        "retention": {"keep_last": 1},
        "storage": [{"path": str(folder)}, s3_storage(s3, prefix, retention={"keep_last": 2})],
    }
    config = backup_config(pg, tmp_path, [backup])
    env = cli_env(pg, s3=s3)
    made = []
    for _ in range(3):
        code, jobs = run_json(config, env)
        assert code == 0, jobs["pg"]["error"]
        made.append(jobs["pg"]["targets"])
    locals_left = sorted(p.name for p in folder.glob("pg_*") if p.suffix != ".json")
    assert locals_left == [Path(made[2][0]["file"]).name]
    remote_left = [k for k in s3.objects(f"{prefix}/") if not k.endswith(".json")]
    assert remote_left == sorted(key_of(s3, m[1]["file"]) for m in made[1:])

    listed = run_cli("list", "-c", str(config), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["backups"]
    assert sorted((e["target"].split(":")[0], e["file"]) for e in entries) == sorted(
        [("local", made[2][0]["file"]), ("s3", made[1][1]["file"]), ("s3", made[2][1]["file"])]
    )
    assert all(e["verified"] for e in entries)
    taken = [e["taken_at"] for e in entries]
    assert taken == sorted(taken, reverse=True)

    # A run with wrong credentials and a stricter policy: the folder prunes, the bucket keeps.
    stricter = dict(backup, storage=[{"path": str(folder)}, s3_storage(s3, prefix)])
    stricter["retention"] = {"keep_last": 1}
    strict_config = write_config(
        tmp_path / "strict.yml",
        {"defaults": server_defaults(pg, tmp_path / "out"), "backups": [stricter]},
    )
    code, _ = run_json(strict_config, cli_env(pg, s3=s3, AWS_SECRET_ACCESS_KEY="wrong"))
    assert code == 1
    assert [k for k in s3.objects(f"{prefix}/") if not k.endswith(".json")] == remote_left

    dry = run_cli("prune", "-c", str(strict_config), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    oldest = f"s3://{s3.bucket}/{remote_left[0]}"
    assert f"would delete {oldest}" in dry.stdout
    assert s3.objects(f"{prefix}/").count(remote_left[0]) == 1
    pruned = run_cli("prune", "-c", str(strict_config), env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert f"deleted {oldest}" in pruned.stdout
    assert [k for k in s3.objects(f"{prefix}/") if not k.endswith(".json")] == remote_left[1:]
    assert remote_left[0] + ".json" not in s3.objects(f"{prefix}/")


def test_list_names_a_target_it_cannot_read_and_still_lists_the_others(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path
) -> None:
    backup = {
        "name": "pg",
        "database": "postgres",
        "storage": [{"path": str(tmp_path / "out")}, s3_storage(s3, "listing")],
    }
    config = backup_config(pg, tmp_path, [backup])
    code, _ = run_json(config, cli_env(pg, s3=s3))
    assert code == 0
    listed = run_cli(
        "list", "-c", str(config), "--json", env=cli_env(s3=s3, AWS_SECRET_ACCESS_KEY="x")
    )
    assert listed.returncode == 1
    body = json.loads(listed.stdout)
    assert [e["target"] for e in body["backups"]] == [f"local:{tmp_path / 'out'}"]
    label = f"s3://{s3.bucket}/listing/ at {s3.endpoint}"
    assert "SignatureDoesNotMatch" in body["errors"][label]
    assert f"error: target {label}: " in listed.stderr


def test_validate_connect_checks_every_target(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path
) -> None:
    good = s3_storage(s3, "validate")
    wrong = s3_storage(s3, "validate-wrong", secret_access_key="not-the-secret")
    missing = s3_storage(s3, "validate", bucket="no-such-bucket")
    backup = {"name": "pg", "database": "postgres", "storage": [good, wrong, missing]}
    config = backup_config(pg, tmp_path, [backup])
    config.chmod(0o600)
    result = run_cli("validate", "-c", str(config), "--connect", env=cli_env(pg, s3=s3))
    assert result.returncode == 1
    lines = [line.strip() for line in result.stdout.splitlines()]
    at = f" at {s3.endpoint}"
    assert f"target s3://{s3.bucket}/validate/{at}: OK" in lines
    wrong_line = next(line for line in lines if "validate-wrong" in line)
    assert "SignatureDoesNotMatch" in wrong_line
    assert "not-the-secret" not in result.stdout + result.stderr
    missing_line = next(line for line in lines if "no-such-bucket" in line)
    assert "NoSuchBucket" in missing_line


def test_interrupted_upload_is_aborted_and_a_second_run_is_refused_meanwhile(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path, start_cli: Any
) -> None:
    """SIGINT with the upload under way: it is aborted at once (the server is up),
    nothing is left under the key; while the first run held the target, a second was refused."""
    prefix = "interrupted"
    held = HeldRun.start(pg, s3, tmp_path, s3_storage(s3, prefix), start_cli)
    config, env, process = held.config, held.env, held.process
    wait_for(
        lambda: s3.incomplete_uploads(f"{prefix}/"), what="the upload to start", process=process
    )

    second = run_cli("backup", "-c", str(config), env=env)
    assert second.returncode != 0
    assert "another db-backup run holds" in second.stderr
    assert f"PID {process.pid}" in second.stderr

    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert json.loads(stdout)["jobs"][0]["status"] == "cancelled"
    assert s3.incomplete_uploads(f"{prefix}/") == []
    assert s3.objects(f"{prefix}/") == []


def test_what_a_killed_run_left_goes_under_the_jobs_lease_or_with_prune_without_leases(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path
) -> None:
    """What a killed run leaves (an upload never completed) is removed by the job's next run,
    under its lease — not by `prune`, which holds no lease while another machine may be
    uploading; with `leases: false` (one machine), `prune` removes it. An upload of another
    job, or a foreign one, in the same folder is never touched."""
    client = s3.client()

    def leave_uploads(prefix: str) -> tuple[str, list[str]]:
        ours = f"{prefix}/pg_20200101T000000Z.sql.gz"
        others = [f"{prefix}/pg_eu_20200101T000000Z.sql.gz", f"{prefix}/notes.txt"]
        for key in [ours, *others]:
            client.create_multipart_upload(Bucket=s3.bucket, Key=key)
        return ours, others

    leased = {"name": "pg", "database": "postgres", "storage": s3_storage(s3, "left-leased")}
    config = backup_config(pg, tmp_path, [leased])
    ours, others = leave_uploads("left-leased")
    pruned = run_cli("prune", "-c", str(config), env=cli_env(s3=s3))
    assert pruned.returncode == 0, pruned.stderr
    assert len(s3.incomplete_uploads("left-leased/")) == 3  # prune leaves them
    code, jobs = run_json(config, cli_env(pg, s3=s3))
    assert code == 0, jobs["pg"]["error"]
    remaining = sorted(key for key, _ in s3.incomplete_uploads("left-leased/"))
    assert remaining == sorted(others)  # the backup run took its own, under its lease

    alone = dict(leased, storage=s3_storage(s3, "left-alone", leases=False))
    ours, others = leave_uploads("left-alone")
    pruned = run_cli("prune", "-c", str(backup_config(pg, tmp_path, [alone])), env=cli_env(s3=s3))
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed s3://{s3.bucket}/{ours} (incomplete upload " in pruned.stdout
    assert sorted(key for key, _ in s3.incomplete_uploads("left-alone/")) == sorted(others)


def test_verify_reads_backups_in_the_bucket_and_finds_damage(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path
) -> None:
    """verify -c streams every backup from the bucket (no download to disk) through the same
    checks as local files: sha256 and size, the gzip/zstd stream, the end marker or a
    pg_restore read-through."""
    prefix = "verify"
    backups = [
        {"name": "plain", "database": "postgres", "storage": s3_storage(s3, prefix)},
        {
            "name": "zst",
            "database": "postgres",
            "compression": {"algorithm": "zstd"},
            "storage": s3_storage(s3, prefix),
        },
        {
            "name": "custom",
            "database": "postgres",
            "format": "custom",
            "storage": s3_storage(s3, prefix),
        },
    ]
    config = backup_config(pg, tmp_path, backups)
    code, jobs = run_json(config, cli_env(pg, s3=s3))
    assert code == 0
    env = cli_env(s3=s3)

    def verify() -> tuple[int, dict[str, str]]:
        result = run_cli("verify", "-c", str(config), env=env)
        lines = {}
        for line in result.stdout.splitlines():
            where = line.split()[1]
            lines[where.rstrip(":")] = line
        return result.returncode, lines

    code, lines = verify()
    assert code == 0
    files = {name: job["file"] for name, job in jobs.items()}
    assert set(lines) == set(files.values())
    assert "gzip stream complete" in lines[files["plain"]]
    assert "zstd stream complete" in lines[files["zst"]]
    assert "read through by pg_restore" in lines[files["custom"]]

    client = s3.client()

    def rewrite(url: str, change: Any) -> None:
        key = key_of(s3, url)
        data = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        client.put_object(Bucket=s3.bucket, Key=key, Body=change(data))

    rewrite(files["plain"], lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:])
    rewrite(files["custom"], lambda data: data[: len(data) // 2])
    code, lines = verify()
    assert code == 1
    assert lines[files["plain"]].startswith("FAILED")
    assert "the file changed" in lines[files["plain"]]
    assert "gzip stream is damaged" in lines[files["plain"]]
    assert "could not read it through" in lines[files["custom"]]
    assert lines[files["zst"]].startswith("OK")


def test_a_dump_that_fails_leaves_nothing_in_the_bucket(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path
) -> None:
    """pg_dump dies after 2 MiB: the upload is aborted, no object, no upload left."""
    prefix = "dump-fails"
    backup = {
        "name": "pg",
        "database": "postgres",
        "pg_dump_path": str(fake_pg_dump(tmp_path, "dies-halfway")),
        "storage": s3_storage(s3, prefix),
    }
    code, jobs = run_json(backup_config(pg, tmp_path, [backup]), cli_env(pg, s3=s3))
    assert code == 1
    assert "server closed the connection unexpectedly" in jobs["pg"]["error"]
    assert jobs["pg"]["targets"][0]["stored"] is False
    assert s3.objects(f"{prefix}/") == []
    assert s3.incomplete_uploads(f"{prefix}/") == []


def test_an_upload_left_by_a_killed_runner_is_removed_by_the_next_run(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path, start_cli: Any
) -> None:
    prefix = "runner-killed"
    held = HeldRun.start(pg, s3, tmp_path, s3_storage(s3, prefix), start_cli)
    wait_for(
        lambda: s3.incomplete_uploads(f"{prefix}/"),
        what="the upload to start",
        process=held.process,
    )
    held.process.kill()  # SIGKILL: nothing runs after it, the upload stays incomplete
    held.process.communicate()
    left = s3.incomplete_uploads(f"{prefix}/")
    assert len(left) == 1

    held.started.unlink()
    held.gate.touch()  # the next run's fake runs straight through
    result = run_cli("backup", "-c", str(held.config), env=held.env)
    assert result.returncode == 0, result.stderr
    assert f"removed s3://{s3.bucket}/{left[0][0]} (incomplete upload {left[0][1]})" in (
        result.stderr
    )
    assert s3.incomplete_uploads(f"{prefix}/") == []
    assert len(s3.objects(f"{prefix}/")) == 2  # the new backup and its manifest


def test_credentials_from_the_standard_aws_variables_or_a_named_profile(
    pg: ThrowawayCluster, s3: SeaweedServer, tmp_path: Path
) -> None:
    """No keys in the config: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY apply, or a profile
    of the shared credentials file, as for the aws CLI."""
    keyless = {
        key: value
        for key, value in s3_storage(s3, "aws-chain").items()
        if key not in ("access_key_id", "secret_access_key")
    }
    backup = {"name": "pg", "database": "postgres", "storage": keyless}
    code, jobs = run_json(backup_config(pg, tmp_path, [backup]), cli_env(pg, s3=s3))
    assert code == 0, jobs["pg"]["error"]
    assert jobs["pg"]["targets"][0]["stored"]

    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[backups]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n"
    )
    backup["storage"] = dict(keyless, profile="backups")
    env = cli_env(pg, AWS_SHARED_CREDENTIALS_FILE=str(credentials))  # no AWS_* keys at all
    code, jobs = run_json(backup_config(pg, tmp_path, [backup]), env)
    assert code == 0, jobs["pg"]["error"]
    backup["storage"] = dict(keyless, profile="nobody-has-this")
    code, jobs = run_json(backup_config(pg, tmp_path, [backup]), env)
    assert code == 1
    assert "nobody-has-this" in jobs["pg"]["error"]
    assert len(s3.objects("aws-chain/")) == 4  # two backups, two manifests
