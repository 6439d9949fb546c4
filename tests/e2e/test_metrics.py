"""Prometheus metrics after a run: a textfile checked by promtool, values equal to the
manifests', other jobs' series kept by a partial run, replaced atomically; a Pushgateway; and
the example alert rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from db_backup.pgcluster import ThrowawayCluster, free_port
from tests.conftest import REPO, cli_env, create_database, run_cli, server_defaults, write_config
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

PROMTOOL = shutil.which("promtool") or "promtool"  # Debian's prometheus package (.ci/run)
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "prometheus-pushgateway"


def promtool(*args: str, text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], input=text, capture_output=True, text=True, check=False, timeout=60
    )


def samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def labels(job: str, pg: ThrowawayCluster, database: str) -> str:
    return f'backup="{job}",database="{database}",server="{pg.host}:{pg.port}"'


def configure(pg: ThrowawayCluster, tmp_path: Path, metrics: dict[str, Any]) -> Path:
    create_database(pg, "metrics_a", "CREATE TABLE t AS SELECT generate_series(1, 10) AS n;")
    create_database(pg, "metrics_b", "CREATE TABLE t AS SELECT generate_series(1, 20) AS n;")
    return write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [
                {"name": "a", "database": "metrics_a"},
                {"name": "b", "database": "metrics_b"},
            ],
            "metrics": metrics,
        },
    )


def test_the_textfile_describes_every_job_and_a_partial_run_keeps_the_others(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    textfile = tmp_path / "db_backup.prom"
    config = configure(pg, tmp_path, {"textfile": "db_backup.prom"})  # relative to the config
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    jobs = {job["job"]: job for job in json.loads(result.stdout)["jobs"]}
    text = textfile.read_text()
    checked = promtool("check", "metrics", text=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # not even a lint warning
    found = samples(text)
    for job, database in (("a", "metrics_a"), ("b", "metrics_b")):
        manifest = json.loads(Path(jobs[job]["manifest"]).read_text())
        named = labels(job, pg, database)
        at = datetime.fromisoformat(manifest["finished_at"]).timestamp()
        assert found[f"db_backup_last_success_timestamp_seconds{{{named}}}"] == at
        assert found[f'db_backup_last_size_bytes{{{named},kind="raw"}}'] == manifest["raw_bytes"]
        stored = manifest["stored_bytes"]
        assert found[f'db_backup_last_size_bytes{{{named},kind="stored"}}'] == stored
        assert found[f"db_backup_last_attempt_success{{{named}}}"] == 1
        target = f"local:{tmp_path / 'out'}"
        assert found[f'db_backup_backups{{{named},target="{target}"}}'] == 1
    assert textfile.stat().st_mode & 0o777 == 0o644  # node_exporter reads it as another user

    # b fails alone: its attempt says so, a's series are as they were, b's backup still counts.
    document = json.loads(config.read_text())
    document["backups"][1]["database"] = "metrics_missing"
    config.write_text(json.dumps(document))
    failed = run_cli("backup", "-c", str(config), "-n", "b", env=cli_env(pg))
    assert failed.returncode == 1
    after = samples(textfile.read_text())
    a_series = {key: value for key, value in found.items() if 'backup="a"' in key}
    assert {key: value for key, value in after.items() if 'backup="a"' in key} == a_series
    missing = labels("b", pg, "metrics_missing")
    assert after[f"db_backup_last_attempt_success{{{missing}}}"] == 0
    b_old = labels("b", pg, "metrics_b")
    assert f"db_backup_last_success_timestamp_seconds{{{b_old}}}" in after


def test_the_textfile_is_replaced_whole(pg: ThrowawayCluster, tmp_path: Path) -> None:
    textfile = tmp_path / "db_backup.prom"
    config = configure(pg, tmp_path, {"textfile": str(textfile)})
    assert run_cli("backup", "-c", str(config), env=cli_env(pg)).returncode == 0
    first = textfile.read_text()
    seen: list[str] = []
    done = threading.Event()

    def read_while_running() -> None:
        while not done.is_set():
            seen.append(textfile.read_text())

    reader = threading.Thread(target=read_while_running)
    reader.start()
    try:
        assert run_cli("backup", "-c", str(config), env=cli_env(pg)).returncode == 0
    finally:
        done.set()
        reader.join()
    final = textfile.read_text()
    assert final != first  # it was rewritten while the reader watched
    assert seen  # and read many times meanwhile
    assert set(seen) <= {first, final}  # always one whole file or the other


def test_metrics_go_to_a_pushgateway(pg: ThrowawayCluster, tmp_path: Path) -> None:
    port = free_port()
    gateway = subprocess.Popen(
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        wait_for(ready, what="the pushgateway to listen", process=gateway)
        config = configure(pg, tmp_path, {"pushgateway": {"url": url, "job": "nightly"}})
        result = run_cli("backup", "-c", str(config), env=cli_env(pg))
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stderr
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:  # noqa: S310
            held = answer.read().decode()
    finally:
        gateway.terminate()
        gateway.communicate(timeout=30)
    pushed = [
        line for line in held.splitlines() if line.startswith("db_backup_last_attempt_success{")
    ]
    assert len(pushed) == 2
    for job in ("a", "b"):
        (line,) = [line for line in pushed if f'backup="{job}"' in line]
        assert 'job="nightly"' in line
        assert line.endswith(" 1")


def test_a_pushgateway_that_is_not_there_is_a_warning_not_a_failure(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    url = f"http://user:hunter2@127.0.0.1:{free_port()}"
    config = configure(pg, tmp_path, {"pushgateway": {"url": url, "timeout": "2s"}})
    result = run_cli("backup", "-c", str(config), env=cli_env(pg))
    assert result.returncode == 0, result.stderr
    assert "db-backup: warning: metrics: cannot push to http://user:***@127.0.0.1" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_the_example_alert_rules_pass_promtool() -> None:
    checked = promtool("check", "rules", str(REPO / "examples" / "prometheus-alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout


def test_prune_and_restore_tests_update_the_metrics(pg: ThrowawayCluster, tmp_path: Path) -> None:
    textfile = tmp_path / "db_backup.prom"
    config = configure(pg, tmp_path, {"textfile": str(textfile)})
    for _ in range(2):
        assert run_cli("backup", "-c", str(config), "-n", "a", env=cli_env(pg)).returncode == 0
    named = labels("a", pg, "metrics_a")
    target = f"local:{tmp_path / 'out'}"
    assert samples(textfile.read_text())[f'db_backup_backups{{{named},target="{target}"}}'] == 2

    document = json.loads(config.read_text())
    document["backups"][0]["retention"] = {"keep_last": 1}
    config.write_text(json.dumps(document))
    assert run_cli("prune", "-c", str(config), env=cli_env(pg)).returncode == 0
    assert samples(textfile.read_text())[f'db_backup_backups{{{named},target="{target}"}}'] == 1

    tested = run_cli("verify", "-c", str(config), "--restore", "-n", "a", env=cli_env(pg))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    after = samples(textfile.read_text())
    assert after[f"db_backup_last_restore_test_success{{{named}}}"] == 1
    assert promtool("check", "metrics", text=textfile.read_text()).returncode == 0
