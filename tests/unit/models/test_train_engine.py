"""Training's trading metrics come from the engine: the cost mapping, per-fold backtests of models and
baselines on the same rows, and numbers checked against a hand computation of buy-and-hold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.train import train
from pipelines.train_engine import backtest_folds, baselines_through_engine, market_data
from tests.unit.models.planted import planted_data, small_config
from tradeloom.engine import cost_preset
from tradeloom.engine.baselines import buy_and_hold_probabilities
from tradeloom.errors import ConfigError
from tradeloom.models.config import Costs, ModelKind
from tradeloom.models.folds import plan_folds
from tradeloom.models.trading import cost_config, engine_configs


def test_cost_config_bps_becomes_commission_rate_and_preset_wins() -> None:
    assert cost_config(Costs(cost_bps=7.0)).commission_rate == pytest.approx(0.0007)
    assert cost_config(Costs(cost_bps=7.0, preset="us_equity_retail")) == cost_preset("us_equity_retail")
    with pytest.raises(ConfigError, match="unknown"):
        cost_config(Costs(preset="no_such_preset"))


def test_engine_configs_trading_section_reaches_signal_broker_and_sizing() -> None:
    config = small_config(trading={"enter_threshold": 0.4, "allow_short": True, "position_fraction": 0.5},
                          costs={"cost_bps": 3.0})
    engine, broker = engine_configs("s", config.costs, config.trading)
    assert engine.signal.enter_threshold == 0.4 and engine.signal.allow_short and broker.allow_short
    assert engine.sizing.method == "fixed_notional" and engine.sizing.notional_fraction == 0.5
    assert broker.costs.commission_rate == pytest.approx(0.0003)


def test_train_trading_tagged_engine_with_metrics_per_fold_for_models_and_baselines() -> None:
    config = small_config(models=["lightgbm", "lstm"], ensemble={"members": ["lightgbm", "lstm"]})
    result = train(planted_data(), config)
    assert result.trading_source == "engine"
    for outcome in result.outcomes.values():
        assert len(outcome.fold_trading) == len(result.folds)
        assert outcome.equity.shape == (result.test_rows.size,) and outcome.equity[0] == pytest.approx(1.0)
    assert set(result.baseline_fold_trading) == {"buy_and_hold", "sma_cross"}
    assert all(len(folds) == len(result.folds) for folds in result.baseline_fold_trading.values())
    # The planted signal is learnable, so the model's engine Sharpe beats holding the instrument.
    assert result.outcomes[ModelKind.LIGHTGBM].trading.sharpe > result.baselines["buy_and_hold"].sharpe
    rows = {row["model"]: row for row in result.comparison_rows()}
    assert rows["buy_and_hold"]["sharpe"] == result.baselines["buy_and_hold"].sharpe
    assert rows["lightgbm"]["costs_paid"] > 0


def test_backtest_folds_buy_and_hold_without_costs_matches_hand_computed_pnl() -> None:
    data = planted_data()
    config = small_config(costs={"cost_bps": 0.0})
    folds = plan_folds(data.timestamps_ns, config)
    market = market_data(data, config)
    run = backtest_folds(market, folds, [buy_and_hold_probabilities((fold.test.size,)) for fold in folds],
                         config, "hold")
    assert data.close is not None
    cash = config.trading.cash
    for fold, metrics in zip(folds, run.fold_metrics, strict=True):
        close = data.close[fold.test]
        # Decided at the first close; planted bars open at the previous close, so the fill is at close[0].
        quantity = math.floor(config.trading.position_fraction * cash / close[0])
        assert metrics.total_return == pytest.approx(quantity * (close[-1] - close[0]) / cash, rel=1e-9)
        assert metrics.costs_paid == 0.0


def test_baselines_through_engine_costs_lower_returns_and_are_paid() -> None:
    data = planted_data()
    cheap, dear = small_config(costs={"cost_bps": 0.0}), small_config(costs={"cost_bps": 50.0})
    folds = plan_folds(data.timestamps_ns, cheap)
    free = baselines_through_engine(data, market_data(data, cheap), folds, cheap)
    costly = baselines_through_engine(data, market_data(data, dear), folds, dear)
    for name in ("buy_and_hold", "sma_cross"):
        assert free[name].metrics.costs_paid == 0.0 < costly[name].metrics.costs_paid
        assert costly[name].metrics.total_return < free[name].metrics.total_return
    # The chained equity is the folds' returns compounded.
    hold = free["buy_and_hold"]
    compounded = np.prod([1.0 + m.total_return for m in hold.fold_metrics]) - 1.0
    assert hold.metrics.total_return == pytest.approx(compounded, rel=1e-9)
