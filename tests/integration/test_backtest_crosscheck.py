"""Peer cross-check: the engine + simulated broker against backtesting.py 0.6.6 on its GOOG daily data.

Settings that make the two agree (and why):
- SMA(10/20) long-only cross: enter on a strict cross up, exit on a strict cross down (backtesting.py's
  `crossover`); `SignalConfig(enter_threshold=exit_threshold=0.5)`, no stops, no risk caps.
- Fill at the next bar's open (`trade_on_close=False`), 0.1% commission per side (`commission=0.001`),
  spread 0, cash 10,000.
- All-in whole shares, sized at the decision bar's close: a live engine cannot know the next open, so the
  backtesting.py strategy passes `size=equity // (close * 1.001)` explicitly instead of its default
  relative size (which it sizes at the fill price). Both brokers then refuse a buy the cash cannot cover
  at the next open (backtesting.py cancels it; ours rejects it: `insufficient_cash="reject"`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import GOOG, SMA

from pipelines.backtest import MarketData, run_backtest
from tradeloom.engine import (
    BrokerConfig,
    CostConfig,
    EngineConfig,
    RiskConfig,
    SignalConfig,
    SizingConfig,
    StopConfig,
    Universe,
)
from tradeloom.engine.baselines import sma_cross_probabilities

COMMISSION = 0.001
CASH = 10_000.0


class LongOnlySmaCross(Strategy):
    fast = 10
    slow = 20

    def init(self) -> None:
        self.sma_fast = self.I(SMA, self.data.Close, self.fast)
        self.sma_slow = self.I(SMA, self.data.Close, self.slow)

    def next(self) -> None:
        if crossover(self.sma_fast, self.sma_slow):
            size = int(self.equity // (self.data.Close[-1] * (1 + COMMISSION)))
            if size > 0:
                self.buy(size=size)
        elif crossover(self.sma_slow, self.sma_fast) and self.position:
            self.position.close()


def _peer() -> tuple[pd.DataFrame, pd.Series]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(GOOG, LongOnlySmaCross, cash=CASH, commission=COMMISSION, trade_on_close=False,
                         finalize_trades=False).run()
    return stats._trades, stats._equity_curve["Equity"]


def _ours() -> tuple[MarketData, object]:
    frame = GOOG
    stamps = (frame.index.values.astype("datetime64[ns]").astype(np.int64))
    column = lambda name: frame[name].to_numpy(dtype=np.float64)[:, None]  # noqa: E731
    data = MarketData(Universe.simple(["NASDAQ:GOOG"]), stamps, column("Open"), column("High"), column("Low"),
                      column("Close"), column("Volume"))
    config = EngineConfig(
        strategy="sma-crosscheck",
        signal=SignalConfig(enter_threshold=0.5, exit_threshold=0.5),
        stops=StopConfig(stop_loss_pct=None),
        risk=RiskConfig(max_position_fraction=None, max_gross_exposure=None, max_net_exposure=None,
                        max_positions=None, daily_loss_limit=None, max_drawdown=None),
        sizing=SizingConfig(method="all_in", cost_buffer_rate=COMMISSION),
    )
    broker = BrokerConfig(costs=CostConfig(commission_rate=COMMISSION), insufficient_cash="reject")
    probabilities = sma_cross_probabilities(data.close, 10, 20)
    return data, run_backtest(data, probabilities, engine_config=config, broker_config=broker, cash=CASH)


@pytest.fixture(scope="module")
def both() -> tuple[pd.DataFrame, pd.Series, MarketData, object]:
    trades, equity = _peer()
    data, result = _ours()
    return trades, equity, data, result


def test_crosscheck_goog_sma_cross_same_trades(both: tuple) -> None:  # type: ignore[type-arg]
    peer_trades, _, _, result = both
    ours = result.trades  # type: ignore[attr-defined]
    assert len(peer_trades) > 10
    assert len(ours) == len(peer_trades)
    index = pd.DatetimeIndex(GOOG.index)
    for mine, (_, theirs) in zip(ours, peer_trades.iterrows(), strict=True):
        assert mine.quantity == int(theirs["Size"])
        assert pd.Timestamp(mine.entry_at_ns) == index[int(theirs["EntryBar"])]
        assert pd.Timestamp(mine.exit_at_ns) == index[int(theirs["ExitBar"])]
        assert mine.entry_price == pytest.approx(theirs["EntryPrice"], abs=1e-9)
        assert mine.exit_price == pytest.approx(theirs["ExitPrice"], abs=1e-9)
        assert mine.pnl == pytest.approx(theirs["PnL"], abs=1e-6)


def test_crosscheck_goog_sma_cross_same_equity_curve(both: tuple) -> None:  # type: ignore[type-arg]
    _, peer_equity, _, result = both
    ours = result.equity  # type: ignore[attr-defined]
    assert ours.shape == peer_equity.shape
    np.testing.assert_allclose(ours, peer_equity.to_numpy(), rtol=0, atol=1e-6)
