"""Encrypted backups (age) against the real servers and the stock `age` tool: what db-backup
encrypts, `age -d` decrypts and psql restores; db-backup's own restore decrypts with either
recipient's identity (X25519, ssh-ed25519) from a folder and from the bucket; no plaintext on
any target, also while a dump is held mid-stream and after the run is interrupted; a wrong
identity, a flipped byte and a cut file fail verify and restore with nothing restored."""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from db_backup.mariadbcluster import ThrowawayMariaDB
from db_backup.pgcluster import ThrowawayCluster
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    mariadb_defaults,
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


def test_a_custom_format_dump_is_read_through_before_commit_and_by_stock_age_and_pg_restore(
    pg: ThrowawayCluster, keys: Keys, tmp_path: Path
) -> None:
    create_database(pg, "secret_shop", TABLE)
    out = tmp_path / "out"
    config = configure(tmp_path, pg, keys, {"path": str(out)}, format="custom")
    env = cli_env(pg)
    result = run_cli("backup", "-c", str(config), "--json", env=env)
    assert result.returncode == 0, result.stderr
    [job] = json.loads(result.stdout)["jobs"]
    assert job["file"].endswith(".dump.age")
    manifest = json.loads(Path(job["manifest"]).read_text())
    assert manifest["checks"] == ["sha256", "pg_restore read-through"]  # of the plaintext

    plain = subprocess.run(["age", "-d", "-i", str(keys.ssh_identity), job["file"]],
                           check=True, capture_output=True).stdout  # fmt: skip
    create_database(pg, "fc_by_stock_age")
    subprocess.run(
        [str(pg.client_bin("pg_restore")), "--no-owner", "-h", pg.host, "-p", str(pg.port),
         "-U", pg.superuser, "-d", "fc_by_stock_age"],
        input=plain, check=True, capture_output=True, env={**env, "PGPASSWORD": pg.password},
    )  # fmt: skip
    assert rows(pg, "fc_by_stock_age") == rows(pg, "secret_shop")
    verified = run_cli("verify", str(out), "--identity", str(keys.age_identity), env=env)
    assert verified.returncode == 0, verified.stdout
    assert "every chunk authenticated (age); custom-format dump read through by pg_restore" in (
        verified.stdout
    )


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


def holders_of(marker: bytes, folder: Path) -> list[str]:
    """Every file under `folder` whose bytes hold `marker`."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and marker in p.read_bytes()]


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "control"])
def test_no_plaintext_on_any_target_while_held_mid_dump_nor_after_an_interrupt(
    pg: ThrowawayCluster,
    s3: SeaweedServer,
    keys: Keys,
    tmp_path: Path,
    start_cli: StartCli,
    encrypted: bool,
) -> None:
    """Held after 12 MB, with two 5 MiB parts in the bucket: the folder (its .partial) is
    searched for this run's marker; the control run, without encryption, finds it there, so
    the search can fail. (The parts cannot be read back before the upload completes, and
    SeaweedFS compresses what it stores; every target is handed the same bytes as the folder,
    and the completed object is compared with the folder's file in the round-trip test.)"""
    marker = f"{MARKER}-{secrets.token_hex(4)}"
    rows_sql = f"SELECT g, '{marker} ' || g AS note FROM generate_series(1, 600000) g"  # noqa: S608
    create_database(pg, "secret_shop", f"CREATE TABLE t AS {rows_sql};")
    gate, held = tmp_path / "gate", tmp_path / "held"
    wrapper = holding_dump(tmp_path, pg.client_bin("pg_dump"), gate, held, after=12_000_000)
    out = tmp_path / "out"
    config = configure(
        tmp_path, pg, keys, [{"path": str(out)}, s3_storage(s3, "held", part_size="5MiB")],
        compression={"algorithm": "none"}, pg_dump_path=str(wrapper),
    )  # fmt: skip
    if not encrypted:
        document = json.loads(config.read_text())
        del document["backups"][0]["encryption"]
        write_config(config, document)
    process = start_cli("backup", "-c", str(config), env=cli_env(pg, s3=s3))
    wait_for(held.exists, what="the dump to be held mid-stream", process=process)
    wait_for(lambda: s3.parts_uploaded("held/") >= 2, what="two parts", process=process)
    found = holders_of(marker.encode(), out)
    if encrypted:
        assert found == []
    else:
        assert [Path(name).suffix for name in found] == [".partial"]
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


def test_restore_tests_decrypt_with_the_configured_identity_and_retention_keeps_age_files(
    pg: ThrowawayCluster, mariadb: ThrowawayMariaDB, keys: Keys, tmp_path: Path
) -> None:
    create_database(pg, "secret_shop", TABLE)
    script = f"CREATE TABLE t AS SELECT seq, '{MARKER}' AS note FROM seq_1_to_3000;"  # noqa: S608
    mariadb.sql(
        f"DROP DATABASE IF EXISTS sealed_my; CREATE DATABASE sealed_my; USE sealed_my; {script}"
    )
    out = tmp_path / "out"
    sealed = {"recipients": [keys.age_recipient]}
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, out, encryption=sealed, retention={"keep_last": 1}),
            "backups": [
                {"name": "shop", "database": "secret_shop"},
                {"name": "my", "database": "sealed_my",
                 **mariadb_defaults(mariadb, out, encryption=sealed)},
            ],
            "verify": {"identity_file": str(keys.ssh_identity)},  # not a recipient here
        },
    )  # fmt: skip
    env = cli_env(pg, mariadb=mariadb)
    for _ in range(2):  # a second run: retention removes the first run's .age files
        ran = run_cli("backup", "-c", str(config), env=env)
        assert ran.returncode == 0, ran.stderr
        names = sorted(path.name for path in out.iterdir() if not path.name.startswith("."))
        assert len(names) == 4, names  # two backups and their manifests
        assert all(name.endswith((".sql.gz.age", ".sql.gz.age.json")) for name in names)
    for path in out.glob("*.age"):
        assert MARKER.encode() not in gzip_free(path)

    wrong = run_cli("verify", "-c", str(config), "--restore", env=env)
    assert wrong.returncode == 1
    assert wrong.stdout.count("matches any recipient of this backup") == 2
    proved = run_cli("verify", "-c", str(config), "--restore", "--identity",
                     str(keys.age_identity), env=env)  # fmt: skip
    assert proved.returncode == 0, proved.stdout + proved.stderr
    assert proved.stdout.count("restore-tested") == 2
    restored = run_cli("restore", "-c", str(config), "-n", "my", "--to-database", "opened_my",
                       "--identity", str(keys.age_identity), env=env)  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert mariadb.sql("SELECT COUNT(*), MIN(note) FROM opened_my.t").split() == ["3000", MARKER]


def gzip_free(path: Path) -> bytes:
    """The stored bytes, and whatever gzip would make of them if they were not encrypted."""
    data = path.read_bytes()
    try:
        return data + gzip.decompress(data)
    except (OSError, EOFError):
        return data
