"""`db-backup serve` in real time against the real server, kept short with `@every 2s`
schedules: two backups each run at least twice (backups committed, metrics written); SIGHUP
with a changed schedule takes effect; SIGHUP with a broken config keeps the old one running;
SIGTERM mid-dump leaves no partial file and no child process."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from db_backup.pgcluster import ThrowawayCluster, free_port
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    is_gone,
    pg_dump_processes,
    server_defaults,
    write_config,
)
from tests.fakes import holding_dump
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def committed(folder: Path, job: str) -> int:
    """How many backups of `job` are finished (have a manifest) in `folder`."""
    return len(list(folder.glob(f"t_{job}_*.sql.gz.json")))


def document(pg: ThrowawayCluster, tmp_path: Path, schedules: dict[str, str]) -> dict[str, Any]:
    return {
        "defaults": server_defaults(pg, tmp_path / "out"),
        "backups": [
            {"name": name, "database": "served", "schedule": schedule}
            for name, schedule in schedules.items()
        ],
        "metrics": {"textfile": str(tmp_path / "db_backup.prom")},
    }


def test_serve_runs_each_backup_on_schedule_reloads_on_sighup_and_keeps_a_good_config(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    create_database(pg, "served", "CREATE TABLE t AS SELECT generate_series(1, 1000) AS n;")
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "backup.yml", document(pg, tmp_path, {"a": "@every 2s", "b": "@every 2s"})
    )
    process = start_cli("serve", "-c", str(config), env=cli_env(pg))
    wait_for(lambda: committed(out, "a") >= 2 and committed(out, "b") >= 2,
             what="two runs of each backup", process=process)  # fmt: skip
    metrics = (tmp_path / "db_backup.prom").read_text()
    assert 'db_backup_last_success_timestamp_seconds{backup="a"' in metrics
    assert 'db_backup_last_success_timestamp_seconds{backup="b"' in metrics

    # a changed schedule: `a` once a year from now on (it ran today: no catch-up)
    write_config(config, document(pg, tmp_path, {"a": "0 0 1 1 *", "b": "@every 2s"}))
    process.send_signal(signal.SIGHUP)
    b_then = committed(out, "b")
    wait_for(lambda: committed(out, "b") >= b_then + 2, what="b runs on", process=process)
    a_then, b_then = committed(out, "a"), committed(out, "b")
    wait_for(lambda: committed(out, "b") >= b_then + 2, what="b runs on", process=process)
    assert committed(out, "a") == a_then  # the reloaded schedule holds

    # a broken config: reported, and the one in force keeps running
    config.write_text("backups: [{name: a, databse: x}]\n")
    process.send_signal(signal.SIGHUP)
    b_then = committed(out, "b")
    wait_for(lambda: committed(out, "b") >= b_then + 2, what="b runs on", process=process)
    assert committed(out, "a") == a_then

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "SIGHUP: reloaded" in stderr
    assert "not reloaded, still running the previous config" in stderr
    assert "databse" in stderr  # the fault, located
    assert not list(out.glob("*.partial"))


def test_sigterm_mid_dump_stops_the_dump_and_leaves_no_partial_file(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    create_database(pg, "served", "CREATE TABLE t AS SELECT g, md5(g::text) AS h "
                    "FROM generate_series(1, 200000) g;")  # fmt: skip
    gate, held = tmp_path / "gate", tmp_path / "held"
    wrapper = holding_dump(tmp_path, pg.client_bin("pg_dump"), gate, held, after=1_000_000)
    settings = document(pg, tmp_path, {"nightly": "0 2 * * *"})
    settings["defaults"]["pg_dump_path"] = str(wrapper)
    config = write_config(tmp_path / "backup.yml", settings)
    # never backed up: due at once (catch-up), and held half-way
    process = start_cli("serve", "-c", str(config), env=cli_env(pg))
    wait_for(held.exists, what="the dump to be held mid-stream", process=process)
    dumps = pg_dump_processes(pg.port)
    assert dumps
    assert list((tmp_path / "out").glob("*.partial"))
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".db-backup.lock"]
    assert all(is_gone(pid) for pid in dumps)
    assert "nightly" in json.dumps(stderr)


def test_the_endpoints_answer_as_documented_and_logs_are_json_lines(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    import httpx

    from tests.e2e.test_metrics import promtool

    create_database(pg, "served", "CREATE TABLE t AS SELECT generate_series(1, 1000) AS n;")
    config = write_config(tmp_path / "backup.yml", document(pg, tmp_path, {"a": "@every 2s"}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_cli("serve", "-c", str(config), "--listen", f"127.0.0.1:{port}",
                        "--log-format", "json", env=cli_env(pg))  # fmt: skip

    def status() -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = httpx.get(f"{base}/api/status", timeout=5).json()
        except httpx.TransportError:
            return None  # not listening yet
        return answer if answer["tasks"] and answer["tasks"][0]["runs"] >= 2 else None

    [task] = wait_for(status, what="two runs, seen in /api/status", process=process)["tasks"]
    assert (task["task"], task["kind"], task["schedule"]) == ("a", "backup", "@every 2s")
    assert task["last_error"] is None
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    metrics = httpx.get(f"{base}/metrics", timeout=5)
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'db_backup_last_success_timestamp_seconds{backup="a"' in metrics.text
    assert 'db_backup_next_run_timestamp_seconds{kind="backup",task="a"}' in metrics.text
    checked = promtool("check", "metrics", text=metrics.text)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    taken = start_cli("serve", "-c", str(config), "--listen", f"127.0.0.1:{port}", env=cli_env(pg))
    _, said = taken.communicate(timeout=60)
    assert taken.returncode == 1
    assert f"--listen 127.0.0.1:{port}: Address already in use" in said
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    lines = [json.loads(line) for line in stderr.splitlines()]  # --log-format json: every one
    assert any(line["message"].startswith("start    a ") for line in lines)
    assert any("SIGINT received" in line["message"] for line in lines)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=5)


def test_serve_notifies_per_run_and_runs_restore_tests_and_prune_on_their_schedules(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    import httpx

    from tests.receivers import http_receiver

    create_database(pg, "served", "CREATE TABLE t AS SELECT generate_series(1, 1000) AS n;")
    out = tmp_path / "out"
    port = free_port()

    def runs_done(kind: str) -> int:
        """How many runs of the task have finished without an error (0 before it listens)."""
        try:
            tasks = httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=5).json()["tasks"]
        except httpx.TransportError:
            return 0
        [task] = [t for t in tasks if t["kind"] == kind]
        assert task["last_error"] is None, task
        return int(task["runs"]) - int(task["running"])

    def more_runs(kind: str, than: int) -> Callable[[], bool]:
        return lambda: runs_done(kind) > than

    with http_receiver() as hook:
        settings = document(pg, tmp_path, {"a": "@every 2s"})
        # kept long enough for a restore test (~2 s) to finish while `a` runs every 2 s
        settings["defaults"]["retention"] = {"keep_last": 4}
        settings["verify"] = {"schedule": "@every 3s"}
        settings["prune"] = {"schedule": "@every 3s"}
        settings["notify"] = [{"kind": "webhook", "url": f"{hook.url}/hook", "on": "always"}]
        config = write_config(tmp_path / "backup.yml", settings)
        process = start_cli("serve", "-c", str(config), "--listen", f"127.0.0.1:{port}",
                            env=cli_env(pg))  # fmt: skip
        wait_for(lambda: list(out.glob("*.verify.json")), what="a restore test's record",
                 process=process)  # fmt: skip
        for kind in ("verify", "prune"):  # a whole run of each after that
            wait_for(more_runs(kind, runs_done(kind)), what=f"a {kind} run", process=process)
        wait_for(lambda: len(hook.requests) >= 2, what="a notice per run", process=process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    reports = [request.json() for request in hook.requests]
    assert all(report["command"] == "backup" for report in reports)
    assert all(job["job"] == "a" for report in reports for job in report["jobs"])
    assert "restore tests: 1 OK, 0 failed" in stderr, stderr
    assert "prune: " in stderr, stderr
    assert len(list(out.glob("t_a_*.sql.gz"))) <= 4  # keep_last: 4


def test_schedule_shows_next_runs_in_the_zone_and_utc_and_the_newest_backup(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    from tests.conftest import run_cli

    create_database(pg, "served", "CREATE TABLE t AS SELECT generate_series(1, 10) AS n;")
    settings = document(pg, tmp_path, {"nightly": "30 2 * * *", "often": "@every 1s"})
    settings["timezone"] = "America/New_York"
    config = write_config(tmp_path / "backup.yml", settings)
    before = run_cli("schedule", "-c", str(config), env=cli_env(pg))
    assert before.returncode == 0, before.stderr
    assert "America/New_York" in before.stdout
    assert "02:30 EST  (07:30 UTC)" in before.stdout  # December: UTC-5
    assert before.stdout.count("none yet: runs when serve starts") == 2
    assert run_cli("backup", "-c", str(config), env=cli_env(pg)).returncode == 0
    # `often` is due again within a second: from then on, serve would run it at once
    missed = "(a run was missed: serve runs it at start)"

    def schedule_once_missed() -> Any:
        shown = run_cli("schedule", "-c", str(config), env=cli_env(pg))
        return shown if missed in shown.stdout else None

    after = wait_for(schedule_once_missed, what="the next second", timeout=10)
    assert "none yet" not in after.stdout
    assert after.stdout.count(missed) == 1  # not `nightly`: its next run is still to come


def test_the_web_ui_shows_jobs_and_runs_one_on_request(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    import re

    import httpx

    create_database(pg, "served", "CREATE TABLE t AS SELECT generate_series(1, 1000) AS n;")
    out = tmp_path / "out"
    settings = document(pg, tmp_path, {"nightly": "0 2 * * *"})
    settings["backups"].append({"name": "manual", "database": "served"})  # never scheduled
    settings["backups"].append({"name": "broken", "database": "no_such_db"})
    config = write_config(tmp_path / "backup.yml", settings)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_cli("serve", "-c", str(config), "--web", "--listen", f"127.0.0.1:{port}",
                        env=cli_env(pg))  # fmt: skip

    def page(path: str) -> str | None:
        try:
            answer = httpx.get(f"{base}{path}", timeout=5)
        except httpx.TransportError:
            return None
        return answer.text if answer.status_code == 200 else None

    def shows(path: str, text: str) -> Callable[[], bool]:
        return lambda: text in (page(path) or "")

    # `nightly` never ran: caught up at start, and its row turns to ok
    wait_for(shows("/", 'row-ok" data-job="nightly"'), what="nightly backed up", process=process)
    dashboard = page("/") or ""
    assert 'data-job="manual"' in dashboard
    assert "no backup yet" in dashboard
    csrf = re.search(r'name="csrf" value="([^"]+)"', dashboard)
    assert csrf is not None
    for job in ("manual", "broken"):
        started = httpx.post(f"{base}/jobs/{job}/run", data={"csrf": csrf.group(1)}, timeout=5)
        assert started.status_code == 303
        assert started.headers["location"].startswith("/runs?note=")
    wait_for(shows("/jobs/manual", ".sql.gz"), what="manual's backup", process=process)
    wait_for(shows("/", 'row-failed" data-job="broken"'), what="broken failing", process=process)
    assert "no_such_db" in (page("/jobs/broken") or "")  # its error, in full
    assert len(list(out.glob("t_manual_*.sql.gz"))) == 1
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 143
