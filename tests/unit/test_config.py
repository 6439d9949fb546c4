"""Config loading: merge, ${VAR} expansion, and one test per class of config error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from db_backup.config.load import load_config, parse_config
from db_backup.config.merge import deep_merge
from db_backup.config.sample import SAMPLE_CONFIG
from db_backup.config.schema import Duration, LocalStorage, PostgresBackup, S3Storage
from db_backup.config.variables import expand_env
from db_backup.errors import ConfigError

BASE = """\
defaults:
  host: db1.internal
  username: backup
  storage: {path: /var/backups/db, prefix: nightly}
  compression: {algorithm: gzip, level: 6}
backups:
"""


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "backup.yml", base_dir=Path("/etc/db-backup"), environ=env or {})
    return [str(issue) for issue in caught.value.issues]


def test_defaults_merge_under_each_backup_and_nested_keys_merge_key_by_key() -> None:
    config = parse_config(
        BASE
        + """\
  - name: shop
    database: shop
  - name: analytics
    host: db2.internal
    database: analytics
    storage: {prefix: hourly}
    compression: {level: 9}
""",
        environ={},
    )
    shop, analytics = config.backups
    assert (shop.host, shop.username, shop.port) == ("db1.internal", "backup", 5432)
    assert analytics.host == "db2.internal"
    assert analytics.username == "backup"
    target = analytics.targets[0]
    assert isinstance(target, LocalStorage)
    assert (target.path, target.prefix) == ("/var/backups/db", "hourly")
    assert (analytics.compression.algorithm, analytics.compression.level) == ("gzip", 9)
    assert shop.targets[0].prefix == "nightly"


def test_expand_env_forms() -> None:
    env = {"A": "alpha", "EMPTY": ""}
    assert expand_env("x${A}y", env) == ("xalphay", [])
    assert expand_env("${MISSING:-fallback}", env) == ("fallback", [])
    assert expand_env("${EMPTY:-fallback}", env) == ("fallback", [])  # as a shell does
    assert expand_env("pa$$word and $plain", env) == ("pa$word and $plain", [])
    assert expand_env("$${A}", env) == ("${A}", [])
    assert expand_env("${NOPE}${ALSO}", env) == ("", ["NOPE", "ALSO"])


def test_env_expands_in_every_string_value_and_converts_ports() -> None:
    config = parse_config(
        BASE + "  - name: shop\n    database: ${DB}\n    port: ${PORT}\n    password: ${PW}\n",
        environ={"DB": "shop_prod", "PORT": "6543", "PW": "s3cr'et:$\\"},
    )
    backup = config.backups[0]
    assert (backup.database, backup.port, backup.password) == ("shop_prod", 6543, "s3cr'et:$\\")


def test_missing_env_var_is_named_with_its_position() -> None:
    errors = errors_of(BASE + "  - name: shop\n    database: shop\n    password: ${SHOP_PW}\n")
    assert errors == [
        "backup.yml:9:15: backups[0].password: environment variable SHOP_PW is not set "
        "(use ${SHOP_PW:-default})"
    ]


def test_unset_variables_may_be_tolerated_by_commands_that_never_connect() -> None:
    text = BASE + "  - name: shop\n    database: shop\n    password: ${SHOP_PW}\n"
    config = parse_config(text, environ={}, require_env=False)
    assert config.backups[0].password is None  # "" → no password


def test_empty_password_means_libpq_defaults() -> None:
    config = parse_config(
        BASE + "  - name: shop\n    database: shop\n    password: ${PW:-}\n", environ={}
    )
    assert config.backups[0].password is None


def test_wrong_type_points_at_file_line_column_and_key() -> None:
    errors = errors_of(
        BASE + "  - name: a\n    database: a\n  - name: b\n    database: b\n    port: abc\n"
    )
    assert errors == ["backup.yml:11:11: backups[1].port: expected int, got \"abc\" (backup 'b')"]


def test_out_of_range_and_bad_choice() -> None:
    errors = errors_of(
        BASE + "  - name: a\n    database: a\n    port: 70000\n"
        "  - name: b\n    database: b\n    format: tar\n"
    )
    assert errors == [
        "backup.yml:9:11: backups[0].port: expected int <= 65535, got 70000 (backup 'a')",
        'backup.yml:12:13: backups[1].format: invalid value "tar"; expected one of: '
        "custom, plain (backup 'b')",
    ]


def test_unknown_keys_suggest_the_nearest_valid_one_everywhere() -> None:
    errors = errors_of(
        "concurency: 2\n"
        + BASE.replace("  username: backup\n", "  usernme: backup\n")
        + "  - name: a\n    database: a\n    storage: {prefx: x}\n"
    )
    assert errors == [
        "backup.yml:1:1: concurency: unknown key 'concurency'; did you mean 'concurrency'?",
        "backup.yml:4:3: defaults.usernme: unknown key 'usernme'; did you mean 'username'?",
        "backup.yml:10:15: backups[0].storage.prefx: unknown key 'prefx'; did you mean 'prefix'?",
    ]


def test_missing_required_key_points_at_the_entry() -> None:
    errors = errors_of(BASE + "  - name: a\n    host: x\n")
    assert errors == ["backup.yml:7:5: backups[0]: missing required key 'database' (backup 'a')"]


def test_missing_storage_is_reported() -> None:
    errors = errors_of("backups:\n  - name: a\n    database: a\n")
    assert errors == ["backup.yml:2:5: backups[0]: missing required key 'storage' (backup 'a')"]


def test_all_errors_are_reported_at_once_in_file_order() -> None:
    errors = errors_of(
        BASE + "  - name: a\n    database: a\n    port: x\n"
        "  - name: b\n    databse: b\n"
        "  - name: a\n    database: c\n"
    )
    assert [e.split(": ")[0] for e in errors] == [
        "backup.yml:9:11",
        "backup.yml:11:5",
        "backup.yml:12:11",
    ]
    assert "duplicate backup name 'a' (first at line 7)" in errors[2]


@pytest.mark.parametrize(
    "name",
    ["../etc", "a/b", ".hidden", "-dash", "with space", "ünï", "", "x" * 101],
)
def test_unsafe_job_names_are_refused(name: str) -> None:
    errors = errors_of(BASE + f'  - name: "{name}"\n    database: a\n')
    assert len(errors) == 1
    assert "invalid name" in errors[0]
    assert errors[0].startswith("backup.yml:7:")


def test_unsafe_prefix_is_refused() -> None:
    errors = errors_of(BASE + '  - name: a\n    database: a\n    storage: {prefix: "../up"}\n')
    assert len(errors) == 1
    assert "invalid prefix '../up'" in errors[0]


def test_password_and_password_file_at_one_level_conflict() -> None:
    errors = errors_of(
        BASE + "  - name: a\n    database: a\n    password: x\n    password_file: /run/s\n"
    )
    assert errors == [
        "backup.yml:10:20: backups[0].password_file: give either password or password_file, "
        "not both (backup 'a')"
    ]


def test_a_backups_password_file_replaces_an_inherited_password() -> None:
    text = BASE.replace("  username: backup\n", "  username: backup\n  password: ${PW}\n")
    config = parse_config(
        text + "  - name: a\n    database: a\n    password_file: secrets/a\n",
        base_dir=Path("/etc/db-backup"),
        environ={"PW": "x"},
    )
    assert config.backups[0].password is None
    assert config.backups[0].password_file == "/etc/db-backup/secrets/a"


def test_exclude_needs_the_wildcard() -> None:
    errors = errors_of(BASE + "  - name: a\n    database: a\n    exclude: [x]\n")
    assert len(errors) == 1
    assert 'exclude only applies with database: "*"' in errors[0]


def test_durations() -> None:
    config = parse_config(
        BASE + "  - name: a\n    database: a\n    connect_timeout: 1m30s\n    timeout: 2h\n",
        environ={},
    )
    assert (config.backups[0].connect_timeout, config.backups[0].timeout) == (90.0, 7200.0)
    errors = errors_of(BASE + "  - name: a\n    database: a\n    timeout: soon\n")
    assert len(errors) == 1
    assert errors[0].startswith("backup.yml:9:14: backups[0].timeout: expected a duration")


def test_yaml_syntax_error_has_a_position() -> None:
    errors = errors_of("backups:\n  - name: a\n   database: [unclosed\n")
    assert len(errors) == 1
    assert errors[0].startswith("backup.yml:3:")
    assert "YAML" in errors[0]


def test_duplicate_yaml_keys_are_an_error() -> None:
    errors = errors_of(BASE + "  - name: a\n    database: a\n    database: b\n")
    assert len(errors) == 1
    assert errors[0].startswith("backup.yml:9:5:")
    assert "duplicate key" in errors[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("- a\n- b\n", "expected a mapping"),
        ("backups: []\n", "no backups listed"),
        ("backups: [42]\n", "expected a mapping of backup settings"),
        ("defaults: {name: x}\nbackups: [{database: a}]\n", "`name` cannot be a default"),
    ],
)
def test_document_shape_errors(text: str, expected: str) -> None:
    errors = errors_of(text)
    assert len(errors) == 1
    assert expected in errors[0]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "conf" / "backup.yml"
    config_file.parent.mkdir()
    config_file.write_text(
        "backups:\n  - name: a\n    database: a\n    storage: {path: out}\n"
        "    pg_dump_path: bin/pg_dump\n"
    )
    backup = load_config(config_file).backups[0]
    assert isinstance(backup.targets[0], LocalStorage)
    assert backup.targets[0].path == str(tmp_path / "conf" / "out")
    assert isinstance(backup, PostgresBackup)
    assert backup.pg_dump_path == str(tmp_path / "conf" / "bin" / "pg_dump")


def test_secret_values_are_not_echoed_in_errors() -> None:
    errors = errors_of(BASE + "  - name: a\n    database: a\n    password: [hunter2]\n")
    assert len(errors) == 1
    assert "hunter2" not in errors[0]
    assert "backups[0].password" in errors[0]


def test_the_generated_sample_validates_as_written() -> None:
    config = parse_config(SAMPLE_CONFIG, environ={})
    assert [b.name for b in config.backups] == ["shop", "analytics", "everything-on-db3"]
    assert config.backups[2].exclude == ("postgres", "template*")


def test_the_samples_commented_blocks_validate_once_uncommented() -> None:
    """verify:, metrics: and notify: are commented out in the sample; each is meant to work
    as written once its `# ` is taken away (and its variables set)."""
    start = SAMPLE_CONFIG.index("# verify:")
    blocks = "\n".join(
        line[2:] if line.startswith("#  ") or (line.startswith("# ") and line.endswith(":")) else ""
        for line in SAMPLE_CONFIG[start:].splitlines()
    )
    env = {
        "SCRATCH_PASSWORD": "pw",
        "SMTP_PASSWORD": "pw",
        "HOOK_TOKEN": "token",
        "HC_UUID": "uuid",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
    }
    config = parse_config(SAMPLE_CONFIG[:start] + blocks + "\n", environ=env)
    assert config.verify.sandbox is not None
    assert config.metrics.pushgateway is not None
    assert [n.label.split(" ")[0] for n in config.notify] == [
        "slack",
        "email",
        "webhook",
        "healthchecks",
    ]


def test_deep_merge_replaces_lists_and_scalars() -> None:
    merged = deep_merge({"a": {"x": 1, "y": 2}, "l": [1]}, {"a": {"y": 3}, "l": [2]})
    assert merged == {"a": {"x": 1, "y": 3}, "l": [2]}


def test_environment_is_not_read_when_an_explicit_mapping_is_given() -> None:
    os.environ.setdefault("HOME", "/root")
    errors = errors_of(BASE + "  - name: a\n    database: ${HOME}\n", env={})
    assert "HOME is not set" in errors[0]


def test_literal_password_in_a_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    config_file = tmp_path / "backup.yml"
    config_file.write_text(
        BASE.replace("/var/backups/db", str(tmp_path))
        + "  - {name: a, database: a, password: hunter2}\n"
        "  - name: b\n    database: b\n    password: ${PW}\n"
        "  - name: c\n    database: c\n    storage:\n"
        "      - {kind: s3, bucket: vault, access_key_id: AKIA1, secret_access_key: s3cr3t}\n"
    )
    config_file.chmod(0o644)
    warnings = load_config(config_file, environ={"PW": "x"}).warnings
    assert warnings == (
        f"{config_file} is readable by other users (mode 0644) and holds a literal secret "
        "(line 7, 14); chmod 600 it, or use ${VAR} or password_file",
    )
    assert "hunter2" not in warnings[0]
    assert "s3cr3t" not in warnings[0]
    config_file.chmod(0o600)
    assert load_config(config_file, environ={"PW": "x"}).warnings == ()


def test_world_readable_password_file_is_warned_about(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config_file = tmp_path / "backup.yml"
    config_file.write_text(BASE + f"  - name: a\n    database: a\n    password_file: {secret}\n")
    config_file.chmod(0o600)
    secret.chmod(0o644)
    assert load_config(config_file, environ={}).warnings == (
        f"password_file {secret} is readable by every user (mode 0644); chmod 600 it",
    )
    secret.chmod(0o640)
    assert load_config(config_file, environ={}).warnings == ()


@pytest.mark.parametrize(
    ("compression", "expected"),
    [
        ("{algorithm: gzip, level: 10}", "gzip levels are 1 to 9, got 10"),
        ("{algorithm: gzip, level: 0}", "gzip levels are 1 to 9, got 0"),
        ("{algorithm: zstd, level: 20}", "zstd levels are 1 to 19, got 20"),
        ("{algorithm: lz4}", 'invalid value "lz4"; expected one of: gzip, none, zstd'),
        ("{threads: 0}", "expected int >= 1, got 0"),
    ],
)
def test_compression_settings_are_checked(compression: str, expected: str) -> None:
    errors = errors_of(BASE + f"  - name: a\n    database: a\n    compression: {compression}\n")
    assert len(errors) == 1
    assert expected in errors[0], errors[0]


def test_custom_format_cannot_use_zstd() -> None:
    errors = errors_of(
        BASE + "  - name: a\n    database: a\n    format: custom\n"
        "    compression: {algorithm: zstd}\n"
    )
    assert len(errors) == 1
    assert "format: custom is compressed by pg_dump itself, with gzip (or none)" in errors[0]


def test_custom_format_uses_pg_dumps_own_level_unless_set() -> None:
    from db_backup.sources.postgres import custom_format_level

    text = "backups:\n  - name: a\n    database: a\n    format: custom\n    storage: {path: /b}\n"
    assert custom_format_level(parse_config(text, environ={}).backups[0]) is None
    explicit = text + "    compression: {level: 9}\n"
    assert custom_format_level(parse_config(explicit, environ={}).backups[0]) == 9
    off = text + "    compression: {algorithm: none}\n"
    assert custom_format_level(parse_config(off, environ={}).backups[0]) == 0


def test_secrets_never_show_in_a_repr() -> None:
    config = parse_config(
        """\
backups:
  - name: a
    database: a
    password: hunter2
    storage:
      - {path: /backups}
      - {kind: s3, bucket: vault, access_key_id: AKIA1, secret_access_key: s3cr3t}
""",
        environ={},
    )
    shown = repr(config)
    assert "hunter2" not in shown
    assert "s3cr3t" not in shown
    assert "password=***" in shown
    assert "secret_access_key=***" in shown
    assert "access_key_id='AKIA1'" in shown  # not a secret: it names the key


def test_storage_merges_with_defaults_only_for_one_target_of_the_same_kind() -> None:
    config = parse_config(
        """\
defaults:
  storage: {path: /backups, prefix: nightly}
backups:
  - {name: inherits, database: a}
  - {name: same-kind, database: a, storage: {prefix: hourly}}
  - {name: other-kind, database: a, storage: {kind: s3, bucket: vault}}
  - name: a-list
    database: a
    storage: [{path: /elsewhere}, {kind: s3, bucket: vault, prefix: pg}]
""",
        environ={},
    )
    targets = {b.name: [t.label for t in b.targets] for b in config.backups}
    assert targets == {
        "inherits": ["local:/backups"],
        "same-kind": ["local:/backups"],
        "other-kind": ["s3://vault/"],
        "a-list": ["local:/elsewhere", "s3://vault/pg/"],
    }
    assert config.backups[1].targets[0].prefix == "hourly"  # merged over /backups


def test_storage_problems_are_located_per_target() -> None:
    def problems(storage: str) -> list[str]:
        text = f"backups:\n  - name: a\n    database: a\n    storage:\n{storage}"
        with pytest.raises(ConfigError) as raised:
            parse_config(text, "b.yml", environ={})
        return [str(issue) for issue in raised.value.issues]

    found = problems(
        "      - {path: /backups}\n"
        "      - {kind: s3, bucket: vault, prefix: ../up, part_size: 1MiB, access_key_id: X}\n"
    )
    assert [m.split(": ", 2)[1] for m in found] == [
        "backups[0].storage[1].prefix",
        "backups[0].storage[1].part_size",
        "backups[0].storage[1].access_key_id",
    ]
    assert all(m.startswith("b.yml:6:") for m in found)
    assert "S3 parts must be between 5MiB and 5GiB" in found[1]
    assert "give both access_key_id and secret_access_key, or neither" in found[2]

    # An unknown kind is named as such (not as keys a local folder would not know).
    assert problems("      - {kind: ftp, host: x}\n") == [
        'b.yml:5:16: backups[0].storage[0].kind: invalid value "ftp"; '
        "expected one of: local, s3, restic (backup 'a')"
    ]
    assert problems("      - {kind: s3, bucket: vault, bukket: x}\n") == [
        "b.yml:5:35: backups[0].storage[0].bukket: unknown key 'bukket'; did you mean 'bucket'?"
    ]


def test_empty_s3_keys_mean_the_standard_aws_chain() -> None:
    text = """\
backups:
  - name: a
    database: a
    storage: {kind: s3, bucket: vault, access_key_id: "${KEY:-}", secret_access_key: "${SECRET:-}"}
"""
    (target,) = parse_config(text, environ={}).backups[0].targets
    assert isinstance(target, S3Storage)
    assert (target.access_key_id, target.secret_access_key) == ("", "")  # both or neither: ok
    with pytest.raises(ConfigError, match="give both access_key_id and secret_access_key"):
        parse_config(text, environ={"KEY": "AKIA1"})


def test_two_spellings_of_one_folder_are_the_same_target(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "store")
    text = f"""\
backups:
  - name: a
    database: a
    storage: [{{path: {tmp_path}/link}}, {{path: {tmp_path}/x/../store}}]
"""
    (error,) = errors_of(text)
    assert error.startswith("backup.yml:4:")
    assert "backups[0].storage[1]: the same target twice" in error
    assert f"local:{tmp_path}/link and local:{tmp_path}/x/../store" in error
    assert f"are both {tmp_path}/store" in error


def test_two_spellings_of_one_bucket_are_the_same_target() -> None:
    text = """\
backups:
  - name: a
    database: a
    storage:
      - {kind: s3, bucket: b, prefix: p, endpoint_url: "http://127.0.0.1:58333"}
      - {kind: s3, bucket: b, prefix: /p/, endpoint_url: "HTTP://127.0.0.1:58333/"}
      - {kind: s3, bucket: b, prefix: q, endpoint_url: "http://127.0.0.1:58333"}
"""
    (error,) = errors_of(text)
    assert "backups[0].storage[1]: the same target twice" in error
    assert "are both http://127.0.0.1:58333/b/p/" in error


def test_backups_whose_file_names_would_collide_are_refused_naming_both(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "store")
    text = f"""\
backups:
  - {{name: nightly_a, database: x, storage: {{path: {tmp_path}/store}}}}
  - {{name: a, database: y, storage: {{path: {tmp_path}/link, prefix: nightly}}}}
  - {{name: b, database: y, storage: {{path: {tmp_path}/store, prefix: nightly}}}}
"""
    (error,) = errors_of(text)
    assert error.startswith("backup.yml:3:")
    assert "backups[1].name: backups 'nightly_a' and 'a' would write files" in error
    assert "(nightly_a_<time>...)" in error


def test_a_backup_named_like_a_wildcard_job_collides_unless_excluded() -> None:
    text = (
        BASE
        + """\
  - {name: all, database: "*"}
  - {name: all.shop, database: shop}
  - {name: other, database: "*", exclude: [kept]}
  - {name: other.kept, database: kept}
"""
    )
    (error,) = errors_of(text)  # other.kept is excluded from `other`: no collision
    assert "backups[1].name: backup 'all.shop' would write files of the same names" in error
    assert "as backup 'all' (database: \"*\")" in error
    assert "for a database named 'shop'" in error


def test_a_duplicate_key_error_never_shows_the_values() -> None:
    (error,) = errors_of(
        BASE + "  - name: a\n    database: a\n    password: first-secret\n"
        "    password: second-secret\n"
    )
    assert error == 'backup.yml:10:5: YAML: found duplicate key "password"'


def test_yaml_merge_keys_work_and_errors_point_where_the_value_is_written() -> None:
    text = """\
x-server: &server
  host: db9
  port: 6543
  storage: {path: /b}
backups:
  - <<: *server
    name: a
    database: a
  - {<<: *server, name: b, database: b, port: 7000}
"""
    a, b = parse_config(text, environ={}).backups
    assert (a.host, a.port, b.host, b.port) == ("db9", 6543, "db9", 7000)
    (error,) = errors_of(text.replace("6543", "not-a-port"))
    assert error.startswith("backup.yml:3:9: backups[0].port: expected int")


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A:-${B}}", {"A": "pw"}, "pw"),
        ("${A:-${B}}", {"B": "b"}, "b"),
        ("${BK:-${HOME}/bk}", {"HOME": "/home/x"}, "/home/x/bk"),
        ("${E:-def}", {"E": ""}, "def"),
        ("${E-def}", {"E": ""}, ""),
        ("${U-def}", {}, "def"),
        ("${A:-${B:-${C:-deep}}}!", {}, "deep!"),
        ("$${A:-x}", {"A": "a"}, "${A:-x}"),
    ],
)
def test_variables_expand_as_a_shell_expands_them(
    value: str, env: dict[str, str], expected: str
) -> None:
    assert expand_env(value, env) == (expected, [])


def test_an_unused_default_needs_no_variable_and_a_used_one_does() -> None:
    assert expand_env("${A:-${MISSING}}", {"A": "a"}) == ("a", [])
    assert expand_env("${A:-${MISSING}}", {}) == ("", ["MISSING"])


@pytest.mark.parametrize("value", ["${A:?error}", "${A", "${A:-x", "${}", "${1}", "${A/x/y}"])
def test_other_forms_are_refused_where_they_are_written(value: str) -> None:
    (error,) = errors_of(BASE + f'  - name: a\n    database: "{value}"\n')
    assert error.startswith("backup.yml:8:15: backups[0].database: ")
    assert "${VAR}, ${VAR:-default} or ${VAR-default}" in error or "not closed" in error


def test_a_refused_form_in_a_secret_does_not_echo_it() -> None:
    (error,) = errors_of(BASE + '  - name: a\n    database: a\n    password: "pa${ss"\n')
    assert "pa$" not in error
    assert "backups[0].password: unsupported ${...}" in error


def test_only_the_selected_backups_need_their_variables() -> None:
    text = BASE + (
        "  - {name: a, database: a, password: '${A_PW}'}\n"
        "  - {name: b, database: b, password: '${OTHER_PW}'}\n"
    )
    config = parse_config(text, environ={"A_PW": "x"}, only=["a"])
    assert [b.name for b in config.backups] == ["a", "b"]
    with pytest.raises(ConfigError, match="OTHER_PW is not set"):
        parse_config(text, environ={"A_PW": "x"}, only=["b"])
    with pytest.raises(ConfigError, match="OTHER_PW is not set"):
        parse_config(text, environ={"A_PW": "x"})  # validate: every backup
    inherited = "defaults:\n  password: ${SHARED}\n  storage: {path: /b}\nbackups:\n" + (
        "  - {name: a, database: a, password: '${A_PW}'}\n  - {name: b, database: b}\n"
    )
    parse_config(inherited, environ={"A_PW": "x"}, only=["a"])  # a sets its own
    with pytest.raises(ConfigError, match="SHARED is not set"):
        parse_config(inherited, environ={"A_PW": "x"}, only=["b"])


def test_a_hostile_document_is_refused_quickly(tmp_path: Path) -> None:
    aliases = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)
    ]
    (error,) = errors_of("\n".join([*aliases, "backups: *a8"]) + "\n")
    assert "more than 100000 values once YAML aliases are expanded" in error
    (error,) = errors_of("backups: " + "[" * 500 + "]" * 500 + "\n")
    assert error == "backup.yml: YAML: nested too deeply"
    (error,) = errors_of("backups: []\n" + "#" * 1_000_001)
    assert "a config may have 1000000 at most" in error


def test_encryption_recipients_come_checked_from_the_list_and_the_file(tmp_path: Path) -> None:
    import pyrage

    ops = str(pyrage.x25519.Identity.generate().to_public())
    recovery = str(pyrage.x25519.Identity.generate().to_public())
    (tmp_path / "recipients.txt").write_text(f"# offline recovery key\n\n  {recovery}\n{ops}\n")
    text = f"""\
defaults:
  storage: {{path: /b}}
  encryption: {{recipients: ["{ops}"], recipients_file: recipients.txt}}
backups:
  - {{name: shop, database: shop}}
"""
    [backup] = parse_config(text, "b.yml", base_dir=tmp_path, environ={}).backups
    assert backup.encryption is not None
    assert backup.encryption.recipients == (ops, recovery)  # in order, once each


def test_bad_recipients_are_located_and_a_secret_key_is_never_echoed(tmp_path: Path) -> None:
    secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
    (tmp_path / "empty.txt").write_text("# nobody yet\n")
    text = f"""\
backups:
  - name: shop
    database: shop
    storage: {{path: /b}}
    encryption:
      recipients: ["{secret}", "age1nope", "ssh-dss AAAA"]
  - name: bare
    database: bare
    storage: {{path: /b}}
    encryption: {{}}
  - name: hollow
    database: hollow
    storage: {{path: /b}}
    encryption: {{recipients_file: empty.txt}}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "b.yml", base_dir=tmp_path, environ={})
    found = [str(issue) for issue in caught.value.issues]
    assert found[0].startswith("b.yml:6:20: backups[0].encryption.recipients[0]: this is a secret")
    assert "not a valid recipient" in found[1]
    assert "not an age recipient (age1…) nor an SSH public key" in found[2]
    assert (
        "encryption: give recipients (public keys) or a recipients_file (backup 'bare')"
        in (found[3])
    )
    assert "encryption.recipients_file: holds no recipient (backup 'hollow')" in found[4]
    assert not any(secret[16:] in line for line in found)


def test_a_private_key_named_as_recipients_file_is_refused_without_a_line_of_it(
    tmp_path: Path,
) -> None:
    key = tmp_path / "id_ed25519"
    secret_line = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
    key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secret_line}\n"
                   "-----END OPENSSH PRIVATE KEY-----\n")  # fmt: skip
    text = (
        "backups:\n  - {name: shop, database: shop, storage: {path: /b}, "
        "encryption: {recipients_file: id_ed25519}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "b.yml", base_dir=tmp_path, environ={})
    [issue] = [str(issue) for issue in caught.value.issues]
    assert f"{key} is a private key file: give the public key (.pub) instead" in issue
    assert secret_line[:20] not in issue


def test_schedules_and_the_zone_are_checked_where_they_are_written() -> None:
    text = """\
timezone: Europe/Berlin
defaults:
  storage: {path: /b}
  schedule: "0 2 * *"
backups:
  - {name: nightly, database: a}
  - {name: often, database: b, schedule: "@every 6h", jitter: 10m}
verify: {schedule: "0 5 * * 0"}
prune: {schedule: "61 * * * *"}
"""
    found = errors_of(text)
    assert found[0].startswith("backup.yml:4:13: defaults.schedule: not a cron expression")
    assert found[0].endswith("(backup 'nightly')")
    assert found[1].startswith(
        "backup.yml:9:19: prune.schedule: not a cron expression (Bad minute)"
    )
    assert len(found) == 2
    fixed = text.replace('"0 2 * *"', '"0 2 * * *"').replace("61 *", "0 6")
    config = parse_config(fixed, "backup.yml", environ={})
    assert [b.schedule for b in config.backups] == ["0 2 * * *", "@every 6h"]
    assert config.backups[1].jitter == Duration(600)
    assert (config.timezone, config.verify.schedule, config.prune.schedule) == (
        "Europe/Berlin", "0 5 * * 0", "0 6 * * *",
    )  # fmt: skip
    assert errors_of("timezone: Mars/Olympus\n" + fixed.split("\n", 1)[1]) == [
        "backup.yml:1:11: timezone: unknown time zone 'Mars/Olympus' (e.g. Europe/Berlin, UTC)"
    ]
