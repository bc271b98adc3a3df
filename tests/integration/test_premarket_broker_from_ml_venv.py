"""`run_checks` from the ML venv (as `tradeloom premarket` runs it) with broker=kite: the ML venv has no
broker SDK, so the broker step runs in the live venv against the fake Kite server and its verdict lands
in the health flag."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from pipelines.premarket import PremarketSettings, read_health, run_checks
from tradeloom.adapters.brokers.fakes.kite_server import FakeKiteServer
from tradeloom.adapters.db import Database
from tradeloom.errors import ConfigError

SESSION = date(2024, 3, 5)


@pytest.fixture
def kite_env(monkeypatch: pytest.MonkeyPatch, clean_db: Database, tmp_path: Path) -> Iterator[FakeKiteServer]:
    with FakeKiteServer() as server:
        for key, value in {"TRADELOOM_DATABASE_NAME": clean_db.settings.database_name,
                           "TRADELOOM_HOME": str(clean_db.settings.home),
                           "TRADELOOM_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'registry.db'}",
                           "TRADELOOM_BROKER_NAME": "kite", "TRADELOOM_BROKER_KITE__API_KEY": server.api_key,
                           "TRADELOOM_BROKER_KITE__API_SECRET": server.api_secret,
                           "TRADELOOM_BROKER_KITE__ACCESS_TOKEN": server.issue_access_token(),
                           "TRADELOOM_BROKER_KITE__ROOT": server.root,
                           "TRADELOOM_BROKER_KITE__READ_RETRY_ATTEMPTS": "1"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("DATABASE_URL", raising=False)
        yield server


def test_run_checks_kite_from_ml_venv_delegates_to_live_venv_green_then_red(
    clean_db: Database, kite_env: FakeKiteServer, tmp_path: Path
) -> None:
    assert importlib.util.find_spec("kiteconnect") is None  # the point: no SDK in this interpreter
    settings = PremarketSettings(require_champion=False, health_dir=tmp_path / "health")
    green = run_checks(clean_db, SESSION, settings)
    assert green["status"] == "green", green["checks"]
    assert green["checks"]["instrument_refresh"]["data"]["inserted"] == len(kite_env.listings)
    assert ("GET", "/user/profile") in kite_env.requests
    read_health(tmp_path / "health", SESSION)

    kite_env.expire_tokens()
    red = run_checks(clean_db, SESSION, settings)
    assert red["status"] == "red" and "session rejected" in red["checks"]["broker_session"]["detail"]
    assert kite_env.api_secret not in (tmp_path / "health" / "premarket.json").read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="broker_session"):
        read_health(tmp_path / "health", SESSION)


def test_run_checks_kite_without_credentials_red_names_settings(
    clean_db: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRADELOOM_BROKER_NAME", "kite")
    monkeypatch.setenv("TRADELOOM_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'registry.db'}")
    result = run_checks(clean_db, SESSION, PremarketSettings(require_champion=False, health_dir=tmp_path))
    session = result["checks"]["broker_session"]
    assert result["status"] == "red" and not session["ok"] and "TRADELOOM_BROKER_KITE__API_KEY" in session["detail"]
