"""The backtester's loader on the executor's minute-bar fixture (synthetic NSE-session instruments)."""

from __future__ import annotations

from pipelines.backtest import load_market_data
from tests.integration.executor.conftest import KEYS
from tradeloom.adapters.db import Database
from tradeloom.domain import Timeframe


def test_minute_bars_annualise_over_the_exchanges_session_not_a_fixed_390(market: Database) -> None:
    data = load_market_data(market, KEYS, Timeframe.MINUTE)
    assert data.bars_per_year == 252.0 * 375  # 09:15 to 15:30 IST
    assert data.minutes_to_close is not None and data.minutes_to_close.min() >= 0.0
