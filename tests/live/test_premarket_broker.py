"""The premarket broker step against the fake Kite and Fyers servers (real SDKs): the session is proven
by an authenticated call, the instrument master is refreshed with counts, and a dead session turns the
health flag red with a clear reason and no secret in it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipelines.broker_connection import BrokerSettings
from pipelines.premarket import Check, broker_checks, read_health
from tradeloom.adapters.brokers.fakes.fyers_server import FakeFyersServer
from tradeloom.adapters.brokers.fakes.kite_server import FakeKiteServer
from tradeloom.adapters.brokers.fyers.config import FyersConfig
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.adapters.db import Database
from tradeloom.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ML_PYTHON = ROOT / ".loom" / "venv-ml" / "bin" / "python"
SESSION = "2024-03-05"


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def _instrument_rows(database: Database) -> dict[str, tuple[Any, ...]]:
    with database.transaction() as conn, conn.cursor() as cur:
        cur.execute("select exchange || ':' || symbol, kite_token, fyers_symbol, tick_size, lot_size, updated_at "
                    "from instruments")
        return {row[0]: tuple(row[1:]) for row in cur.fetchall()}


def _fyers(config: FyersConfig, server: FakeFyersServer) -> FyersConfig:
    return config.model_copy(update={"symbol_master_root": server.symbol_master_root})


def test_broker_checks_paper_not_needed_green(clean_db: Database) -> None:
    checks = _by_name(broker_checks(clean_db, BrokerSettings(name="paper")))
    assert set(checks) == {"broker_session", "instrument_refresh"}
    assert all(check.ok and "not needed" in check.detail for check in checks.values())
    assert _instrument_rows(clean_db) == {}


def test_broker_checks_kite_refresh_upserts_then_second_run_changes_nothing(
    clean_db: Database, kite_server: FakeKiteServer, kite_config: KiteConfig
) -> None:
    settings = BrokerSettings(name="kite", kite=kite_config)
    first = _by_name(broker_checks(clean_db, settings))
    assert first["broker_session"].ok and "AB1234" in first["broker_session"].detail
    assert ("GET", "/user/profile") in kite_server.requests  # proven by the broker, not by a file's date
    listed = len(kite_server.listings)
    assert first["instrument_refresh"].ok
    assert first["instrument_refresh"].data | {} == {"broker": "kite", "listed": listed, "inserted": listed,
                                                      "updated": 0, "unchanged": 0, "missing": []}
    rows = _instrument_rows(clean_db)
    for listing in kite_server.listings:
        token, fyers_symbol, tick, lot, _ = rows[f"{listing.exchange}:{listing.tradingsymbol}"]
        assert (token, fyers_symbol, str(tick.normalize()), lot) == (
            listing.instrument_token, None, str(float(listing.tick_size)), listing.lot_size)

    second = _by_name(broker_checks(clean_db, settings))["instrument_refresh"]
    assert (second.data["inserted"], second.data["updated"], second.data["unchanged"]) == (0, 0, listed)
    assert _instrument_rows(clean_db) == rows  # not even updated_at moved

    kite_server.listings = (dataclasses.replace(kite_server.listings[0], tick_size="0.10", lot_size=5),
                            *kite_server.listings[1:])
    third = _by_name(broker_checks(clean_db, settings))["instrument_refresh"]
    assert (third.data["inserted"], third.data["updated"], third.data["unchanged"]) == (0, 1, listed - 1)
    changed = _instrument_rows(clean_db)["NSE:" + kite_server.listings[0].tradingsymbol]
    assert (float(changed[2]), changed[3]) == (0.10, 5)


def test_broker_checks_fyers_refresh_keeps_kite_tokens(
    clean_db: Database, kite_config: KiteConfig, fyers_config: FyersConfig, fyers_server: FakeFyersServer
) -> None:
    assert _by_name(broker_checks(clean_db, BrokerSettings(name="kite", kite=kite_config)))["instrument_refresh"].ok
    kite_token = _instrument_rows(clean_db)["NSE:INFY"][0]
    checks = _by_name(broker_checks(clean_db, BrokerSettings(name="fyers", fyers=_fyers(fyers_config, fyers_server))))
    assert checks["broker_session"].ok and "XY1234" in checks["broker_session"].detail
    refresh = checks["instrument_refresh"]
    # INFY was listed by Kite already (updated with its Fyers symbol); SBIN is new.
    assert (refresh.data["inserted"], refresh.data["updated"], refresh.data["unchanged"]) == (1, 1, 0)
    rows = _instrument_rows(clean_db)
    assert rows["NSE:INFY"][:2] == (kite_token, "NSE:INFY-EQ") and rows["NSE:SBIN"][:2] == (None, "NSE:SBIN-EQ")
    again = _by_name(broker_checks(clean_db, BrokerSettings(name="fyers", fyers=_fyers(fyers_config,
                                                                                        fyers_server))))
    assert again["instrument_refresh"].data["unchanged"] == 2


def test_broker_checks_kite_expired_token_red_reason_without_secret(
    clean_db: Database, kite_server: FakeKiteServer, kite_config: KiteConfig
) -> None:
    kite_server.expire_tokens()
    checks = _by_name(broker_checks(clean_db, BrokerSettings(name="kite", kite=kite_config)))
    session = checks["broker_session"]
    assert not session.ok and "session rejected" in session.detail and "login" in session.detail
    assert not checks["instrument_refresh"].ok and "skipped" in checks["instrument_refresh"].detail
    text = json.dumps([check.as_dict() for check in checks.values()])
    assert kite_config.access_token is not None
    for secret in (kite_config.api_secret.get_secret_value(), kite_config.access_token.get_secret_value()):
        assert secret not in text
    assert _instrument_rows(clean_db) == {}


def test_broker_checks_fyers_expired_token_red(
    clean_db: Database, fyers_server: FakeFyersServer, fyers_config: FyersConfig
) -> None:
    fyers_server.expire_tokens()
    checks = _by_name(broker_checks(clean_db, BrokerSettings(name="fyers", fyers=_fyers(fyers_config, fyers_server))))
    assert not checks["broker_session"].ok and "-16" in checks["broker_session"].detail
    assert fyers_config.access_token is not None
    assert fyers_config.access_token.get_secret_value() not in checks["broker_session"].detail


def test_broker_checks_kite_missing_token_file_red(
    clean_db: Database, kite_config: KiteConfig, tmp_path: Path
) -> None:
    config = kite_config.model_copy(update={"access_token": None, "token_file": tmp_path / "absent.json"})
    session = _by_name(broker_checks(clean_db, BrokerSettings(name="kite", kite=config)))["broker_session"]
    assert not session.ok and "absent.json" in session.detail


def test_broker_checks_universe_key_not_listed_refresh_red(clean_db: Database, kite_config: KiteConfig) -> None:
    settings = BrokerSettings(name="kite", kite=kite_config, universe=["NSE:INFY", "NSE:NOSUCH"])
    refresh = _by_name(broker_checks(clean_db, settings))["instrument_refresh"]
    assert not refresh.ok and "NSE:NOSUCH" in refresh.detail and refresh.data["inserted"] == 1


def _premarket_in_ml_venv(database: Database, broker: dict[str, Any], health: Path, tmp: Path) -> dict[str, Any]:
    """`pipelines.jobs.premarket` in the ML venv with the live step's result, as the DAG hands it over."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "TRADELOOM_BROKER"))}
    env.pop("DATABASE_URL", None)
    env.update(TRADELOOM_DATABASE_NAME=database.settings.database_name, TRADELOOM_HOME=str(database.settings.home),
               TRADELOOM_PREMARKET_HEALTH_DIR=str(health), TRADELOOM_PREMARKET_REQUIRE_CHAMPION="false",
               TRADELOOM_MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'registry.db'}")
    code = ("import json, sys\nfrom pipelines.jobs import premarket\n"
            "print(json.dumps(premarket(sys.argv[1], json.loads(sys.argv[2]))))")
    done = subprocess.run([str(ML_PYTHON), "-c", code, SESSION, json.dumps(broker)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_premarket_live_step_then_ml_step_red_on_dead_session_green_on_live_one(
    clean_db: Database, kite_server: FakeKiteServer, kite_config: KiteConfig, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import date

    from pipelines.jobs import premarket_broker

    assert kite_config.access_token is not None
    token = kite_config.access_token.get_secret_value()
    for key, value in {"TRADELOOM_DATABASE_NAME": clean_db.settings.database_name, "TRADELOOM_BROKER_NAME": "kite",
                       "TRADELOOM_BROKER_KITE__API_KEY": kite_config.api_key,
                       "TRADELOOM_BROKER_KITE__API_SECRET": kite_config.api_secret.get_secret_value(),
                       "TRADELOOM_BROKER_KITE__ACCESS_TOKEN": token, "TRADELOOM_BROKER_KITE__ROOT": kite_config.root,
                       "TRADELOOM_BROKER_KITE__READ_RETRY_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(key, value)
    health = tmp_path / "health"

    green = _premarket_in_ml_venv(clean_db, premarket_broker(SESSION), health, tmp_path)
    assert green["status"] == "green", green["checks"]
    assert green["checks"]["instrument_refresh"]["data"]["inserted"] == len(kite_server.listings)
    assert green["checks"]["instrument_master"]["ok"]  # counted after the refresh
    read_health(health, date.fromisoformat(SESSION))

    kite_server.expire_tokens()
    step = premarket_broker(SESSION)
    assert step["broker"] == "kite" and not step["checks"]["broker_session"]["ok"]
    red = _premarket_in_ml_venv(clean_db, step, health, tmp_path)
    assert red["status"] == "red"
    assert [name for name, check in red["checks"].items() if not check["ok"]] == ["broker_session",
                                                                                  "instrument_refresh"]
    flag = (health / "premarket.json").read_text(encoding="utf-8")
    assert token not in flag and kite_config.api_secret.get_secret_value() not in flag
    with pytest.raises(ConfigError, match=r"'red'.*broker_session"):
        read_health(health, date.fromisoformat(SESSION))
