"""Broker history into `bars_1m` across the two venvs, as `market_data_ingest` runs it: the fetch step
here in the live venv (real SDKs against the fake servers), the ingest step in the ML venv (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.broker_connection import BrokerSettings
from pipelines.broker_history import fetch_history, ingest_spool
from pipelines.instrument_master import refresh_instrument_master
from tradeloom.adapters.brokers.fakes.fyers_server import FakeFyersServer
from tradeloom.adapters.brokers.fakes.kite_server import FakeKiteServer
from tradeloom.adapters.brokers.fyers.config import FyersConfig
from tradeloom.adapters.brokers.fyers.execution import FyersBroker
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.adapters.brokers.kite.execution import KiteBroker
from tradeloom.adapters.db import Database
from tradeloom.domain import Timeframe
from tradeloom.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ML_PYTHON = ROOT / ".loom" / "venv-ml" / "bin" / "python"
SESSION_START = datetime(2024, 3, 5, 3, 45, tzinfo=UTC)  # 09:15 IST on a Tuesday
WINDOW = timedelta(minutes=45)


def _ingest_in_ml_venv(database: Database, end: datetime, minutes: int, source: str, spool: str) -> dict[str, Any]:
    """`pipelines.jobs.ingest_interval` in the ML venv, exactly as the DAG's ingest task calls it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    env.pop("DATABASE_URL", None)
    env.update(TRADELOOM_DATABASE_NAME=database.settings.database_name, TRADELOOM_HOME=str(database.settings.home))
    code = ("import json, sys\nfrom pipelines.jobs import ingest_interval\n"
            "print(json.dumps(ingest_interval(*json.loads(sys.argv[1]))))")
    done = subprocess.run([str(ML_PYTHON), "-c", code, json.dumps([end.isoformat(), minutes, source, spool])],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _bars(database: Database, source: str) -> list[tuple[str, datetime, float, float, float, float, float]]:
    with database.transaction() as conn, conn.cursor() as cur:
        cur.execute("select i.exchange || ':' || i.symbol, b.bar_at, b.open, b.high, b.low, b.close, b.volume "
                    "from bars_1m b join instruments i using (instrument_id) where b.source = %s "
                    "order by 1, 2", (source,))
        return list(cur.fetchall())


def test_kite_fetch_then_ml_venv_ingest_lands_interval_once(
    clean_db: Database, kite_server: FakeKiteServer, kite_config: KiteConfig, kite: KiteBroker, tmp_path: Path
) -> None:
    settings = BrokerSettings(name="kite", kite=kite_config)
    refresh_instrument_master(clean_db, KiteBroker(kite_config), settings)
    end = SESSION_START + WINDOW
    fetched = fetch_history(clean_db, settings, SESSION_START, end, tmp_path / "spool")
    assert fetched.instruments == len(kite_server.listings) and fetched.source == "kite:history"
    assert fetched.rows == len(kite_server.listings) * 45

    first = _ingest_in_ml_venv(clean_db, end, 45, "kite", fetched.path)
    assert (first["rows"], first["inserted"], first["quarantined"]) == (fetched.rows, fetched.rows, 0)
    landed = _bars(clean_db, "kite:history")
    assert len(landed) == fetched.rows
    # The stored values are the broker's own history, read back through the adapter independently.
    direct = kite.historical_bars("NSE:INFY", Timeframe.MINUTE, SESSION_START, end)
    infy = [row for row in landed if row[0] == "NSE:INFY"]
    assert [int(row[1].timestamp()) * 10**9 for row in infy] == [int(v) for v in direct.bar_at]
    np.testing.assert_allclose([row[5] for row in infy], direct.close)
    assert min(row[1] for row in landed) == SESSION_START and max(row[1] for row in landed) < end

    again = fetch_history(clean_db, settings, SESSION_START, end, tmp_path / "spool")
    assert again.path == fetched.path
    second = _ingest_in_ml_venv(clean_db, end, 45, "kite", again.path)
    assert (second["inserted"], second["updated"], second["unchanged"]) == (0, 0, fetched.rows)
    assert len(_bars(clean_db, "kite:history")) == fetched.rows
    with clean_db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select count(*), sum(rows_received) from ingest_batches where source = 'kite:history'")
        batches = cur.fetchone()
    assert batches is not None and batches[0] == 2 and batches[1] == 2 * fetched.rows


def test_kite_fetch_overnight_interval_empty_spool_ingests_nothing(
    clean_db: Database, kite_config: KiteConfig, tmp_path: Path
) -> None:
    settings = BrokerSettings(name="kite", kite=kite_config)
    refresh_instrument_master(clean_db, KiteBroker(kite_config), settings)
    night = datetime(2024, 3, 5, 18, 0, tzinfo=UTC)  # 23:30 IST
    fetched = fetch_history(clean_db, settings, night, night + timedelta(hours=2), tmp_path)
    assert fetched.rows == 0
    assert ingest_spool(clean_db, Path(fetched.path), "kite:history")["rows"] == 0
    assert _bars(clean_db, "kite:history") == []


def test_kite_fetch_universe_without_tokens_config_error(
    clean_db: Database, kite_config: KiteConfig, tmp_path: Path
) -> None:
    from tradeloom.adapters.store import upsert_instruments
    from tradeloom.domain import Instrument

    with clean_db.transaction() as conn:
        upsert_instruments(conn, [Instrument(exchange="NSE", symbol="INFY")])  # no kite_token yet
    settings = BrokerSettings(name="kite", kite=kite_config, universe=["NSE:INFY"])
    with pytest.raises(ConfigError, match=r"NSE:INFY.*no kite token"):
        fetch_history(clean_db, settings, SESSION_START, SESSION_START + WINDOW, tmp_path)


def test_fyers_fetch_then_ingest_lands_interval_once(
    clean_db: Database, fyers_server: FakeFyersServer, fyers_config: FyersConfig, tmp_path: Path
) -> None:
    config = fyers_config.model_copy(update={"symbol_master_root": fyers_server.symbol_master_root})
    settings = BrokerSettings(name="fyers", fyers=config)
    refresh = refresh_instrument_master(clean_db, FyersBroker(config), settings)
    assert refresh.inserted == len(fyers_server.exchange.prices)
    end = SESSION_START + WINDOW
    fetched = fetch_history(clean_db, settings, SESSION_START, end, tmp_path)
    assert fetched.rows == len(fyers_server.exchange.prices) * 45 and fetched.source == "fyers:history"
    first = ingest_spool(clean_db, Path(fetched.path), fetched.source)
    assert (first["inserted"], first["quarantined"]) == (fetched.rows, 0)
    second = ingest_spool(clean_db, Path(fetch_history(clean_db, settings, SESSION_START, end, tmp_path).path),
                          fetched.source)
    assert (second["inserted"], second["unchanged"]) == (0, fetched.rows)
    landed = _bars(clean_db, "fyers:history")
    assert len(landed) == fetched.rows and {row[0] for row in landed} == {"NSE:INFY", "NSE:SBIN"}
    history = [path for method, path in fyers_server.requests if path == "/data/history"]
    assert len(history) == 2 * len(fyers_server.exchange.prices)
