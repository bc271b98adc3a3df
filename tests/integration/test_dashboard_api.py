"""The dashboard's JSON API over a replayed executor session in the real test database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pipelines.dashboard.app import COOKIE, create_app
from pipelines.dashboard.auth import SessionSigner, hash_password, verify_password
from pipelines.dashboard.settings import DashboardSettings
from tests.conftest import DATA_TABLES
from tests.integration.test_dashboard_support import (
    CASH,
    KEYS,
    PASSWORD,
    SESSION_OPEN,
    TOKEN,
    clear_journal,
    dashboard_settings,
    ingest_market,
    journal_truth,
    new_strategy,
    replay,
)
from tradeloom.adapters.db import Database
from tradeloom.errors import ConfigError


@dataclass(frozen=True)
class Session:
    db: Database
    strategy: str
    state_root: Path
    broker_positions: dict[str, int]


@pytest.fixture(scope="module")
def session(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """One replayed morning (09:15-11:15 IST) shared by the module's read-only tests."""
    with database.transaction(database.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute(f"truncate {', '.join(DATA_TABLES)} restart identity cascade")
    ingest_market(database)
    clear_journal(database)
    state_root = tmp_path_factory.mktemp("executor")
    strategy = new_strategy("api")
    service = replay(database, state_root, strategy, SESSION_OPEN.replace(hour=5, minute=45))
    broker_positions = {p.instrument_key: p.quantity for p in service.broker.positions() if p.quantity}
    service.close()
    yield Session(database, strategy, state_root, broker_positions)


def _client(session: Session, tmp_path: Path, **overrides: object) -> TestClient:
    """A dashboard whose control files go to this test's own directory (tests never see each other's kill)."""
    strategy = str(overrides.pop("strategy", session.strategy))
    settings = dashboard_settings(tmp_path / "controls", strategy, **overrides)
    return TestClient(create_app(settings, session.db))


def _journaled(db: Database, kind: str, file: Path) -> list[tuple[str, str]]:
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("select actor, detail->>'reason' from executor_events where kind = %s and detail->>'file' = %s",
                    (kind, str(file)))
        return [(str(actor), str(reason)) for actor, reason in cur.fetchall()]


def _login(client: TestClient, password: str = PASSWORD) -> int:
    return int(client.post("/api/login", json={"username": "operator", "password": password}).status_code)


# -- reading ----------------------------------------------------------------------------------------------

def test_positions_session_with_trades_match_broker_and_journal(session: Session, tmp_path: Path) -> None:
    response = _client(session, tmp_path).get("/api/positions")
    assert response.status_code == 200, response.text
    body = response.json()
    truth = journal_truth(session.db, session.strategy)
    shown = {row["instrument"]: row["quantity"] for row in body["positions"] if row["quantity"]}
    assert sum(row["fills"] for row in body["positions"]) > 0, "the replayed morning should trade"
    assert shown == session.broker_positions
    assert shown == {key: q for key, q in truth.net_quantity.items() if q}
    assert body["equity"] == pytest.approx(truth.equity, abs=1e-4)
    # Average-cost PnL per instrument must add up to the broker's cash-based equity change.
    pnl = sum(row["realized_pnl"] + row["unrealized_pnl"] - row["fees"] for row in body["positions"])
    assert pnl == pytest.approx(truth.equity - CASH, abs=0.05)
    assert sum(row["fees"] for row in body["positions"]) == pytest.approx(truth.fees, abs=1e-6)


def test_equity_replayed_morning_pnl_is_last_minus_first_snapshot(session: Session, tmp_path: Path) -> None:
    body = _client(session, tmp_path).get("/api/equity").json()
    truth = journal_truth(session.db, session.strategy)
    assert body["day"] == "2024-01-02"
    assert len(body["points"]) == 120
    assert body["pnl"] == pytest.approx(truth.equity - truth.first_equity, abs=1e-4)
    peak = max(point["equity"] for point in body["points"])
    assert body["max_drawdown"] <= 0.0
    assert body["drawdown"] == pytest.approx(truth.equity / peak - 1.0, abs=1e-9)


def test_signals_latest_decision_lists_every_instrument_with_confidence(session: Session, tmp_path: Path) -> None:
    body = _client(session, tmp_path).get("/api/signals").json()
    assert [row["instrument"] for row in body["instruments"]] == sorted(KEYS)
    assert all(0.0 <= row["confidence"] <= 1.0 for row in body["instruments"])
    assert all(len(row["probabilities"]) == 3 for row in body["instruments"])
    assert body["model"].startswith("baseline:sma_cross")
    assert len(body["feature_snapshot_hash"]) == 16
    assert body["bar_at"] == SESSION_OPEN.replace(hour=5, minute=44).isoformat()
    assert body["rules"], "a trading morning fires entry and stop rules"
    assert all(rule["rule"] and rule["action"] and rule["bar_at"] <= body["bar_at"] for rule in body["rules"])


def test_orders_carry_state_and_lineage_and_match_journal_counts(session: Session, tmp_path: Path) -> None:
    body = _client(session, tmp_path).get("/api/orders").json()
    truth = journal_truth(session.db, session.strategy)
    assert sum(body["by_state"].values()) == truth.orders > 0
    assert len(body["open"]) == truth.open_orders
    assert all(order["state"] not in {"filled", "cancelled", "rejected", "expired"} for order in body["open"])
    for order in body["recent"]:
        assert order["model_version"] == "baseline"
        assert len(order["feature_snapshot_hash"]) == 16
        assert order["side"] in {"BUY", "SELL"}


def test_status_fresh_session_reports_no_controls_and_a_bar_lag(session: Session, tmp_path: Path) -> None:
    body = _client(session, tmp_path).get("/api/status").json()
    assert body["kill_switch"]["engaged"] is False
    assert body["pause_entries"]["engaged"] is False
    assert body["last_bar_at"] == SESSION_OPEN.replace(hour=5, minute=44).isoformat()
    assert body["feed_lag_seconds"] > 86_400  # historical bars replayed now
    assert 0 <= body["journal_lag_seconds"] < 3_600


def test_state_unknown_strategy_in_empty_journal_returns_empty_views(session: Session, tmp_path: Path) -> None:
    body = _client(session, tmp_path, strategy="never_traded").get("/api/state").json()
    assert body["positions"]["positions"] == []
    assert body["equity"]["points"] == []
    assert body["orders"]["recent"] == []


def test_page_and_assets_served_with_security_headers(session: Session, tmp_path: Path) -> None:
    client = _client(session, tmp_path)
    page = client.get("/")
    assert page.status_code == 200 and 'id="kill-button"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/dashboard.js").status_code == 200
    assert client.get("/static/../settings.py").status_code == 404


# -- authentication and controls ------------------------------------------------------------------------

def test_kill_without_login_is_refused_and_writes_nothing(session: Session, tmp_path: Path) -> None:
    client = _client(session, tmp_path)
    response = client.post("/api/controls/kill", json={"reason": "anonymous"})
    kill_file = tmp_path / "controls" / session.strategy / "KILL"
    assert response.status_code == 401
    assert not kill_file.exists()
    assert _journaled(session.db, "kill_switch", kill_file) == []


def test_kill_after_login_writes_file_and_journals_actor(session: Session, tmp_path: Path) -> None:
    client = _client(session, tmp_path)
    assert _login(client) == 200
    response = client.post("/api/controls/kill", json={"reason": "runaway model"})
    kill_file = tmp_path / "controls" / session.strategy / "KILL"
    assert response.status_code == 200, response.text
    assert response.json()["journaled"] is True
    assert kill_file.exists() and "runaway model by dashboard:operator" in kill_file.read_text()
    assert _journaled(session.db, "kill_switch", kill_file) == [("dashboard:operator", "runaway model")]
    with session.db.transaction(session.db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("select engaged, actor from executor_controls where control = 'kill_switch'")
        assert cur.fetchone() == (True, "dashboard:operator")
    assert client.get("/api/status").json()["kill_switch"]["engaged"] is True


def test_pause_and_resume_with_bearer_token_toggle_pause_file(session: Session, tmp_path: Path) -> None:
    client = _client(session, tmp_path)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    pause_file = tmp_path / "controls" / session.strategy / "PAUSE"
    assert client.post("/api/controls/pause", json={"reason": "news"}, headers=headers).status_code == 200
    assert pause_file.exists()
    assert client.get("/api/status").json()["pause_entries"]["engaged"] is True
    assert client.post("/api/controls/resume", json={}, headers=headers).status_code == 200
    assert not pause_file.exists()
    assert _journaled(session.db, "pause_entries", pause_file) == [("dashboard:token", "news")]
    assert _journaled(session.db, "resume_entries", pause_file) == [("dashboard:token", "operator")]


def test_wrong_token_and_wrong_password_are_refused(session: Session, tmp_path: Path) -> None:
    client = _client(session, tmp_path)
    wrong = {"Authorization": "Bearer not-the-token-at-all-000"}
    assert client.post("/api/controls/kill", json={}, headers=wrong).status_code == 401
    assert _login(client, "wrong password") == 401
    assert client.get("/api/session").json()["authenticated"] is False
    assert not (tmp_path / "controls" / session.strategy / "KILL").exists()


def test_repeated_failed_logins_are_throttled(session: Session, tmp_path: Path) -> None:
    client = _client(session, tmp_path)
    codes = [_login(client, f"guess {i}") for i in range(6)]
    assert codes == [401] * 5 + [429]
    assert _login(client) == 429  # even the right password waits out the window


def test_tampered_session_cookie_is_not_a_login(session: Session, tmp_path: Path) -> None:
    client = _client(session, tmp_path)
    forged = SessionSigner(b"a different secret, 32 bytes long", 3600).sign("operator")
    client.cookies.set(COOKIE, forged)
    assert client.post("/api/controls/kill", json={}).status_code == 401


def test_cookie_control_with_form_body_is_refused_as_csrf(session: Session, tmp_path: Path) -> None:
    client = _client(session, tmp_path)
    assert _login(client) == 200
    response = client.post("/api/controls/kill", content="reason=x",
                           headers={"Content-Type": "text/plain"})
    assert response.status_code in {415, 422}
    assert not (tmp_path / "controls" / session.strategy / "KILL").exists()


def test_controls_without_configured_credentials_are_disabled(session: Session, tmp_path: Path) -> None:
    client = _client(session, tmp_path, password_hash=None, token=None)
    assert client.post("/api/login", json={"password": PASSWORD}).status_code == 403
    assert client.post("/api/controls/kill", json={}).status_code == 403


def test_read_requires_login_hides_views_until_login(session: Session, tmp_path: Path) -> None:
    client = _client(session, tmp_path, read_requires_login=True)
    assert client.get("/api/state").status_code == 401
    assert client.get("/api/positions").status_code == 401
    assert _login(client) == 200
    assert client.get("/api/state").status_code == 200


# -- credentials ----------------------------------------------------------------------------------------

def test_password_hash_round_trip_accepts_only_the_password() -> None:
    stored = hash_password("s3cret-enough")
    assert stored.startswith("scrypt$") and "s3cret-enough" not in stored
    assert verify_password("s3cret-enough", stored)
    assert not verify_password("s3cret-enougH", stored)
    assert hash_password("s3cret-enough") != stored  # salted


def test_session_signer_expired_cookie_is_rejected() -> None:
    signer = SessionSigner(b"0123456789abcdef0123", 60)
    cookie = signer.sign("operator", now=1000.0)
    assert signer.verify(cookie, now=1030.0) is not None
    assert signer.verify(cookie, now=1061.0) is None


def test_settings_plain_password_and_short_token_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="PASSWORD_HASH"):
        DashboardSettings(password_hash=SecretStr("hunter22"))
    with pytest.raises(ConfigError, match="at least 16"):
        DashboardSettings(token=SecretStr("short"))


def test_hash_password_cli_prints_a_verifiable_hash(cli_env: dict[str, str]) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "dashboard", "hash-password", "--stdin"],
        input="operator password\n", capture_output=True, text=True, env=cli_env, check=True, timeout=60)
    stored = result.stdout.strip().splitlines()[-1]
    assert verify_password("operator password", stored)
    assert json.dumps(stored)  # a single line, safe for an env file


# -- the Grafana dashboard --------------------------------------------------------------------------------

def test_grafana_dashboard_queries_only_metrics_the_executor_exports() -> None:
    import re

    from executor.metrics import Metrics
    from tradeloom.settings import project_root

    exported: set[str] = set()
    for family in Metrics(None).registry.collect():
        suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}.get(family.type, ("",))
        exported |= {family.name + suffix for suffix in suffixes}
    dashboard = json.loads((project_root() / "docker" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\btradeloom_[a-z_]+", expr)}
    assert len(dashboard["panels"]) >= 8
    assert used, "the dashboard should query the executor's metrics"
    assert used <= exported, f"unknown metrics: {sorted(used - exported)}"
    assert {"tradeloom_kill_switch", "tradeloom_feed_lag_seconds", "tradeloom_step_seconds_bucket"} <= used
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
