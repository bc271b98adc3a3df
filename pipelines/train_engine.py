"""Trading metrics of out-of-sample probabilities through the one engine (`pipelines.backtest.run_backtest`).

Each walk-forward test window is backtested from flat with fresh cash, after the config's costs, and the
folds are chained into one out-of-sample equity curve, as `pipelines.backtest.walk_forward` does. Models and
baselines (buy-and-hold, SMA cross) go through the same function on the same rows, so the side-by-side
table compares signals under one set of fill, cost and sizing rules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from pipelines.backtest import MarketData, run_backtest
from tradeloom.engine import Universe
from tradeloom.engine.baselines import buy_and_hold_probabilities, sma_cross_probabilities
from tradeloom.engine.metrics import compute_metrics
from tradeloom.errors import InputError
from tradeloom.models.config import TrainConfig
from tradeloom.models.folds import TrainingFold
from tradeloom.models.trading import TradingMetrics, engine_configs

if TYPE_CHECKING:
    from pipelines.train import TrainingData

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
TRADING_SOURCE = "engine"


@dataclass(frozen=True)
class EngineTrading:
    """One strategy's out-of-sample trading: chained metrics, per-fold metrics, chained equity (from 1.0)."""

    metrics: TradingMetrics
    fold_metrics: list[TradingMetrics]
    equity: FloatArray


def market_data(data: TrainingData, config: TrainConfig) -> MarketData:
    """The training rows as one instrument's bars. Without real opens (planted test data) a bar opens at the
    previous close, so an order decided at a close fills at that close's price, costs aside."""
    if data.close is None:
        raise InputError("TrainingData.close is None: the engine backtest needs each row's close price")
    close = data.close
    opens = data.open if data.open is not None else np.concatenate([close[:1], close[:-1]])
    high = data.high if data.high is not None else np.maximum(opens, close)
    low = data.low if data.low is not None else np.minimum(opens, close)
    # No volume known: a large one, so participation (impact, caps) never binds.
    volume = data.volume if data.volume is not None else np.full(close.size, 1e12)

    def column(values: FloatArray) -> FloatArray:
        return np.asarray(values, dtype=np.float64).reshape(-1, 1)

    return MarketData(Universe.simple([config.instrument]), np.asarray(data.timestamps_ns, dtype=np.int64),
                      column(opens), column(high), column(low), column(close), column(volume),
                      bars_per_year=float(config.periods_per_year))


def backtest_folds(market: MarketData, folds: Sequence[TrainingFold], fold_probabilities: Sequence[FloatArray],
                   config: TrainConfig, name: str) -> EngineTrading:
    """Backtest each fold's (rows, 3) probabilities on its test rows; chain the folds' equity."""
    engine, broker = engine_configs(f"{config.strategy}-{name}", config.costs, config.trading)
    cash = config.trading.cash
    fold_metrics: list[TradingMetrics] = []
    chained: list[FloatArray] = []
    level = 1.0
    exposure_bars = turnover_bars = costs = 0.0
    trades = 0
    for fold, probabilities in zip(folds, fold_probabilities, strict=True):
        window = market.window(fold.test)
        result = run_backtest(window, probabilities.reshape(len(window), 1, 3), engine_config=engine,
                              broker_config=broker, cash=cash, liquidate_at_end=True)
        metrics = TradingMetrics.from_engine(result.metrics)
        fold_metrics.append(metrics)
        chained.append(result.equity / cash * level)
        level = float(chained[-1][-1])
        exposure_bars += metrics.exposure * len(window)
        turnover_bars += metrics.turnover * len(window)
        costs += metrics.costs_paid
        trades += metrics.trades
        log.debug("%s fold %d through the engine: %s", name, fold.number, metrics)
    equity = np.concatenate(chained)
    overall = compute_metrics(equity, [], bars_per_year=market.bars_per_year)
    rows = max(equity.size, 1)
    metrics = TradingMetrics(sharpe=overall.sharpe, total_return=overall.total_return,
                             max_drawdown=overall.max_drawdown, turnover=turnover_bars / rows,
                             exposure=exposure_bars / rows, trades=trades, costs_paid=costs)
    return EngineTrading(metrics, fold_metrics, equity)


def baseline_probabilities(data: TrainingData, config: TrainConfig) -> dict[str, FloatArray]:
    """(rows, 3) probabilities of each baseline over every training row; causal, so any slice is honest."""
    rows = data.labels.size
    out = {"buy_and_hold": buy_and_hold_probabilities((rows,))}
    if data.close is not None:
        # Computed on the whole series so the first test bar already has its moving averages.
        out["sma_cross"] = sma_cross_probabilities(data.close, config.trading.sma_fast, config.trading.sma_slow,
                                                   on_cross=False)
    return out


def baselines_through_engine(data: TrainingData, market: MarketData, folds: Sequence[TrainingFold],
                             config: TrainConfig) -> dict[str, EngineTrading]:
    return {name: backtest_folds(market, folds, [probabilities[fold.test] for fold in folds], config, name)
            for name, probabilities in baseline_probabilities(data, config).items()}
