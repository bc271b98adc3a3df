"""The trader's engine state holds a returns history only when a risk rule reads it, as the backtester's does:
kept always, every step copied it and every bar wrote it to the state file (250 x N floats as JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from executor.journal import Journal
from executor.oms import OrderManager
from executor.trader import BarSlice, SmaCrossScorer, Trader
from tradeloom.adapters.brokers.paper import PaperBroker
from tradeloom.engine.config import EngineConfig, RiskConfig
from tradeloom.engine.state import Universe
from tradeloom.features.online import OnlineFeatureEngine
from tradeloom.synthetic import synthetic_instruments


def _no_database() -> object:
    raise RuntimeError("no database in this test")


def _trade_bars(tmp_path: Path, config: EngineConfig, bars: int = 30) -> Trader:
    instruments = synthetic_instruments(4)
    keys = tuple(i.key for i in instruments)
    broker = PaperBroker(keys, cash=100_000.0, state_path=tmp_path / "paper-account.json")
    journal = Journal(tmp_path, _no_database, strategy=config.strategy, mode="replay")  # type: ignore[arg-type]
    trader = Trader(universe=Universe.of(instruments), config=config, broker=broker,
                    orders=OrderManager(broker, journal), journal=journal, features=OnlineFeatureEngine(keys, "1m"),
                    scorer=SmaCrossScorer(len(keys)), mode="replay", cash=100_000.0,
                    state_path=tmp_path / "engine-state.json")
    rng = np.random.default_rng(3)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (bars, len(keys))), axis=0))
    for t in range(bars):
        c = close[t]
        trader.on_bar_close(BarSlice(1_700_000_000_000_000_000 + t * 60_000_000_000, c, c * 1.001, c * 0.999, c,
                                     np.full(len(keys), 1e4)))
    return trader


@pytest.mark.parametrize(("risk", "history"), [
    (RiskConfig(), 0),
    (RiskConfig(var_limit=0.05, history_bars=40), 40),
    (RiskConfig(max_correlation=0.9, history_bars=40), 40),
])
def test_trader_keeps_returns_history_only_for_rules_that_read_it(tmp_path: Path, risk: RiskConfig,
                                                                  history: int) -> None:
    trader = _trade_bars(tmp_path, EngineConfig(strategy="memory", risk=risk))
    assert trader.state.returns.shape == (history, 4)
    saved = json.loads((tmp_path / "engine-state.json").read_text(encoding="utf-8"))
    assert saved["engine"]["returns"]["shape"] == [history, 4]
    if history:  # the ring is filled as bars arrive (one return per bar after the first)
        assert trader.state.returns_count == 29
        assert np.isfinite(trader.state.history()).all()
