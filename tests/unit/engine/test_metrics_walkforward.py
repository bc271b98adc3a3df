from __future__ import annotations

import numpy as np
import pytest

from pipelines.backtest import MarketData, run_backtest, walk_forward
from tradeloom.engine import EngineConfig, RiskConfig, SignalConfig, SizingConfig, StopConfig, Universe
from tradeloom.engine.baselines import buy_and_hold_probabilities, sma_cross_direction
from tradeloom.engine.metrics import Trade, compute_metrics, max_drawdown_duration
from tradeloom.engine.montecarlo import bootstrap_trades


def test_compute_metrics_known_curve() -> None:
    equity = np.array([100.0, 110.0, 99.0, 121.0])
    trades = [Trade("A", 1, 1, 0, 1, 1.0, 2.0, 30.0, 0.0, 0.3), Trade("A", 1, 1, 2, 3, 1.0, 0.5, -10.0, 0.0, -0.1)]
    m = compute_metrics(equity, trades, bars_per_year=3)
    assert m.total_return == pytest.approx(0.21)
    assert m.annual_return == pytest.approx(0.21)  # three returns = one year
    assert m.max_drawdown == pytest.approx(0.1)
    assert m.profit_factor == pytest.approx(3.0)
    assert m.win_rate == pytest.approx(0.5)
    assert max_drawdown_duration(equity) == 1


def test_bootstrap_trades_seeded_and_bounded() -> None:
    returns = np.array([0.02, -0.01, 0.03, -0.02])
    a = bootstrap_trades(returns, paths=500, rng=np.random.default_rng(1))
    b = bootstrap_trades(returns, paths=500, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a.final_equity, b.final_equity)
    assert a.final_equity.min() >= 0.98**4 - 1e-12 and a.final_equity.max() <= 1.03**4 + 1e-12
    assert np.all((a.max_drawdown >= 0) & (a.max_drawdown <= 1 - 0.98**4 + 1e-12))


def test_sma_cross_direction_marks_strict_crosses_only() -> None:
    close = np.array([5.0, 4, 3, 2, 1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1])
    direction = sma_cross_direction(close, 2, 4)
    ups, downs = np.flatnonzero(direction > 0), np.flatnonzero(direction < 0)
    assert ups.size == 1 and downs.size == 1 and ups[0] < downs[0]


def _trend_data(n_bars: int = 300) -> MarketData:
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0.001, 0.01, (n_bars, 2)), axis=0))
    stamps = np.arange(n_bars, dtype=np.int64) * 86_400_000_000_000
    return MarketData(Universe.simple(["X:A", "X:B"]), stamps, close, close * 1.005, close * 0.995, close,
                      np.full((n_bars, 2), 1e6))


def test_run_backtest_buy_and_hold_equity_tracks_prices() -> None:
    data = _trend_data()
    config = EngineConfig(signal=SignalConfig(enter_threshold=0.5), stops=StopConfig(stop_loss_pct=None),
                          risk=RiskConfig(max_drawdown=None, daily_loss_limit=None),
                          sizing=SizingConfig(method="fixed_notional", notional_fraction=0.5))
    result = run_backtest(data, buy_and_hold_probabilities(data.close.shape), engine_config=config)
    quantity = result.positions[-1]
    assert np.all(quantity > 0)
    # After entry, equity moves exactly with the held shares' value.
    expected = np.diff(result.equity[5:])
    np.testing.assert_allclose(expected, np.diff(data.close[5:] @ quantity), rtol=1e-9)
    assert sum(v["pnl"] for v in result.attribution.values()) == pytest.approx(result.equity[-1] - 100_000.0)


def test_run_backtest_gives_the_garbage_collector_back_as_it_found_it() -> None:
    import gc

    data = _trend_data()
    probabilities = buy_and_hold_probabilities(data.close.shape)
    run_backtest(data, probabilities)
    assert gc.isenabled()  # paused inside the bar loop only
    gc.disable()
    try:
        run_backtest(data, probabilities)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_walk_forward_folds_match_splits_and_spread() -> None:
    data = _trend_data()
    probabilities = buy_and_hold_probabilities(data.close.shape)
    config = EngineConfig(signal=SignalConfig(enter_threshold=0.5), stops=StopConfig(stop_loss_pct=None),
                          sizing=SizingConfig(method="fixed_notional", notional_fraction=0.4))
    report = walk_forward(data, lambda fold: probabilities[fold.test], train_size=100, test_size=50, purge=5,
                          engine_config=config, bootstrap_paths=100)
    assert len(report.folds) == 3  # (300 - 105) // 50
    assert report.folds[0].start_ns == data.bar_at_ns[105]
    returns = [f.result.metrics.total_return for f in report.folds]
    assert report.metric_spread["total_return"]["max"] == pytest.approx(max(returns))
    assert report.equity.shape == (150,)

