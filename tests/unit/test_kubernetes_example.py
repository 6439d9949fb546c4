"""examples/kubernetes: valid against the Kubernetes API's schemas (kubernetes-validate bundles
them: offline, no cluster), and consistent with db-backup — an Indexed Job whose completions,
parallelism and DB_BACKUP_SHARDS agree, `--shard auto`, the night's run id, a non-root pod,
credentials from the Secret, and a config that db-backup accepts."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints
import pytest
from ruamel.yaml import YAML

from db_backup.config.load import load_config
from db_backup.config.schema import S3Storage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
KUBERNETES = "1.31.0"  # the newest schemas the validator bundles; completionMode etc. are GA


def documents() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(EXAMPLES.glob("*.yml")):
        for document in YAML(typ="safe").load_all(path.read_text()):
            found[document["kind"]] = document
    return found


def runner(cronjob: dict[str, Any]) -> dict[str, Any]:
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_every_manifest_is_valid_kubernetes() -> None:
    found = documents()
    assert set(found) == {"CronJob", "ConfigMap", "Secret"}
    for document in found.values():
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_validator_does_catch_a_mistake() -> None:
    broken = copy.deepcopy(documents()["CronJob"])
    broken["spec"]["jobTemplate"]["spec"]["completionsMode"] = "Indexed"  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_job_is_one_runner_per_shard() -> None:
    cronjob = documents()["CronJob"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    container = runner(cronjob)
    env = {item["name"]: item for item in container["env"]}
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == int(env["DB_BACKUP_SHARDS"]["value"])
    assert job["backoffLimitPerIndex"] >= 1  # a failed shard is retried alone
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    command = container["command"]
    assert command[1] == "backup"
    assert command[command.index("--shard") + 1] == "auto"
    # The night's Job name: shared by its pods, their retries and a second deployment.
    field = env["DB_BACKUP_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.labels['batch.kubernetes.io/job-name']"


def test_the_pod_runs_as_the_images_non_root_user_with_bounded_memory() -> None:
    cronjob = documents()["CronJob"]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = runner(cronjob)
    assert pod["securityContext"]["runAsNonRoot"] is True
    dockerfile = (EXAMPLES.parent / "Dockerfile").read_text()
    assert f"--uid {pod['securityContext']['runAsUser']} " in dockerfile
    assert re.search(rf"^USER {pod['securityContext']['runAsUser']}$", dockerfile, re.M)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert {"/tmp", env["DB_BACKUP_STATE_DIR"]} <= mounts  # what it writes is writable
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]


def test_the_config_is_db_backups_and_its_secrets_come_from_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = documents()
    text = found["ConfigMap"]["data"]["backup.yml"]
    [source] = runner(found["CronJob"])["envFrom"]
    assert source["secretRef"]["name"] == found["Secret"]["metadata"]["name"]
    variables = set(re.findall(r"\$\{(\w+)\}", text))
    assert variables
    assert variables <= set(found["Secret"]["stringData"])
    for name in variables:
        monkeypatch.setenv(name, "from-the-secret")
    mounted = runner(found["CronJob"])["volumeMounts"][0]["mountPath"]
    command = runner(found["CronJob"])["command"]
    assert command[command.index("--config") + 1] == f"{mounted}/backup.yml"
    config_file = tmp_path / "backup.yml"
    config_file.write_text(text)
    config = load_config(config_file)
    assert config.backups
    # the bucket: the shared catalog, and where the jobs' leases live
    assert all(isinstance(target, S3Storage) for b in config.backups for target in b.targets)
