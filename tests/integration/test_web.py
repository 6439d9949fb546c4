"""The web UI's routes with Starlette's test client: logins where they are needed (and a
refusal to start without one off loopback), CSRF on the one action, read-only mode, the
security headers, and no secret of the config on any page."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from db_backup.config.load import parse_config
from db_backup.config.schema import WebConfig
from db_backup.endpoints import make_app
from db_backup.schedule import parse_schedule, parse_zone
from db_backup.web import WebState, guarded, web_routes
from db_backup.web.security import Guard, WebError, guard_for, hash_password
from db_backup.web.views import Attempted

NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
SECRETS = ("pg-S3cret-pass", "AKIA-secret-key-9f8e", "https://hooks.example/T000/B000/XXXXsecret")
CONFIG = f"""\
timezone: Europe/Berlin
defaults:
  host: db1.internal
  username: backup
  password: {SECRETS[0]}
  storage:
    - {{path: /var/backups/db}}
    - {{kind: s3, bucket: vault, access_key_id: AKIA0000, secret_access_key: {SECRETS[1]}}}
backups:
  - {{name: shop, database: shop, schedule: "0 2 * * *"}}
  - {{name: crm, database: crm}}
notify:
  - {{kind: slack, webhook_url: "{SECRETS[2]}"}}
"""


class Source:
    """What serve would know: two jobs, one failing, one running; records "run now"s."""

    def __init__(self) -> None:
        self.config = parse_config(CONFIG, "backup.yml", environ={})
        self.started: list[str] = []

    def web_state(self) -> WebState:
        zone = parse_zone(self.config.timezone)
        nightly = parse_schedule("0 2 * * *", zone)
        error = "pg_dump exited with code 1: connection refused"
        return WebState(
            config=self.config,
            archives=[],
            schedules={"shop": (nightly, nightly.next_after(NOW))},
            running={"crm": {"job": "crm", "started_at": (NOW - timedelta(seconds=10)).isoformat(),
                             "raw_bytes": 5_000_000, "stored_bytes": 900_000,
                             "estimated_bytes": 10_000_000}},
            attempts={"shop": Attempted(NOW - timedelta(hours=3), ok=False, error=error)},
            failures={"shop": [(NOW - timedelta(hours=3), error)]},
            tasks=[],
            zone=zone,
            now=NOW,
        )  # fmt: skip

    def run_now(self, job: str) -> str:
        self.started.append(job)
        return f"{job} started"

    def verify_now(self, job: str) -> str:
        self.started.append(f"verify {job}")
        return f"restore test of {job} started"

    async def prune_preview(self) -> list[Any]:
        return []

    # the endpoints' Status, for the app they share
    def metrics_text(self) -> str:
        return ""

    def healthy(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {}


Client = Callable[..., TestClient]


@pytest.fixture
def client() -> Client:
    def make(source: Source, guard: Guard) -> TestClient:
        app = guarded(make_app(source, web_routes(source, guard)), guard)
        return TestClient(app, base_url="http://127.0.0.1:9187", follow_redirects=False)

    return make


def open_guard(**settings: Any) -> Guard:
    return guard_for(WebConfig(**settings), "127.0.0.1")


def test_pages_render_failing_first_with_icon_and_word_and_without_any_secret(
    client: Client,
) -> None:
    web = client(Source(), open_guard())
    paths = ("/", "/?q=sho", "/jobs/shop", "/runs", "/runs/live", "/prune", "/?sort=job")
    pages = [web.get(path) for path in paths]
    for page in pages:
        assert page.status_code == 200, page.text
        for secret in SECRETS:
            assert secret not in page.text
    dashboard = pages[0].text
    assert dashboard.index('data-job="shop"') < dashboard.index('data-job="crm"')  # failing first
    assert "✗</span> failed" in dashboard  # not colour alone
    assert "connection refused" in dashboard
    assert 'aria-label="Run shop now"' in dashboard
    assert 'title="2026-12-03 01:00:00 UTC">2026-12-03 02:00 CET' in dashboard  # zone, UTC on hover
    assert "crm" not in pages[1].text.split("<tbody>")[1]  # filtered out
    assert "connection refused" in pages[2].text  # the job page's last failures
    assert "4.8 MiB" in pages[4].text  # the running job's progress
    assert "No backups with a retention policy" in pages[5].text
    by_name = pages[6].text
    assert by_name.index('data-job="crm"') < by_name.index('data-job="shop"')  # sorted by job
    for name, value in {
        "content-security-policy": "script-src 'self'",
        "x-frame-options": "DENY",
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
    }.items():
        assert value in pages[0].headers[name]


def test_the_action_needs_its_csrf_token_and_the_same_origin(client: Client) -> None:
    source = Source()
    guard = open_guard()
    web = client(source, guard)
    assert web.post("/jobs/shop/run").status_code == 403
    assert web.post("/jobs/shop/run", data={"csrf": "guess"}).status_code == 403
    other_site = {"Origin": "https://evil.example"}
    assert (
        web.post("/jobs/shop/run", data={"csrf": guard.csrf}, headers=other_site).status_code == 403
    )
    assert source.started == []
    done = web.post("/jobs/shop/run", data={"csrf": guard.csrf},
                    headers={"Origin": "http://127.0.0.1:9187"})  # fmt: skip
    assert done.status_code == 303
    assert source.started == ["shop"]
    assert web.get("/jobs/shop/run").status_code == 404  # GET never acts: no such page
    assert web.post("/jobs/shop/verify").status_code == 403  # the other action: the same rule
    assert web.post("/jobs/shop/verify", data={"csrf": guard.csrf}).status_code == 303
    assert source.started == ["shop", "verify shop"]


def test_read_only_shows_no_action_and_refuses_one(client: Client) -> None:
    source = Source()
    guard = open_guard(read_only=True)
    web = client(source, guard)
    assert "Run now" not in web.get("/").text
    assert web.post("/jobs/shop/run", data={"csrf": guard.csrf}).status_code == 403
    assert source.started == []


def test_off_loopback_a_login_is_required_to_start_and_on_every_request(
    client: Client, tmp_path: Path
) -> None:
    with pytest.raises(WebError, match="not a loopback address, needs a login"):
        guard_for(WebConfig(), "0.0.0.0")  # noqa: S104
    token = tmp_path / "token"
    token.write_text("a-long-random-token-0123456789\n")
    bearer = guard_for(WebConfig(token_file=str(token)), "0.0.0.0")  # noqa: S104
    web = client(Source(), bearer)
    refused = web.get("/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert web.get("/healthz").status_code == 200  # the probe stays open
    assert web.get("/metrics").status_code == 401
    ok = {"Authorization": "Bearer a-long-random-token-0123456789"}
    assert web.get("/", headers=ok).status_code == 200
    assert web.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401

    settings = WebConfig(username="ops", password_hash=hash_password("pa55 word:x"))
    basic = client(Source(), guard_for(settings, "0.0.0.0"))  # noqa: S104

    def login(user: str, password: str) -> dict[str, str]:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    assert basic.get("/", headers=login("ops", "pa55 word:x")).status_code == 200
    assert basic.get("/", headers=login("ops", "pa55 word")).status_code == 401
    assert basic.get("/", headers=login("root", "pa55 word:x")).status_code == 401
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(WebError, match="at least 16 characters"):
        guard_for(WebConfig(token_file=str(short)), "127.0.0.1")


def test_without_a_login_only_this_machines_names_are_answered(client: Client) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends
    Host: evil.example — refused, so it can neither read the pages nor the CSRF token."""
    source = Source()
    guard = open_guard()
    app = guarded(make_app(source, web_routes(source, guard)), guard)
    rebound = TestClient(app, base_url="http://evil.example:9187", follow_redirects=False)
    assert rebound.get("/").status_code == 403
    posted = rebound.post("/jobs/shop/run", data={"csrf": guard.csrf},
                          headers={"Origin": "http://evil.example:9187"})  # fmt: skip
    assert posted.status_code == 403
    assert source.started == []
    for name in ("localhost:9187", "[::1]:9187", "127.0.0.1"):
        assert client(source, guard).get("/", headers={"Host": name}).status_code == 200


def test_a_backup_whose_name_extends_anothers_is_its_own_job(client: Client) -> None:
    source = Source()
    source.config = parse_config(
        CONFIG.replace("  - {name: crm, database: crm}", "  - {name: shop.eu, database: eu}"),
        "backup.yml",
        environ={},
    )
    guard = open_guard()
    web = client(source, guard)
    assert "database eu on" in web.get("/jobs/shop.eu").text
    web.post("/jobs/shop.eu/run", data={"csrf": guard.csrf})
    assert source.started == ["shop.eu"]


def test_errors_reach_the_pages_with_secrets_masked() -> None:
    from db_backup.cli.serving import Service
    from db_backup.model import JobFinished, JobResult, JobStatus
    from db_backup.plan import build_plan
    from db_backup.redact import remember

    config = parse_config(CONFIG, "backup.yml", environ={})
    remember(SECRETS[0])
    [job, _] = build_plan(config, NOW).jobs
    failed = JobResult(job, JobStatus.FAILED, started_at=NOW, finished_at=NOW,
                       error=f"internal error: auth with {SECRETS[0]} refused")  # fmt: skip
    service = Service(Path("backup.yml"), config)
    service.track(JobFinished(failed))
    shown = service.web_state()
    assert shown.attempts[job.name].error == "internal error: auth with *** refused"
    assert SECRETS[0] not in str(shown.failures[job.name])
