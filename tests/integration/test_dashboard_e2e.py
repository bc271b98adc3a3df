"""End to end in headless Chromium (Debian's /usr/bin/chromium driven by Playwright; no browser download):
a dashboard over a replayed session shows the journal's positions and PnL, refuses the kill switch to an
anonymous user, accepts it after login, and the executor then stops entering."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.integration.test_dashboard_support import (
    DAY2,
    PASSWORD,
    SESSION_OPEN,
    clear_journal,
    dashboard_settings,
    ingest_market,
    journal_truth,
    new_strategy,
    replay,
    running_dashboard,
)
from tradeloom.adapters.db import Database
from tradeloom.settings import project_root

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = project_root() / ".loom" / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "install Debian's chromium (apt-get install -y chromium): the e2e test needs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def _money(value: float) -> str:
    """The page's number format (en-US, two decimals), written independently in Python."""
    return f"{value:,.2f}".replace("-0.00", "0.00")


def _entries_after(db: Database, strategy: str, moment: datetime) -> list[str]:
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("select client_order_id from orders where strategy = %s and purpose = 'entry' and bar_at >= %s",
                    (strategy, moment))
        return [str(row[0]) for row in cur.fetchall()]


def _decisions_after(db: Database, strategy: str, moment: datetime) -> list[dict[str, object]]:
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("select record from decisions where strategy = %s and bar_at >= %s order by bar_at",
                    (strategy, moment))
        return [row[0] for row in cur.fetchall()]


def test_dashboard_replayed_session_shows_journal_and_kill_stops_entries(
    clean_db: Database, browser: Browser, tmp_path: Path
) -> None:
    ingest_market(clean_db)
    clear_journal(clean_db)
    strategy = new_strategy("e2e")
    state_root = tmp_path / "executor"  # the executor's and the dashboard's: the kill file is shared
    paused_at = DAY2.replace(hour=5, minute=45)
    service = replay(clean_db, state_root, strategy, paused_at)
    truth = journal_truth(clean_db, strategy)
    broker_positions = {p.instrument_key: p.quantity for p in service.broker.positions() if p.quantity}
    assert truth.orders > 0, "the replayed morning should trade"

    with running_dashboard(dashboard_settings(state_root, strategy), clean_db) as url:
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(url)
        expect(page.locator("body")).to_have_attribute("data-loaded", "true", timeout=15_000)

        # Positions and PnL agree with the broker and the journal.
        rows = page.locator("#positions tbody tr[data-instrument]")
        shown = {rows.nth(i).get_attribute("data-instrument"): int(rows.nth(i).get_attribute("data-quantity") or 0)
                 for i in range(rows.count())}
        assert {key: q for key, q in shown.items() if q} == broker_positions
        assert {key: q for key, q in shown.items() if q} == {k: q for k, q in truth.net_quantity.items() if q}
        pnl = truth.equity - truth.first_equity
        assert float(page.locator("#pnl").get_attribute("data-value") or "nan") == pytest.approx(pnl, abs=1e-3)
        assert page.locator("#pnl").inner_text() == _money(pnl)
        assert page.locator("#equity").inner_text() == _money(truth.equity)
        expect(page.locator("#kill-state")).to_have_attribute("data-engaged", "false")
        assert page.locator("#recent-orders tbody tr[data-client-order-id]").count() > 0
        assert page.locator("#signals tbody tr[data-instrument]").count() == 3

        # Anonymous: refused, nothing written.
        page.click("#kill-button")
        expect(page.locator("#control-message")).to_have_attribute("data-status", "401")
        assert not (state_root / strategy / "KILL").exists()

        # Logged in: the kill switch is engaged and journaled.
        page.fill("#login-password", PASSWORD)
        page.click("#login-button")
        expect(page.locator("#auth-user")).to_have_text("signed in as operator")
        page.fill("#control-reason", "e2e: operator stop")
        page.click("#kill-button")
        expect(page.locator("#control-message")).to_have_attribute("data-status", "200")
        expect(page.locator("#control-message")).to_contain_text("journaled")
        assert (state_root / strategy / "KILL").exists()
        expect(page.locator("#kill-state")).to_have_attribute("data-engaged", "true")
        expect(page.locator("#events tbody tr[data-kind=kill_switch][data-actor='dashboard:operator']")).to_have_count(
            1)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-before-resume-of-replay.png"), full_page=True)

        # The executor picks the file up at its next bar and enters nothing for the rest of the session.
        service.run_replay(SESSION_OPEN, DAY2.replace(hour=8))
        service.close()
        assert service.trader.kill_switch is True
        assert _entries_after(clean_db, strategy, paused_at) == []
        after = _decisions_after(clean_db, strategy, paused_at)
        assert len(after) == 135  # 05:45-08:00 UTC, one decision per bar
        wanted = [record for record in after
                  if any(value["signal"] != 0 for value in record["instruments"].values())]  # type: ignore[attr-defined]
        assert wanted, "the model kept signalling after the kill: the absence of entries is the kill's doing"
        fired = {event["rule"] for record in after for event in record["events"]}  # type: ignore[attr-defined]
        assert "kill_switch" in fired

        # The page follows: the executor's own kill event, the kill rule firing, the later bars.
        expect(page.locator("#events tbody tr[data-kind=kill_switch][data-actor=file]")).to_have_count(1,
                                                                                                        timeout=10_000)
        expect(page.locator("#rules tbody tr[data-rule=kill_switch]").first).to_be_visible()
        expect(page.locator("#signals-bar")).to_contain_text("2024-01-02 07:59")
        final = journal_truth(clean_db, strategy)
        expect(page.locator("#pnl")).to_have_text(_money(final.equity - final.first_equity))
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        page.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
