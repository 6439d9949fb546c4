"""The pure parts of restic targets: the config entry, file names, how snapshots are read
from `restic snapshots --json`, small files carried in tags, restic's errors in few words,
and the manifest a restic target gets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from db_backup.config.load import load_config, parse_config
from db_backup.config.schema import PostgresBackup, ResticStorage, is_local_repository
from db_backup.errors import ConfigError
from db_backup.model import JobKind
from db_backup.naming import extension
from db_backup.place import place_of
from db_backup.storage.restic import (
    HOST,
    LARGEST_CONTENT_TAG,
    content_tag,
    is_missing_repository,
    parse_snapshots,
    restic_reason,
    tag_value,
)


def test_a_restic_target_is_read_with_paths_made_absolute_and_secrets_masked(
    tmp_path: Path,
) -> None:
    text = """\
backups:
  - name: shop
    database: shop
    storage:
      - kind: restic
        repository: repos/db
        password_file: secrets/restic.txt
        env: {AWS_ACCESS_KEY_ID: "${KEY}", AWS_SECRET_ACCESS_KEY: "${SECRET}"}
        retention: {keep_daily: 14}
      - {kind: restic, repository: "rest:https://ops:hunter2@backup.example:8000/db", password: x}
"""
    (tmp_path / "b.yml").write_text(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEY", "k")
        patch.setenv("SECRET", "s3cr3t")
        config = load_config(tmp_path / "b.yml")
    first, second = config.backups[0].targets
    assert isinstance(first, ResticStorage)
    assert isinstance(second, ResticStorage)
    assert first.repository == str(tmp_path / "repos/db")
    assert first.password_file == str(tmp_path / "secrets/restic.txt")
    assert first.env == {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    assert "s3cr3t" in first.secrets
    assert "s3cr3t" not in repr(first)
    assert first.label == f"restic:{tmp_path / 'repos/db'}"
    assert "hunter2" not in second.label
    assert second.label.startswith("restic:rest:https://")
    assert second.repository.endswith("backup.example:8000/db")  # not made a path
    assert hash(first) != hash(second)
    assert {first: 1}[first] == 1
    assert place_of(first) == f"restic:{tmp_path / 'repos/db'}"


def test_restic_target_faults_are_located() -> None:
    text = """\
backups:
  - name: shop
    database: shop
    storage:
      - {kind: restic, repository: /r, prefix: "../x", read_data_subset: lots,
         env: {RESTIC_PASSWORD: x, "not a name": y}}
"""
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "b.yml", environ={})
    found = [str(issue) for issue in raised.value.issues]
    where = {m.split(": ", 2)[1]: m for m in found}
    assert sorted(where) == [
        "backups[0].storage[0].env",
        "backups[0].storage[0].password",
        "backups[0].storage[0].prefix",
        "backups[0].storage[0].read_data_subset",
    ]
    assert all(m.startswith(("b.yml:5:", "b.yml:6:")) for m in found)
    assert (
        "give password or password_file (restic always encrypts)"
        in where["backups[0].storage[0].password"]
    )
    env_issues = [m for m in found if ".env:" in m]
    assert len(env_issues) == 2
    assert "'RESTIC_PASSWORD'" in env_issues[0] + env_issues[1]
    assert "'not a name'" in env_issues[0] + env_issues[1]


@pytest.mark.parametrize(
    ("repository", "local"),
    [
        ("/srv/restic", True),
        ("relative/repo", True),
        ("local:/srv/restic", True),
        ("s3:https://host/bucket/path", False),
        ("sftp:user@host:/srv/restic", False),
        ("rest:http://host:8000/", False),
        ("rclone:remote:path", False),
    ],
)
def test_which_repositories_are_folders(repository: str, local: bool) -> None:
    assert is_local_repository(repository) is local


def test_a_restic_target_gets_the_dump_as_written_and_names_it_so() -> None:
    backup = PostgresBackup(
        name="shop",
        database="shop",
        storage=(ResticStorage(repository="/r", password="x"),),
        encryption=None,
    )
    assert extension(backup, JobKind.DATABASE, raw=True) == ".sql"
    assert extension(backup, JobKind.DATABASE) == ".sql.gz"
    custom = PostgresBackup(name="c", database="c", storage=backup.storage, format="custom")
    assert extension(custom, JobKind.DATABASE, raw=True) == ".dump"
    assert extension(custom, JobKind.GLOBALS, raw=True) == ".sql"


def snapshot(
    name: str, time: str, *tags: str, host: str = HOST, sid: str = ""
) -> dict[str, object]:
    return {
        "id": sid or f"{name}-{time}",
        "time": time,
        "paths": [f"/{name}"],
        "hostname": host,
        "tags": ["db-backup", *tags],
    }


def test_snapshots_are_ours_by_host_and_tag_newest_first_with_their_content() -> None:
    record = json.dumps({"job": "shop", "note": "a, b"}).encode()
    carried = content_tag(record)
    assert carried is not None
    assert "," not in carried
    listing = [
        snapshot("shop_1.sql", "2026-12-01T03:00:00Z", "job=shop"),
        snapshot("shop_1.sql.json", "2026-12-01T03:00:05Z", carried),
        snapshot("shop_1.sql.verify.json", "2026-12-01T04:00:00Z", sid="old"),
        snapshot("shop_1.sql.verify.json", "2026-12-02T04:00:00Z", sid="new"),
        snapshot("other.sql", "2026-12-01T03:00:00Z", host="laptop"),  # not our host
        {**snapshot("x.sql", "2026-12-01T03:00:00Z"), "tags": ["nightly"]},  # not our tag
        {**snapshot("y.sql", "2026-12-01T03:00:00Z"), "paths": ["/etc", "/home"]},
    ]
    found = parse_snapshots(json.dumps(listing).encode())
    assert sorted(found) == ["shop_1.sql", "shop_1.sql.json", "shop_1.sql.verify.json"]
    assert [s.id for s in found["shop_1.sql.verify.json"]] == ["new", "old"]
    assert found["shop_1.sql.json"][0].content == record
    assert found["shop_1.sql"][0].content is None
    assert parse_snapshots(b"null") == {}  # an empty repository


def test_only_a_small_file_travels_in_a_tag() -> None:
    compressible = b"0123456789" * 20_000  # 200 kB that packs into a few hundred bytes
    assert content_tag(compressible) is not None
    assert content_tag(random.Random(7).randbytes(LARGEST_CONTENT_TAG)) is None


def test_tag_values_keep_commas_and_spaces_out() -> None:
    assert tag_value("shop, eu") == "shop%2C%20eu"
    assert tag_value("db-backup 1.0") == "db-backup%201.0"


def test_restic_reason_is_its_fatal_line() -> None:
    tail = "repository abc opened | Fatal: wrong password or no key found"
    assert restic_reason(tail) == "wrong password or no key found"
    assert restic_reason("a | b | c | d") == "b; c; d"
    assert restic_reason("") == "no message"


def test_only_a_repository_that_is_not_there_counts_as_missing() -> None:
    prompt = "Is there a repository at the following location?"
    missing = (
        f"Fatal: unable to open config file: stat /r/config: no such file or directory | {prompt}"
    )
    on_s3 = f"Fatal: unable to open config file: Stat: The specified key does not exist. | {prompt}"
    refused = (
        'Fatal: unable to open config file: Stat: Get "http://127.0.0.1:1/b/?location=": '
        f"dial tcp 127.0.0.1:1: connect: connection refused | {prompt}"
    )
    assert is_missing_repository(missing)
    assert is_missing_repository(on_s3)
    assert not is_missing_repository(refused)  # unreachable is not missing: never `init`
    assert not is_missing_repository("Fatal: wrong password or no key found")


def test_secrets_of_a_restic_target_include_a_password_in_its_url() -> None:
    target = ResticStorage(
        repository="rest:https://ops:hunter2@backup.example:8000/db",
        password="x",
        env={"B2_ACCOUNT_KEY": "k3y"},
    )
    assert set(target.secrets) == {"x", "hunter2", "k3y"}
    assert "hunter2" not in place_of(target)
