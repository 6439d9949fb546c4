"""Encrypted backups (age) against the real servers and the stock `age` tool: what db-backup
encrypts, `age -d` decrypts and psql restores; db-backup's own restore decrypts with either
recipient's identity (X25519, ssh-ed25519) from a folder and from the bucket; no plaintext on
any target, also while a dump is held mid-stream and after the run is interrupted; a wrong
identity, a flipped byte and a cut file fail verify and restore with nothing restored."""

from __future__ import annotations

import gzip
import hashlib
import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    run_cli,
    s3_storage,
    server_defaults,
    write_config,
)
from tests.fakes import holding_dump
from tests.seaweed import SeaweedServer
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

MARKER = "plaintext-marker-5be1c0de"  # in every row: found in any byte that leaked
TABLE = f"CREATE TABLE t AS SELECT g, '{MARKER} ' || g AS note FROM generate_series(1, 20000) g;"  # noqa: S608


@dataclass(frozen=True)
class Keys:
    age_identity: Path
    age_recipient: str
    ssh_identity: Path
    ssh_recipient: str
    stranger: Path  # an identity that is no recipient


def _age_identity(path: Path) -> str:
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    recipient = _age_identity(folder / "ops.txt")
    _age_identity(folder / "stranger.txt")
    ssh = folder / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "recovery", "-f", str(ssh)],
        check=True,
    )
    return Keys(
        folder / "ops.txt",
        recipient,
        ssh,
        Path(f"{ssh}.pub").read_text().strip(),
        folder / "stranger.txt",
    )


def rows(pg: ThrowawayCluster, database: str) -> tuple[int, str]:
    with psycopg.connect(**pg.conninfo(database)) as conn:
        found = conn.execute("SELECT count(*), md5(string_agg(note, ',' ORDER BY g)) FROM t")
        count, digest = found.fetchone() or (0, "")
    return count, digest


def exists(pg: ThrowawayCluster, database: str) -> bool:
    with psycopg.connect(**pg.conninfo()) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        return found.fetchone() is not None


def configure(tmp_path: Path, pg: ThrowawayCluster, keys: Keys, storage: Any, **extra: Any) -> Path:
    recipients_file = tmp_path / "recipients.txt"
    recipients_file.write_text(f"# the offline recovery key\n{keys.ssh_recipient}\n\n")
    backup = {
        "name": "shop",
        "database": "secret_shop",
        "storage": storage,
        "encryption": {"recipients": [keys.age_recipient], "recipients_file": "recipients.txt"},
        **extra,
    }
    return write_config(
        tmp_path / "backup.yml",
        {"defaults": server_defaults(pg, tmp_path / "out"), "backups": [backup]},
    )


def test_stock_age_and_db_backup_decrypt_with_either_identity_from_folder_and_bucket(
    pg: ThrowawayCluster, s3: SeaweedServer, keys: Keys, tmp_path: Path
) -> None:
    create_database(pg, "secret_shop", TABLE)
    out = tmp_path / "out"
    config = configure(tmp_path, pg, keys, [{"path": str(out)}, s3_storage(s3, "enc")])
    env = cli_env(pg, s3=s3)
    result = run_cli("backup", "-c", str(config), "--json", env=env)
    assert result.returncode == 0, result.stderr
    [job] = json.loads(result.stdout)["jobs"]
    stored = Path(job["file"])
    assert stored.name.endswith(".sql.gz.age")
    assert stored.stat().st_mode & 0o777 == 0o600
    manifest = json.loads(Path(job["manifest"]).read_text())
    assert manifest["encryption"] == "age"
    assert manifest["stages"][-1] == {
        "stage": "encrypt",
        "method": "age",
        "recipients": [keys.age_recipient, keys.ssh_recipient],
    }
    ciphertext = stored.read_bytes()
    assert ciphertext.startswith(b"age-encryption.org/v1\n")
    assert hashlib.sha256(ciphertext).hexdigest() == manifest["sha256"]
    assert len(ciphertext) == manifest["stored_bytes"]
    [key] = [k for k in s3.objects("enc/") if k.endswith(".age")]
    assert s3.download(key, tmp_path / "from-bucket.age").read_bytes() == ciphertext

    # the stock tool, without db-backup: age -d | gunzip | psql
    plain = subprocess.run(
        ["age", "-d", "-i", str(keys.age_identity), str(stored)], check=True, capture_output=True
    ).stdout
    create_database(pg, "by_stock_age")
    subprocess.run(
        [str(pg.client_bin("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1",
         "-h", pg.host, "-p", str(pg.port), "-U", pg.superuser, "-d", "by_stock_age"],
        input=gzip.decompress(plain), check=True, capture_output=True,
        env={**env, "PGPASSWORD": pg.password},
    )  # fmt: skip
    assert rows(pg, "by_stock_age") == rows(pg, "secret_shop")

    # db-backup's own restore, each identity, each target
    bucket = s3_storage(s3, "enc")
    for identity, target, database in (
        (keys.ssh_identity, f"local:{out}", "from_folder"),
        (keys.age_identity, f"s3://{bucket['bucket']}/enc/ at {s3.endpoint}", "from_bucket"),
    ):
        restored = run_cli("restore", "-c", str(config), "-n", "shop", "--to-database", database,
                           "--from", target, "--identity", str(identity), env=env)  # fmt: skip
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert rows(pg, database) == rows(pg, "secret_shop")

    verified = run_cli("verify", "-c", str(config), env=env)
    assert verified.returncode == 0, verified.stdout
    assert "content not checked: the backup is encrypted" in verified.stdout
    verified = run_cli(
        "verify", "-c", str(config), env={**env, "DB_BACKUP_IDENTITY": str(keys.ssh_identity)}
    )
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.count("every chunk authenticated (age)") == 2
    assert "dump complete" in verified.stdout
    listed = run_cli("list", "-c", str(config), "--json", env=env)
    assert stored.name in listed.stdout


def test_a_wrong_identity_a_flipped_byte_and_a_cut_file_restore_nothing(
    pg: ThrowawayCluster, keys: Keys, tmp_path: Path
) -> None:
    create_database(pg, "secret_shop", TABLE)
    config = configure(tmp_path, pg, keys, {"path": str(tmp_path / "out")})
    env = cli_env(pg)
    assert run_cli("backup", "-c", str(config), env=env).returncode == 0
    [stored] = (tmp_path / "out").glob("*.age")
    good = stored.read_bytes()

    def attempt(identity: Path, database: str) -> tuple[str, str]:
        verified = run_cli("verify", "-c", str(config), "--identity", str(identity), env=env)
        restored = run_cli("restore", "-c", str(config), "-n", "shop", "--to-database",
                           database, "--identity", str(identity), env=env)  # fmt: skip
        assert verified.returncode == 1, verified.stdout
        assert restored.returncode == 1, restored.stdout + restored.stderr
        assert "nothing was restored" in restored.stderr
        assert not exists(pg, database)
        return verified.stdout, restored.stderr

    said = attempt(keys.stranger, "wrong_key")
    for text in said:
        assert f"no identity in {keys.stranger} matches any recipient of this backup" in text
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    stored.write_bytes(bytes(flipped))
    for text in attempt(keys.age_identity, "flipped"):
        assert "a chunk failed authentication" in text
    stored.write_bytes(good[: len(good) * 2 // 3])
    for text in attempt(keys.age_identity, "cut"):
        assert "a chunk failed authentication" in text or "cut short" in text


def test_no_plaintext_on_any_target_while_held_mid_dump_nor_after_an_interrupt(
    pg: ThrowawayCluster, s3: SeaweedServer, keys: Keys, tmp_path: Path, start_cli: StartCli
) -> None:
    create_database(pg, "secret_shop", TABLE + "INSERT INTO t SELECT t.g + 20000 * k, t.note "
                    "FROM t, generate_series(1, 30) k;")  # fmt: skip
    gate, held = tmp_path / "gate", tmp_path / "held"
    wrapper = holding_dump(tmp_path, pg.client_bin("pg_dump"), gate, held, after=3_000_000)
    out = tmp_path / "out"
    config = configure(
        tmp_path, pg, keys, [{"path": str(out)}, s3_storage(s3, "held", part_size="5MiB")],
        compression={"algorithm": "none"}, pg_dump_path=str(wrapper),
    )  # fmt: skip
    process = start_cli("backup", "-c", str(config), env=cli_env(pg, s3=s3))
    wait_for(held.exists, what="the dump to be held mid-stream", process=process)
    wait_for(
        lambda: any(p.stat().st_size > 1_000_000 for p in out.glob("*.partial")),
        what="the partial file to hold what passed",
        process=process,
    )
    for path in out.iterdir():
        assert MARKER.encode() not in path.read_bytes(), path
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    assert [p.name for p in out.iterdir()] == [".db-backup.lock"]  # no partial file left
    assert s3.objects("held/") == []
    assert s3.incomplete_uploads("held/") == []


def test_keygen_makes_an_identity_the_stock_age_decrypts_with(tmp_path: Path) -> None:
    identity = tmp_path / "key.txt"
    made = run_cli("keygen", "-o", str(identity))
    assert made.returncode == 0, made.stderr
    assert identity.stat().st_mode & 0o777 == 0o600
    recipient = made.stdout.strip().removeprefix("Public key: ")
    assert recipient.startswith("age1")
    assert "AGE-SECRET-KEY-1" not in made.stdout + made.stderr  # the secret stays in the file
    sealed = subprocess.run(
        ["age", "-r", recipient], input=b"hello", capture_output=True, check=True
    )
    opened = subprocess.run(["age", "-d", "-i", str(identity)], input=sealed.stdout,
                            capture_output=True, check=True)  # fmt: skip
    assert opened.stdout == b"hello"
    again = run_cli("keygen", "-o", str(identity))
    assert again.returncode == 1
    assert "exists already; not overwritten" in again.stderr
    identity.chmod(0o644)
    warned = run_cli("verify", str(tmp_path), "--identity", str(identity))
    assert f"identity file {identity} may be read by others" in warned.stderr
