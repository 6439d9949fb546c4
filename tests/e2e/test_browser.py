"""The web UI in a real browser: Playwright driving Debian's chromium against a real
`serve --web` and a real PostgreSQL. Find a job on the dashboard, press "Run now", watch its
progress on the runs page (its dump held half-way until the test has seen it), see the row
turn to ok; a failing job shows its error; the prune preview keeps the newest; the job page
shows the new backup, and "Restore-test now" marks it OK. Accessibility
basics: every action has an accessible name, no status is told by colour alone. Screenshots
of the dashboard and a job page go to the test's folder and to docs/ (the README shows them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db_backup.pgcluster import ThrowawayCluster, free_port
from tests.conftest import REPO, StartCli, cli_env, create_database, server_defaults, write_config
from tests.fakes import holding_dump
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's package (.ci/run)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium: apt-get install chromium (CI installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # As root, chromium's sandbox cannot start; the pages are our own, on loopback.
        arguments = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=arguments)
        try:
            yield launched
        finally:
            launched.close()


def test_run_now_watch_it_and_see_the_backup_and_a_failure_in_the_browser(
    pg: ThrowawayCluster, tmp_path: Path, start_cli: StartCli, browser: Any
) -> None:
    from playwright.sync_api import expect

    create_database(pg, "shop", "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS ref "
                    "FROM generate_series(1, 60000) g;")  # fmt: skip
    gate, held = tmp_path / "gate", tmp_path / "held"
    wrapper = holding_dump(tmp_path, pg.client_bin("pg_dump"), gate, held, after=300_000)
    config = write_config(
        tmp_path / "backup.yml",
        {
            "timezone": "Europe/Berlin",
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [
                {
                    "name": "shop",
                    "database": "shop",
                    "pg_dump_path": str(wrapper),
                    "retention": {"keep_last": 3},
                },
                {"name": "broken", "database": "no_such_db"},
            ],
        },
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_cli("serve", "-c", str(config), "--web", "--listen", f"127.0.0.1:{port}",
                        env=cli_env(pg))  # fmt: skip
    page = browser.new_page(viewport={"width": 1400, "height": 800})

    def dashboard() -> bool:
        try:
            page.goto(f"{base}/")
        except Exception:
            return False
        return True

    wait_for(dashboard, what="the dashboard", process=process)
    shop = page.locator('tr[data-job="shop"]')
    expect(shop).to_contain_text("no backup yet")
    # every action is named for assistive technology; every status says itself in words
    buttons = page.get_by_role("button")
    assert buttons.count() >= 3  # filter, and a run-now per job
    for index in range(buttons.count()):
        assert buttons.nth(index).get_attribute("aria-label") or buttons.nth(index).inner_text()
    for cell in page.locator(".status").all():
        assert any(c.isalpha() for c in cell.inner_text())

    page.get_by_role("button", name="Run shop now").click()
    expect(page).to_have_url(f"{base}/runs?note=shop+started")
    wait_for(held.exists, what="the dump to be held", process=process)
    running = page.locator('tr[data-job="shop"]')
    expect(running).to_be_visible(timeout=15_000)  # htmx's polling brought it
    expect(running).to_contain_text("KiB")
    gate.touch()  # let the dump finish

    def row_is(job: str, status: str) -> bool:
        answer = page.goto(f"{base}/")
        assert answer is not None
        assert answer.ok, answer.text()
        return "row-" + status in (
            page.locator(f'tr[data-job="{job}"]').get_attribute("class") or ""
        )

    wait_for(lambda: row_is("shop", "ok"), what="shop's row turning ok", process=process)
    expect(page.locator('tr[data-job="shop"]')).to_contain_text("✓ ok")

    page.get_by_role("button", name="Run broken now").click()
    wait_for(lambda: row_is("broken", "failed"), what="broken failing", process=process)
    expect(page.locator('tr[data-job="broken"]')).to_contain_text("no_such_db")
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    for folder in (tmp_path, docs):
        page.screenshot(path=str(folder / "web-dashboard.png"), full_page=True)

    page.get_by_role("link", name="Prune preview").click()
    expect(page.locator("tbody")).to_contain_text("keep")
    expect(page.locator("tbody")).to_contain_text("newest")

    page.goto(f"{base}/jobs/shop")
    expect(page.locator("h1")).to_contain_text("shop")
    expect(page.locator("table")).to_contain_text(".sql.gz")
    page.get_by_role("button", name="Restore-test shop now").click()
    expect(page).to_have_url(f"{base}/runs?note=restore+test+of+shop+started")

    def restore_tested() -> bool:
        page.goto(f"{base}/jobs/shop")
        newest: str = page.locator("tbody tr").first.inner_text()
        return newest.rstrip().endswith("OK")

    wait_for(restore_tested, what="shop restore-tested, on its page", process=process)
    for folder in (tmp_path, docs):
        page.screenshot(path=str(folder / "web-job.png"), full_page=True)
    process.terminate()
    process.communicate(timeout=60)
