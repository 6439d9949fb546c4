"""Notifications, pure parts: the `notify:` config and its errors, what each message says,
who hears of which run, and that tokens are masked wherever a notifier is named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from db_backup.config.load import parse_config
from db_backup.config.schema import (
    EmailNotifier,
    HealthchecksNotifier,
    NotifierConfig,
    SlackNotifier,
    WebhookNotifier,
)
from db_backup.errors import ConfigError
from db_backup.model import JobKind, JobResult, JobSpec, JobStatus, RunReport, Server
from db_backup.notification import (
    PING_BODY_BYTES,
    SLACK_PROBLEMS_SHOWN,
    Notice,
    Problem,
    run_notice,
    wants,
)
from db_backup.redact import mask_url_path

BACKUPS = "backups: [{name: shop, database: shop, storage: {path: /srv/b}}]\n"


def load(notify: str, env: dict[str, str] | None = None) -> tuple[NotifierConfig, ...]:
    config = parse_config(
        BACKUPS + "notify:\n" + notify, "backup.yml", base_dir=Path("/etc/db"), environ=env or {}
    )
    return config.notify


def errors_of(notify: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(notify, env)
    return [str(issue) for issue in caught.value.issues]


def test_every_kind_reads_with_its_defaults() -> None:
    slack, mail, hook, check = load(
        """\
  - {kind: slack, webhook_url: "https://hooks.slack.com/services/${TOKEN}"}
  - kind: email
    host: smtp.example.com
    username: backup@example.com
    password_file: smtp.pw
    from: backup@example.com
    to: [ops@example.com]
    on: [failure, success]
  - {kind: webhook, url: "https://hooks.example.com/x", headers: {X-Token: "${TOKEN}"}, on: always}
  - {kind: healthchecks, url: "https://hc-ping.com/${TOKEN}", timeout: 3s, retries: 0}
""",
        {"TOKEN": "t0k3n"},
    )
    assert isinstance(slack, SlackNotifier)
    assert (slack.when, slack.timeout, slack.retries) == (("failure",), 10.0, 2)
    assert isinstance(mail, EmailNotifier)
    assert (mail.port, mail.security, mail.sender) == (587, "starttls", "backup@example.com")
    assert mail.password_file == "/etc/db/smtp.pw"  # relative to the config file
    assert mail.when == ("failure", "success")
    assert isinstance(hook, WebhookNotifier)
    assert (hook.when, hook.headers) == (("always",), {"X-Token": "t0k3n"})
    assert isinstance(check, HealthchecksNotifier)
    assert (check.timeout, check.retries, check.when) == (3.0, 0, ("always",))


def test_no_token_in_a_label_or_a_repr() -> None:
    notifiers = load(
        """\
  - {kind: slack, webhook_url: "https://hooks.slack.com/services/T1/B2/s3cr3t"}
  - {kind: webhook, url: "https://user:pw@hooks.example.com/x?token=s3cr3t",
     headers: {Authorization: "Bearer s3cr3t"}}
  - {kind: healthchecks, url: "https://hc-ping.com/s3cr3t"}
  - {kind: email, host: smtp.example.com, username: u, password: s3cr3t, from: a@b.c, to: [d@e.f]}
  - {kind: apprise, urls: ["tgram://s3cr3t/chat", "ntfys://ntfy.sh/s3cr3t"]}
"""
    )
    for notifier in notifiers:
        assert "s3cr3t" not in notifier.label
        assert "s3cr3t" not in repr(notifier)
        assert "s3cr3t" in "".join(notifier.secrets)
    assert [n.label for n in notifiers[:3]] == [
        "slack https://hooks.slack.com/***",
        "webhook https://hooks.example.com/***",
        "healthchecks https://hc-ping.com/***",
    ]
    assert notifiers[4].label == "apprise tgram://***, ntfys://***"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hc-ping.com/uuid", "https://hc-ping.com/***"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
        ("http://[::1]:9/a?b=c", "http://[::1]:9/***"),
        ("https://u:p@host/?t=1", "https://host/***"),
        ("", "***"),
        ("http://host:port/x", "http://***"),  # malformed: only the scheme
    ],
)
def test_mask_url_path(url: str, shown: str) -> None:
    assert mask_url_path(url) == shown


def test_each_fault_is_located_and_no_secret_echoed() -> None:
    found = errors_of(
        """\
  - {kind: slack, webhook_url: "ftp://hooks/s3cr3t"}
  - {kind: pager, url: x}
  - {webhook_url: "https://x/y"}
  - {kind: webhook, url: "https://x/y", on: sometimes}
  - {kind: healthchecks, url: "https://x/y", on: always}
  - {kind: email, host: h, from: a@b.c, to: [], password: s3cr3t}
  - {kind: slack, webhook_url: 42}
  - {kind: webhook, url: "https://x/y", timout: 3}
  - just a string
"""
    )
    assert found == [
        "backup.yml:3:32: notify[0].webhook_url: expected an http:// or https:// URL",
        'backup.yml:4:12: notify[1].kind: invalid value "pager"; expected one of: '
        "slack, email, webhook, healthchecks, apprise",
        "backup.yml:5:5: notify[2]: missing required key 'kind' "
        "(slack, email, webhook, healthchecks, apprise)",
        'backup.yml:6:45: notify[3].on: invalid value "sometimes"; '
        "expected one of: always, failure, success",
        "backup.yml:7:46: notify[4].on: unknown key 'on'; valid keys: kind, retries, timeout, url",
        "backup.yml:8:5: notify[5].username: a password needs a username",
        "backup.yml:8:45: notify[5].to: name at least one recipient",
        "backup.yml:9:32: notify[6].webhook_url: expected str, got ***",
        "backup.yml:10:41: notify[7].timout: unknown key 'timout'; did you mean 'timeout'?",
        "backup.yml:11:5: notify[8]: expected a mapping with a `kind:`",
    ]
    assert not any("s3cr3t" in line for line in found)


def test_more_faults_each_located_without_the_value() -> None:
    found = errors_of(
        """\
  - {kind: webhook, url: "https://x/y", on: []}
  - {kind: webhook, url: "https://x/y", on: [failures]}
  - {kind: webhook, url: "https://x/y", headers: {X-Count: 4, Authorization: "Bearer s3cr3t"}}
  - {kind: webhook, url: "http://[::1/s3cr3t"}
  - {kind: email, host: h, from: "ops@[10.0.0.1", to: [ops]}
  - {kind: slack, webhook_url: "https://x/y", timeout: 0}
"""
    )
    assert found == [
        "backup.yml:3:45: notify[0].on: name at least one of: failure, success, always",
        'backup.yml:4:46: notify[1].on[0]: invalid value "failures"; '
        "expected one of: always, failure, success",
        "backup.yml:5:60: notify[2].headers.X-Count: expected a string (quote it)",
        "backup.yml:6:26: notify[3].url: not a valid URL (its host or port)",
        "backup.yml:7:34: notify[4].from: not a mail address: 'ops@[10.0.0.1'",
        "backup.yml:7:55: notify[4].to: not a mail address: 'ops'",
        "backup.yml:8:56: notify[5].timeout: expected a positive duration, got 0",
    ]
    assert not any("s3cr3t" in line for line in found)
    assert parse_config(BACKUPS + "notify:\n", environ={}).notify == ()  # all commented out


def test_an_unset_variable_is_an_error_or_mutes_its_notifier() -> None:
    """A run that sends needs it; a command that may run without secrets (list, prune,
    verify) leaves that notifier out rather than send to a URL with a hole in it."""
    notify = '  - {kind: healthchecks, url: "https://hc-ping.com/${PING_KEY}/backups"}\n'
    assert errors_of(notify) == [
        "backup.yml:3:31: notify[0].url: environment variable PING_KEY is not set "
        "(use ${PING_KEY:-default})"
    ]
    lenient = parse_config(BACKUPS + "notify:\n" + notify, environ={}, require_env=False)
    assert lenient.notify == ()
    assert lenient.muted_notifiers == (
        ("healthchecks https://hc-ping.com/***", "environment variable PING_KEY is not set"),
    )


# -- messages ------------------------------------------------------------------------------------

STARTED = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def result(
    name: str, status: JobStatus, error: str | None = None, *, notify: bool = True
) -> JobResult:
    backup = parse_config(
        f"backups: [{{name: {name}, database: {name}, storage: {{path: /b}}, notify: {notify}}}]",
        environ={},
    ).backups[0]
    job = JobSpec(name, JobKind.DATABASE, backup, name, Server("db1", 5432), ())
    return JobResult(job, status, STARTED, STARTED + timedelta(seconds=3), 100, 40, error)


def report(*results: JobResult) -> RunReport:
    return RunReport(STARTED, STARTED + timedelta(minutes=12, seconds=3), results)


def test_a_failed_run_names_each_failed_job_with_its_reason() -> None:
    notice = run_notice(
        report(
            result("shop", JobStatus.SUCCEEDED),
            result("crm", JobStatus.FAILED, 'connection check: database "crm" does not exist\n'
                   "  second line"),
            result("blog", JobStatus.CANCELLED, "cancelled by SIGTERM"),
            result("quiet", JobStatus.FAILED, "left out", notify=False),
        ),
        host="db-host",
        config="/etc/db-backup/backup.yml",
        document=b"{}",
    )  # fmt: skip
    assert notice is not None
    assert not notice.ok
    assert notice.subject == "db-backup on db-host: 1 of 3 backups FAILED, 1 cancelled"
    text = notice.text()
    assert text.startswith(notice.subject + "\n\nconfig:  /etc/db-backup/backup.yml\n")
    assert "started: 2026-12-02T02:00:00+00:00, took 12m03s" in text
    assert "result:  1 succeeded, 1 failed, 1 cancelled; 120 B stored" in text
    assert "- crm (database 'crm' on db1:5432):\n" in text
    assert '  connection check: database "crm" does not exist\n    second line' in text
    assert "- blog (database 'blog' on db1:5432):\n  cancelled by SIGTERM" in text
    assert "quiet" not in text
    assert "left out" not in text
    slack = notice.slack()["text"]
    assert slack.startswith(f"*{notice.subject}*\n")
    assert "• *crm* (database 'crm' on db1:5432): `connection check: database \"crm\" does" in slack


def test_a_successful_run_is_short_and_left_out_jobs_are_not_counted() -> None:
    notice = run_notice(
        report(result("shop", JobStatus.SUCCEEDED)), host="h", config="c", document=b"{}"
    )
    assert notice is not None
    assert notice.ok
    assert notice.subject == "db-backup on h: 1 backups OK"
    assert "Failed" not in notice.text()
    quiet = report(result("quiet", JobStatus.FAILED, "x", notify=False))
    left_out = run_notice(quiet, host="h", config="c", document=b"{}")
    assert (left_out.total, left_out.ok) == (0, True)


def notice(problems: int, reason: str = "it broke") -> Notice:
    listed = tuple(Problem(f"job{i}", "database 'x' on h:5432", reason) for i in range(problems))
    return Notice("backup", "h", "c", "backups", problems + 1, problems, listed, b"{}")


def test_slack_text_is_escaped_and_a_long_list_cut() -> None:
    text = notice(SLACK_PROBLEMS_SHOWN + 5, "a <b> & `c`").slack()["text"]
    assert "`a &lt;b&gt; &amp; 'c'`" in text
    assert text.count("• *job") == SLACK_PROBLEMS_SHOWN
    assert text.endswith("… and 5 more")


def test_a_ping_body_fits_what_healthchecks_keeps() -> None:
    body = notice(50, "x" * 900).ping_body()
    assert len(body) <= PING_BODY_BYTES
    assert body.decode().startswith("db-backup on h: 50 of 51 backups FAILED")
    assert body.decode().endswith("(cut; the whole report is in the run's output)\n")


@pytest.mark.parametrize(
    ("on", "failed", "heard"),
    [
        ("failure", True, True),
        ("failure", False, False),
        ("success", True, False),
        ("success", False, True),
        ("always", True, True),
        ("always", False, True),
    ],
)
def test_who_hears_of_which_run(on: str, failed: bool, heard: bool) -> None:
    [slack] = load(f'  - {{kind: slack, webhook_url: "https://x/y", on: {on}}}\n')
    assert wants(slack, notice(1 if failed else 0)) is heard
    test_message = Notice("notify-test", "h", "c", "notifiers", 1, 0, (), b"{}")
    assert wants(slack, test_message)  # a test reaches every notifier
