"""`db-backup notify-test`: a test message to every notifier, each outcome reported, exit 1
if any failed; mail over STARTTLS to a server whose certificate a private CA signed; a
refused login or an untrusted certificate is not tried again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_env, run_cli, write_config
from tests.receivers import HANG, STALL, http_receiver, self_signed_certificate, smtp_receiver

USER, PASSWORD = "backup@example.com", "tls-password-8d2c"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def config_with(tmp_path: Path, notify: list[dict[str, Any]]) -> Path:
    return write_config(
        tmp_path / "backup.yml",
        {
            "backups": [{"name": "shop", "database": "shop", "storage": {"path": "out"}}],
            "notify": notify,
        },
    )


def mail(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "email",
        "host": "127.0.0.1",
        "port": port,
        "username": USER,
        "password_file": "smtp.pw",
        "from": USER,
        "to": ["ops@example.com"],
        **extra,
    }


def test_every_notifier_gets_a_test_message(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    (tmp_path / "smtp.pw").write_text(PASSWORD + "\n")
    with (
        http_receiver() as slack,
        http_receiver() as checks,
        smtp_receiver(USER, PASSWORD, certificate=certificate) as smtp,
    ):
        config = config_with(
            tmp_path,
            [
                {"kind": "slack", "webhook_url": f"{slack.url}/services/x"},
                {"kind": "healthchecks", "url": f"{checks.url}/check"},
                mail(smtp.port, ca_file=str(certificate[0])),  # security: starttls (default)
            ],
        )
        result = run_cli("notify-test", "-c", str(config), env=cli_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"OK      slack {slack.url}/***",
        f"OK      healthchecks {checks.url}/***",
        f"OK      email via 127.0.0.1:{smtp.port} to ops@example.com",
    ]
    assert "3 reached, 0 failed" in result.stderr
    assert checks.paths() == ["/check/log"]  # a log entry: no check changes state
    assert "a test message" in slack.requests[0].json()["text"]
    assert smtp.logins == [(USER, PASSWORD)]
    [(_, _, message)] = smtp.messages
    assert message["Subject"].endswith("a test message; notifications reach you")
    assert PASSWORD not in result.stdout + result.stderr


def test_a_refused_login_or_an_untrusted_certificate_fails_once(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    (tmp_path / "smtp.pw").write_text("not-the-password\n")
    with (
        smtp_receiver(USER, PASSWORD, certificate=certificate) as smtp,
        http_receiver(lambda _path: (200, b"")) as fine,
    ):
        config = config_with(
            tmp_path,
            [
                mail(smtp.port, ca_file=str(certificate[0])),
                mail(smtp.port),  # the system's CAs do not know the test CA
                {"kind": "webhook", "url": f"{fine.url}/hook"},
            ],
        )
        result = run_cli("notify-test", "-c", str(config), env=cli_env())
    assert result.returncode == 1
    wrong_login, untrusted, webhook = result.stdout.splitlines()
    assert wrong_login.startswith(f"FAILED  email via 127.0.0.1:{smtp.port} to ops@example.com: ")
    assert "the server answered 535" in wrong_login
    assert "attempts" not in wrong_login  # a permanent failure: not tried again
    assert "certificate verify failed" in untrusted
    assert "attempts" not in untrusted
    assert webhook == f"OK      webhook {fine.url}/***"
    # the refused login (aiosmtplib tries it once per AUTH mechanism the server offers)
    assert set(smtp.logins) == {(USER, "not-the-password")}
    assert "not-the-password" not in result.stdout + result.stderr
    assert "1 reached, 2 failed" in result.stderr


def test_without_notifiers_there_is_nothing_to_test(tmp_path: Path) -> None:
    result = run_cli("notify-test", "-c", str(config_with(tmp_path, [])), env=cli_env())
    assert result.returncode == 1
    assert "no notifiers (`notify:`) to test" in result.stderr


def test_apprise_urls_each_get_the_message_and_a_retry_goes_to_the_failed_one(
    tmp_path: Path,
) -> None:
    with http_receiver() as fine, http_receiver(lambda _path: (503, b"busy")) as busy:
        host = fine.url.removeprefix("http://")
        urls = [f"json://{host}/hook/apprise-token-1", f"json://{busy.url[7:]}/down"]
        config = config_with(tmp_path, [{"kind": "apprise", "urls": urls, "retries": 1}])
        result = run_cli("--log-level", "debug", "notify-test", "-c", str(config), env=cli_env())
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "FAILED  apprise json://***, json://***: Apprise could not deliver to json://*** "
        "(2 attempts)"
    ]
    assert fine.paths() == ["/hook/apprise-token-1"]  # once: the retry went to the other only
    assert busy.paths() == ["/down", "/down"]
    posted = fine.requests[0].json()
    assert posted["title"].endswith("a test message; notifications reach you")
    assert "config:" in posted["message"]
    assert "apprise-token-1" not in result.stdout + result.stderr


def test_whatever_a_server_answers_is_an_outcome_not_a_crash(tmp_path: Path) -> None:
    """A broken gzip answer is not decoded; a refusal echoing the URL's token shows it
    masked; a timeout above httpx's own 5 s default is the one that counts."""
    broken_gzip = {"Content-Encoding": "gzip"}
    with (
        http_receiver(lambda _path: (200, b"not gzip at all"), broken_gzip) as fine,
        http_receiver(lambda _path: (502, b"\x1f\x8b broken"), broken_gzip) as failing,
        http_receiver(lambda path: (400, f"Cannot POST {path}".encode())) as echoing,
        http_receiver(lambda _path: (HANG, b"")) as silent,
    ):
        config = config_with(
            tmp_path,
            [
                {"kind": "webhook", "url": f"{fine.url}/ok"},
                {"kind": "webhook", "url": f"{failing.url}/bad", "retries": 0},
                {"kind": "webhook", "url": f"{echoing.url}/hook/ECHOED-TOKEN-42"},
                {"kind": "webhook", "url": f"{silent.url}/slow", "timeout": "5.5s", "retries": 0},
            ],
        )
        result = run_cli("--log-level", "info", "notify-test", "-c", str(config), env=cli_env())
    assert result.returncode == 1
    assert "internal error" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"OK      webhook {fine.url}/***"
    assert lines[1].startswith(f"FAILED  webhook {failing.url}/***: answered HTTP 502 Bad Gateway")
    assert (
        lines[2]
        == f"FAILED  webhook {echoing.url}/***: answered HTTP 400 Bad Request: Cannot POST ***"
    )
    assert lines[3] == f"FAILED  webhook {silent.url}/***: no answer within 5.5s (timeout)"
    assert "ECHOED-TOKEN-42" not in result.stdout + result.stderr  # httpx logs URLs at info


def test_a_refused_recipient_and_an_untrusted_tls_server_are_not_tried_again(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    (tmp_path / "smtp.pw").write_text(PASSWORD)
    with (
        smtp_receiver(
            USER, PASSWORD, certificate=certificate, refused=["nobody@example.com"]
        ) as starttls,
        smtp_receiver(USER, PASSWORD, certificate=certificate, implicit_tls=True) as implicit,
    ):
        trusted = str(certificate[0])
        config = config_with(
            tmp_path,
            [
                {**mail(starttls.port, ca_file=trusted), "to": ["nobody@example.com"]},
                mail(implicit.port, security="tls"),  # the system's CAs do not know it
                mail(implicit.port, security="tls", ca_file=trusted),
            ],
        )
        result = run_cli("notify-test", "-c", str(config), env=cli_env())
    refused, untrusted, delivered = result.stdout.splitlines()
    assert "the server refused nobody@example.com: 550 5.1.1 no such mailbox" in refused
    assert starttls.recipients == ["nobody@example.com"]  # asked once
    assert "certificate verify failed" in untrusted
    assert "attempts" not in refused + untrusted
    assert delivered == f"OK      email via 127.0.0.1:{implicit.port} to ops@example.com"
    assert len(implicit.messages) == 1


def test_tokens_stay_masked_however_a_url_is_re_encoded_and_odd_answers_are_told_plainly(
    tmp_path: Path,
) -> None:
    with (
        http_receiver() as checks,
        http_receiver(lambda _path: (400, STALL)) as stalling,
        http_receiver(lambda _path: (403, b"\x1b[31mforbidden\x1b[0m\x07")) as escaping,
        http_receiver() as hook,
    ):
        config = config_with(
            tmp_path,
            [
                # a query and a path that an HTTP client re-encodes when it sends them
                {
                    "kind": "healthchecks",
                    "url": f"{checks.url}/t\u00f6ken{{SECRET1}}?key=ab+cd/ef==",
                },
                {"kind": "webhook", "url": f"{stalling.url}/hook", "timeout": "3s"},
                {"kind": "webhook", "url": f"{escaping.url}/hook"},
                {
                    "kind": "webhook",
                    "url": f"{hook.url}/hook",
                    "headers": {"content-type": "application/cloudevents+json"},
                },
            ],
        )
        result = run_cli("--log-level", "debug", "notify-test", "-c", str(config), env=cli_env())
    everything = result.stdout + result.stderr
    for secret in ("SECRET1", "ab+cd", "ab%2Bcd", "t%C3%B6ken"):
        assert secret not in everything
    assert checks.requests[0].query["key"] == "ab cd/ef=="  # sent as written
    lines = result.stdout.splitlines()
    # a 4xx whose body stalls: its status says enough; not a timeout, not tried again
    assert lines[1] == f"FAILED  webhook {stalling.url}/***: answered HTTP 400 Bad Request: x"
    assert (
        lines[2]
        == f"FAILED  webhook {escaping.url}/***: answered HTTP 403 Forbidden: [31mforbidden [0m"
    )
    [posted] = hook.requests
    assert posted.headers["content-type"] == "application/cloudevents+json"  # theirs, once


def test_an_apprise_service_that_never_answers_is_given_up_on_time(tmp_path: Path) -> None:
    with http_receiver(lambda _path: (HANG, b"")) as silent:
        url = f"json://{silent.url.removeprefix('http://')}/hook"
        config = config_with(
            tmp_path, [{"kind": "apprise", "urls": [url], "timeout": "2s", "retries": 0}]
        )
        started = time.monotonic()
        result = run_cli("notify-test", "-c", str(config), env=cli_env())
        elapsed = time.monotonic() - started
    assert result.stdout.splitlines() == [
        "FAILED  apprise json://***: no answer within 2s (timeout)"
    ]
    assert len(silent.requests) == 1
    assert elapsed < 20, elapsed  # its child is killed: Apprise's threads do not hold the exit
