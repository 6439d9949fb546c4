"""Notifications after real backup runs: one message per run to Slack, a webhook, an SMTP
server with AUTH and a healthchecks check (all real servers on loopback); `/start` before the
end ping; notifiers that are down, slow or failing are warnings, bounded in time; `verify`
and `prune` tell of their failures; no secret in anything the run printed or wrote."""

from __future__ import annotations

import fcntl
import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from db_backup.pgcluster import ThrowawayCluster
from tests.blackhole import BlackHole
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    run_cli,
    server_defaults,
    write_config,
)
from tests.fakes import gated_pg_dump
from tests.receivers import (
    HANG,
    HttpReceiver,
    SmtpReceiver,
    closed_port_url,
    http_receiver,
    smtp_receiver,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

HOST = socket.gethostname()
HOOK_TOKEN = "hook-token-5b1f0c2e"
SLACK_TOKEN = "T000/B000/slack-token-93ad7"
CHECK_UUID = "0f6a3c1e-check-uuid-77d2"
SMTP_USER, SMTP_PASSWORD = "backup@example.com", "smtp-password-c41e9"
SECRETS = (HOOK_TOKEN, SLACK_TOKEN, CHECK_UUID, SMTP_PASSWORD)


def notifiers(
    slack: HttpReceiver, hook: HttpReceiver, checks: HttpReceiver, smtp: SmtpReceiver
) -> list[dict[str, Any]]:
    return [
        {"kind": "slack", "webhook_url": f"{slack.url}/services/${{SLACK_TOKEN}}"},
        {
            "kind": "webhook",
            "url": f"{hook.url}/hook",
            "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"},
            "on": "always",
        },
        # written as a user might: upper-case scheme, a query (slug URLs take ?create=1)
        {"kind": "healthchecks", "url": f"HTTP://{checks.url[7:]}/${{CHECK_UUID}}?create=1"},
        {
            "kind": "email",
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "username": SMTP_USER,
            "password": "${SMTP_PASSWORD}",
            "from": SMTP_USER,
            "to": ["ops@example.com", "dba@example.com"],
            "on": ["failure"],
        },
    ]


def environment(pg: ThrowawayCluster) -> dict[str, str]:
    return cli_env(
        pg,
        SLACK_TOKEN=SLACK_TOKEN,
        HOOK_TOKEN=HOOK_TOKEN,
        CHECK_UUID=CHECK_UUID,
        SMTP_PASSWORD=SMTP_PASSWORD,
    )


def configure(
    pg: ThrowawayCluster, tmp_path: Path, notify: list[dict[str, Any]], **extra: Any
) -> Path:
    create_database(pg, "notify_good", "CREATE TABLE t AS SELECT generate_series(1, 5) AS n;")
    return write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [
                {"name": "good", "database": "notify_good"},
                {"name": "broken", "database": "notify_no_such_database"},
            ],
            "notify": notify,
            **extra,
        },
    )


def run_with_every_kind(
    pg: ThrowawayCluster, tmp_path: Path, *args: str
) -> tuple[Any, tuple[HttpReceiver, HttpReceiver, HttpReceiver, SmtpReceiver]]:
    """Run the CLI (`-c` added after the command) with a Slack, a webhook, a healthchecks
    and an email notifier; returns its result and the four receivers with what they got."""
    with (
        http_receiver() as slack,
        http_receiver() as hook,
        http_receiver() as checks,
        smtp_receiver(SMTP_USER, SMTP_PASSWORD) as smtp,
    ):
        config = configure(pg, tmp_path, notifiers(slack, hook, checks, smtp))
        command = args.index("backup") + 1
        argv = (*args[:command], "-c", str(config), *args[command:])
        return run_cli(*argv, env=environment(pg)), (slack, hook, checks, smtp)


def hook_and_check(hook: HttpReceiver, checks: HttpReceiver) -> list[dict[str, Any]]:
    """A webhook (told of failures) and a healthchecks check, on these receivers."""
    return [
        {"kind": "webhook", "url": f"{hook.url}/hook"},
        {"kind": "healthchecks", "url": f"{checks.url}/check"},
    ]


def assert_no_secret_anywhere(result: Any, folder: Path) -> None:
    """Nothing the run printed, logged or wrote holds a token or the SMTP password."""
    written = [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]
    for secret in SECRETS:
        assert secret not in result.stdout
        assert secret not in result.stderr
        assert all(secret not in text for text in written)


def test_a_failing_run_sends_one_message_to_every_notifier(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    result, (slack, hook, checks, smtp) = run_with_every_kind(
        pg, tmp_path, "--log-level", "debug", "backup", "--json"
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    reason = next(job["error"] for job in report["jobs"] if job["job"] == "broken")
    assert "notify_no_such_database" in reason
    subject = f"db-backup on {HOST}: 1 of 2 backups FAILED"

    # healthchecks: /start when the run began, then /fail with the summary; one run id
    assert checks.paths() == [f"/{CHECK_UUID}/start", f"/{CHECK_UUID}/fail"]
    start, end = checks.requests
    assert start.query["rid"] == end.query["rid"]
    assert start.query["create"] == end.query["create"] == "1"
    assert end.body.decode().startswith(subject)
    assert "broken" in end.body.decode()
    assert reason in end.body.decode()

    # Slack: one message, a bold header line, the failed job with its reason
    assert slack.paths() == [f"/services/{SLACK_TOKEN}"]
    text = slack.requests[0].json()["text"]
    assert text.startswith(f"*{subject}*\n")
    assert "• *broken* (database 'notify_no_such_database' on " in text
    assert reason.split("\n")[0].replace("<", "&lt;").replace(">", "&gt;")[:60] in text

    # the webhook: the run report itself (the same JSON as --json), with its header
    assert hook.paths() == ["/hook"]
    posted = hook.requests[0]
    assert posted.headers["authorization"] == f"Bearer {HOOK_TOKEN}"
    assert posted.headers["content-type"] == "application/json"
    body = posted.json()
    assert body["report_version"] == 1
    assert body["command"] == "backup"
    assert body["jobs"] == report["jobs"]
    assert (body["succeeded"], body["failed"], body["host"]) == (1, 1, HOST)

    # email: AUTH with the configured login, one mail to both recipients
    assert smtp.logins == [(SMTP_USER, SMTP_PASSWORD)]
    [(sender, recipients, mail)] = smtp.messages
    assert (sender, recipients) == (SMTP_USER, ["ops@example.com", "dba@example.com"])
    assert mail["Subject"] == subject
    content = mail.get_content()
    assert "broken (database 'notify_no_such_database'" in content
    assert reason in content

    outcomes = {n["notifier"].split(" ")[0]: n for n in report["notifications"]}
    assert sorted(outcomes) == ["email", "healthchecks", "slack", "webhook"]
    assert all(n["ok"] and n["attempts"] == 1 for n in outcomes.values())
    assert report["warnings"] == []
    assert_no_secret_anywhere(result, tmp_path / "out")


def test_a_successful_run_tells_only_who_asks(pg: ThrowawayCluster, tmp_path: Path) -> None:
    result, (slack, hook, checks, smtp) = run_with_every_kind(pg, tmp_path, "backup", "-n", "good")
    assert result.returncode == 0, result.stderr
    assert slack.requests == []
    assert smtp.messages == []
    assert checks.paths() == [f"/{CHECK_UUID}/start", f"/{CHECK_UUID}"]
    assert checks.requests[1].body.decode().startswith(f"db-backup on {HOST}: 1 backups OK")
    [posted] = hook.requests  # on: always
    assert (posted.json()["succeeded"], posted.json()["failed"]) == (1, 0)


def test_a_backup_with_notify_false_is_left_out(pg: ThrowawayCluster, tmp_path: Path) -> None:
    with http_receiver() as hook, http_receiver() as checks:
        config = configure(pg, tmp_path, hook_and_check(hook, checks))
        document = json.loads(config.read_text())
        document["backups"][1]["notify"] = False  # the broken one
        write_config(config, document)
        alone = run_cli("backup", "-c", str(config), "-n", "broken", env=cli_env(pg))
        both = run_cli("backup", "-c", str(config), env=cli_env(pg))
    assert (alone.returncode, both.returncode) == (1, 1)
    # the broken backup alone: nobody hears of it; both: a successful run of one backup
    assert hook.requests == []  # on: failure, and the only failure is left out
    assert checks.paths() == ["/check/start", "/check"]
    assert "1 backups OK" in checks.requests[1].body.decode()


def test_notifiers_that_fail_are_warnings_within_their_bounds(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    with (
        http_receiver(lambda _path: (500, b"oops")) as failing,
        http_receiver(lambda _path: (HANG, b"")) as silent,
        http_receiver(lambda _path: (404, b"no_service")) as slack,
    ):
        notify: list[dict[str, Any]] = [
            {"kind": "webhook", "url": f"{failing.url}/a/{HOOK_TOKEN}", "retries": 1},
            {"kind": "webhook", "url": f"{silent.url}/b?token={HOOK_TOKEN}", "timeout": "1s",
             "retries": 1},
            {"kind": "webhook", "url": f"{closed_port_url()}/c/{HOOK_TOKEN}", "retries": 1},
            {"kind": "slack", "webhook_url": f"{slack.url}/services/{SLACK_TOKEN}"},
        ]  # fmt: skip
        config = configure(pg, tmp_path, [{**n, "on": "always"} for n in notify])
        started = time.monotonic()
        result = run_cli("backup", "-c", str(config), "-n", "good", "--json", env=cli_env(pg))
        elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr  # the backups decide, not the notifiers
    report = json.loads(result.stdout)
    assert report["jobs"][0]["status"] == "succeeded"
    assert Path(report["jobs"][0]["file"]).is_file()
    # a 500 and no answer may pass: tried again (retries: 1); a 404 will not: tried once
    assert len(failing.requests) == 2
    assert len(silent.requests) == 2
    assert len(slack.requests) == 1
    warnings = report["warnings"]
    assert len(warnings) == 4, warnings
    assert (
        f"webhook {failing.url}/***: answered HTTP 500 Internal Server Error: oops" in (warnings[0])
    )
    assert "(2 attempts)" in warnings[0]
    assert f"webhook {silent.url}/***: no answer within 1s (timeout) (2 attempts)" in warnings[1]
    assert "cannot reach it" in warnings[2]
    assert (
        f"slack {slack.url}/***: answered HTTP 404 Not Found: no_service (1 attempt)"
        in (warnings[3])
    )
    for warning in warnings:
        assert f"db-backup: warning: {warning}" in result.stderr
    # the silent one: 2 attempts x 1 s + 1 s pause; the others at the same time
    assert elapsed < 60, elapsed
    for secret in (HOOK_TOKEN, SLACK_TOKEN):
        assert secret not in result.stdout + result.stderr


def test_verify_and_prune_tell_of_their_failures(pg: ThrowawayCluster, tmp_path: Path) -> None:
    with http_receiver() as hook, http_receiver() as checks:
        config = configure(pg, tmp_path, hook_and_check(hook, checks))
        assert run_cli("backup", "-c", str(config), "-n", "good", env=cli_env(pg)).returncode == 0
        checks.requests.clear()
        good = run_cli("verify", "-c", str(config), env=cli_env())
        assert good.returncode == 0, good.stdout + good.stderr
        assert hook.requests == []
        assert checks.requests == []
        [dump] = (tmp_path / "out").glob("t_good_*.sql.gz")
        with dump.open("r+b") as damaged:
            damaged.seek(30)
            damaged.write(b"\0" * 8)
        bad = run_cli("verify", "-c", str(config), env=cli_env())
        unreachable = {
            "kind": "s3",
            "bucket": "backups",
            "endpoint_url": closed_port_url(),
            "access_key_id": "${KEY_ID}",
            "secret_access_key": "${SECRET_KEY}",
            "connect_timeout": 1,
            "max_attempts": 1,
        }
        document = json.loads(config.read_text())
        document["defaults"]["storage"] = unreachable
        gone = write_config(tmp_path / "gone.yml", document)
        pruned = run_cli("prune", "-c", str(gone), env=cli_env(KEY_ID="k", SECRET_KEY="s"))
    assert bad.returncode == 1
    verify = hook.requests[0].json()
    assert (verify["command"], verify["ok"], verify["failed"]) == ("verify", False, 1)
    assert verify["problems"][0]["name"] == str(dump)
    assert "sha256" in verify["problems"][0]["reason"]
    assert checks.paths()[0] == "/check/fail"  # no /start: verify is not a backup run
    assert (
        checks.requests[0]
        .body.decode()
        .startswith(f"db-backup verify on {HOST}: 1 of 1 backups FAILED")
    )
    assert pruned.returncode == 1, pruned.stdout + pruned.stderr
    prune = hook.requests[1].json()
    assert (prune["command"], prune["failed"]) == ("prune", 1)
    assert prune["problems"][0]["name"].startswith("target s3://backups/")
    assert checks.paths() == ["/check/fail", "/check/fail"]


def test_a_run_stopped_by_a_held_lock_still_ends_its_start_ping(
    pg: ThrowawayCluster, tmp_path: Path
) -> None:
    with http_receiver() as hook, http_receiver() as checks:
        config = configure(pg, tmp_path, hook_and_check(hook, checks))
        (tmp_path / "out").mkdir(mode=0o700)
        with (tmp_path / "out" / ".db-backup.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another run holds the folder
            result = run_cli("backup", "-c", str(config), env=cli_env(pg))
    assert result.returncode == 1
    assert "db-backup: error:" in result.stderr
    assert checks.paths() == ["/check/start", "/check/fail"]
    assert "lock" in checks.requests[1].body.decode()
    [posted] = hook.requests
    body = posted.json()
    assert (body["command"], body["ok"], body["failed"], body["total"]) == ("backup", False, 2, 2)
    assert body["problems"][0]["name"] == "the run"
    assert "lock" in body["problems"][0]["reason"]


def test_a_run_stopped_by_sigterm_says_so_in_one_short_attempt(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"
    wrapper = gated_pg_dump(tmp_path, pg.client_bin("pg_dump"), gate, started)
    with http_receiver() as checks, http_receiver(lambda _path: (HANG, b"")) as silent:
        notify = [
            {"kind": "healthchecks", "url": f"{checks.url}/check"},
            {"kind": "webhook", "url": f"{silent.url}/hook", "timeout": "30s"},
        ]
        config = configure(pg, tmp_path, notify)
        document = json.loads(config.read_text())
        document["defaults"]["pg_dump_path"] = str(wrapper)
        write_config(config, document)
        process = start_cli("backup", "-c", str(config), "-n", "good", env=cli_env(pg))
        wait_for(started.exists, what="the dump to start", process=process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert checks.paths() == ["/check/start", "/check/fail"]
    assert (
        checks.requests[1]
        .body.decode()
        .startswith(f"db-backup on {HOST}: stopped by SIGTERM; 0 of 1 backups FAILED, 1 cancelled")
    )
    # one attempt of at most 2 s, not three of 30 s: the forced exit would cut them short
    assert len(silent.requests) == 1
    assert f"webhook {silent.url}/***: no answer within 2s (timeout) (1 attempt)" in stderr


def test_a_slow_check_holds_up_only_its_own_end_ping(pg: ThrowawayCluster, tmp_path: Path) -> None:
    def slow_start(path: str) -> tuple[int, bytes]:
        return (HANG, b"") if path.endswith("/start") else (200, b"OK")

    with http_receiver(slow_start) as checks, http_receiver() as slack:
        notify: list[dict[str, Any]] = [
            {"kind": "healthchecks", "url": f"{checks.url}/check", "timeout": "2s", "retries": 1},
            {"kind": "slack", "webhook_url": f"{slack.url}/services/x"},
        ]
        config = configure(pg, tmp_path, notify)
        result = run_cli("backup", "-c", str(config), "-n", "broken", "--json", env=cli_env(pg))
    assert result.returncode == 1
    # /start: tried at once and again 2 s + 1 s later; the failed run's Slack message did
    # not wait for them (the check's end ping did, and came after both)
    assert checks.paths() == ["/check/start", "/check/start", "/check/fail"]
    [message] = slack.requests
    assert message.received < checks.requests[1].received < checks.requests[2].received
    warnings = json.loads(result.stdout)["warnings"]
    assert warnings == [
        f"notify: healthchecks {checks.url}/*** (/start): no answer within 2s (timeout) "
        "(2 attempts)"
    ]


def test_verify_finding_no_backup_at_all_tells_of_it(pg: ThrowawayCluster, tmp_path: Path) -> None:
    with http_receiver() as hook:
        config = configure(pg, tmp_path, [{"kind": "webhook", "url": f"{hook.url}/hook"}])
        (tmp_path / "out").mkdir(mode=0o700)  # an empty (wiped?) folder
        result = run_cli("verify", "-c", str(config), env=cli_env())
    assert result.returncode == 1
    [posted] = hook.requests
    assert posted.json()["problems"] == [
        {"name": "every target", "where": "listing them", "reason": "no backups found"}
    ]


def test_a_signal_while_notifiers_retry_ends_them_promptly(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    with http_receiver(lambda _path: (503, b"busy")) as busy:
        notify = [{"kind": "webhook", "url": f"{busy.url}/hook", "retries": 5, "on": "always"}]
        config = configure(pg, tmp_path, notify)
        process = start_cli("backup", "-c", str(config), "-n", "broken", env=cli_env(pg))
        wait_for(lambda: bool(busy.requests), what="the first notification", process=process)
        process.send_signal(signal.SIGTERM)  # the job is over; the notifier would retry 5 times
        stdout, stderr = process.communicate(timeout=60)
    assert "stopped immediately" not in stderr  # not the forced exit: the retries ended
    assert process.returncode == 1  # what the backups decided
    assert f"webhook {busy.url}/***: answered HTTP 503 Service Unavailable: busy" in stderr
    assert len(busy.requests) < 6
    assert "broken" in stdout  # the summary still printed


def test_a_signal_before_any_dump_still_ends_the_start_ping(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli
) -> None:
    with BlackHole() as hole, http_receiver() as checks:
        config = configure(pg, tmp_path, [{"kind": "healthchecks", "url": f"{checks.url}/c"}])
        document = json.loads(config.read_text())
        # discovery connects to a server that never answers: the run is stuck planning
        document["backups"] = [{"name": "all", "database": "*", "port": hole.port}]
        write_config(config, document)
        process = start_cli("backup", "-c", str(config), env=cli_env(pg))
        wait_for(lambda: hole.connections > 0, what="discovery to connect", process=process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert checks.paths() == ["/c/start", "/c/fail"]
    assert "stopped by a signal before any dump started" in checks.requests[1].body.decode()
