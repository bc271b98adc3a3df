"""Portfolio backtest: signals -> target weights (tradeloom.portfolio) -> the portfolio step's order intents
(risk rules applied) -> the engine's simulated broker, rebalanced on a schedule, walk-forward.

Each walk-forward fold backtests its test window from fresh cash; the covariance (and mean) estimates at
each rebalance use only the trailing `lookback` bars up to that bar's close, and the Black-Litterman views
come from a model fitted on the fold's (purged) training rows only. Turnover costs are the broker's cost
model on every rebalance fill (commission, spread, slippage), plus an optional turnover penalty inside the
mean-variance objective.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.backtest import DEMO_KEYS, MarketData, load_market_data
from tradeloom.domain import Timeframe
from tradeloom.engine import BrokerConfig, EngineState, RiskConfig, SimFill, SimulatedBroker, cost_preset
from tradeloom.engine.metrics import Metrics, compute_metrics
from tradeloom.errors import InputError
from tradeloom.portfolio.config import PortfolioConfig, RebalanceConfig
from tradeloom.portfolio.constraints import WeightConstraints
from tradeloom.portfolio.construct import target_weights
from tradeloom.portfolio.covariance import simple_returns
from tradeloom.portfolio.rebalance import RebalanceInputs, portfolio_step
from tradeloom.walkforward import Fold, walk_forward_splits

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ViewSource = Callable[[Fold], tuple[FloatArray, FloatArray]]  # fold -> (scores, confidences), (len(test), N)


@dataclass
class PortfolioResult:
    bar_at_ns: IntArray
    equity: FloatArray
    weights: FloatArray  # (T, N) realised weights at each close
    targets: list[tuple[int, FloatArray]]  # (row, target weights) at each rebalance
    fills: list[SimFill]
    metrics: Metrics
    rule_events: dict[str, int]  # risk rule -> times it blocked, capped or flattened


@dataclass
class PortfolioWalkForward:
    method: str
    folds: list[PortfolioResult]
    equity_ns: IntArray
    equity: FloatArray  # folds chained
    metrics: Metrics  # over the chained equity
    fold_sharpe: FloatArray
    rule_events: dict[str, int] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        m = self.metrics
        costs = sum(fold.metrics.costs_paid for fold in self.folds)
        return {
            "method": self.method, "folds": len(self.folds), "total_return": round(m.total_return, 4),
            "annual_return": round(m.annual_return, 4), "annual_vol": round(m.annual_volatility, 4),
            "sharpe": round(m.sharpe, 2), "max_drawdown": round(m.max_drawdown, 4) + 0.0,
            "fold_sharpe_mean": round(float(self.fold_sharpe.mean()), 2),
            "fold_sharpe_std": round(float(self.fold_sharpe.std()), 2),
            "turnover_per_year": round(float(np.mean([f.metrics.turnover for f in self.folds])), 2),
            "costs": round(costs, 2),
            "risk_rule_actions": sum(self.rule_events.values()),
        }


def _warm_state(data: MarketData, start: int, cash: float, history: int) -> EngineState:
    """Engine memory as if it had watched the bars before `start` (causal: closes up to start - 1)."""
    n = data.close.shape[1]
    state = EngineState.initial(n, cash, history)
    past = simple_returns(data.close[max(start - history - 1, 0):start])
    rows = past.shape[0]
    state.returns[:rows] = past
    state.returns_count = rows
    if start > 0:
        state.last_close = data.close[start - 1].copy()
    return state


def run_portfolio_backtest(
    data: MarketData, rows: IntArray, config: PortfolioConfig, *, rebalance: RebalanceConfig | None = None,
    broker_config: BrokerConfig | None = None, cash: float = 100_000.0, scores: FloatArray | None = None,
    confidences: FloatArray | None = None,
) -> PortfolioResult:
    """Backtest bars `rows` (contiguous, ascending) of `data`; estimates may use any bar before each row.

    `scores` / `confidences` are (len(rows), N), row k known at the close of bar rows[k].
    """
    rebalance = rebalance or RebalanceConfig()
    broker_config = broker_config or BrokerConfig(costs=cost_preset("us_equity_retail"), insufficient_cash="reduce")
    n = data.close.shape[1]
    if rows.size < 2 or np.any(np.diff(rows) != 1):
        raise InputError(f"rows must be >= 2 contiguous ascending bar indices, got {rows.size} rows")
    broker = SimulatedBroker(broker_config, data.universe.keys, cash)
    state = _warm_state(data, int(rows[0]), cash, rebalance.risk.history_bars)
    days = data.session_day if data.session_day is not None else data.bar_at_ns // 86_400_000_000_000
    equity = np.empty(rows.size)
    weights = np.zeros((rows.size, n))
    targets: list[tuple[int, FloatArray]] = []
    fills: list[SimFill] = []
    events: dict[str, int] = {}
    traded = 0.0
    previous: FloatArray | None = None
    for k, t in enumerate(rows.tolist()):
        new = broker.on_bar(int(data.bar_at_ns[t]), data.open[t], data.high[t], data.low[t], data.close[t],
                            data.volume[t])
        fills.extend(new)
        traded += sum(sim.fill.quantity * sim.price for sim in new)
        close = np.where(np.isfinite(data.close[t]), data.close[t], state.last_close)
        equity[k] = broker.equity(close)
        weights[k] = np.nan_to_num(broker.positions * close / equity[k]) if equity[k] > 0 else 0.0
        wanted: FloatArray | None = None
        if k % rebalance.rebalance_every == 0 and k < rows.size - 1:
            window = simple_returns(data.close[max(t - config.lookback, 0):t + 1])
            wanted = target_weights(config, window, previous=previous,
                                    scores=None if scores is None else scores[k],
                                    confidences=None if confidences is None else confidences[k])
            previous = wanted
            targets.append((t, wanted))
        result = portfolio_step(rebalance, state, RebalanceInputs(
            data.universe, int(data.bar_at_ns[t]), data.close[t], broker.positions.copy(), broker.cash,
            broker.pending_quantities(), wanted, session_day=int(days[t]),
        ))
        state = result.state
        for event in result.events:
            events[event.rule] = events.get(event.rule, 0) + 1
        for intent in result.intents:
            broker.submit(intent)
    exposure = float(np.mean(np.abs(weights).sum(axis=1)))
    metrics = compute_metrics(equity, [], bars_per_year=data.bars_per_year, exposure=exposure,
                              traded_notional=traded, costs_paid=float(broker.fees_paid.sum()))
    return PortfolioResult(data.bar_at_ns[rows], equity, weights, targets, fills, metrics, events)


def portfolio_walk_forward(
    data: MarketData, config: PortfolioConfig, *, train_size: int = 252, test_size: int = 252,
    rebalance: RebalanceConfig | None = None, broker_config: BrokerConfig | None = None, cash: float = 100_000.0,
    views: ViewSource | None = None, purge: int = 0,
) -> PortfolioWalkForward:
    folds = walk_forward_splits(len(data), train_size=train_size, test_size=test_size, purge=purge)
    results: list[PortfolioResult] = []
    chained: list[FloatArray] = []
    level = cash
    for fold in folds:
        scores, confidences = views(fold) if views is not None else (None, None)
        result = run_portfolio_backtest(data, fold.test, config, rebalance=rebalance, broker_config=broker_config,
                                        cash=cash, scores=scores, confidences=confidences)
        results.append(result)
        chained.append(result.equity / cash * level)
        level = float(chained[-1][-1])
    equity = np.concatenate(chained)
    events: dict[str, int] = {}
    for result in results:
        for rule, count in result.rule_events.items():
            events[rule] = events.get(rule, 0) + count
    metrics = compute_metrics(equity, [], bars_per_year=data.bars_per_year,
                              costs_paid=sum(r.metrics.costs_paid for r in results))
    return PortfolioWalkForward(config.method, results, np.concatenate([r.bar_at_ns for r in results]), equity,
                                metrics, np.array([r.metrics.sharpe for r in results]), events)


# -- Black-Litterman views from a model ------------------------------------------------------------------

MOMENTUM_WINDOWS = (21, 63, 126, 252)


def momentum_features(close: FloatArray) -> FloatArray:
    """(T, N, k) trailing log returns over the momentum windows and 63-bar volatility; causal, NaN warm-up."""
    log_close = np.log(close)
    columns = []
    for window in MOMENTUM_WINDOWS:
        out = np.full(close.shape, np.nan)
        out[window:] = log_close[window:] - log_close[:-window]
        columns.append(out)
    daily = np.full(close.shape, np.nan)
    daily[1:] = np.diff(log_close, axis=0)
    vol = np.full(close.shape, np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(daily[1:], 63, axis=0)
    vol[63:] = windows.std(axis=-1)
    columns.append(vol)
    return np.stack(columns, axis=-1)


def ridge_views(data: MarketData, *, horizon: int = 21, ridge: float = 1.0) -> ViewSource:
    """A pooled ridge regression of the next `horizon`-bar log return on momentum features, fitted on each
    fold's training rows with the last `horizon` rows purged (their labels overlap the test window).

    Score = the prediction in units of the training predictions' spread, squashed to (-1, 1); confidence =
    the rank IC of the predictions on the last quarter of the training rows (a held-out slice the ridge was
    refitted without), clipped to [0.05, 0.5]: a model that has not worked lately gets little say.
    """
    features = momentum_features(data.close)
    log_close = np.log(data.close)
    target = np.full(data.close.shape, np.nan)
    target[:-horizon] = log_close[horizon:] - log_close[:-horizon]

    def fit(rows: IntArray) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        x = features[rows].reshape(-1, features.shape[-1])
        y = target[rows].reshape(-1)
        ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
        if ok.sum() < 50:
            return None
        mean, std = x[ok].mean(axis=0), x[ok].std(axis=0) + 1e-12
        z = (x[ok] - mean) / std
        coef = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ (y[ok] - y[ok].mean()))
        return coef, mean, std

    def predict(model: tuple[FloatArray, FloatArray, FloatArray], rows: IntArray) -> FloatArray:
        coef, mean, std = model
        return np.asarray(((features[rows] - mean) / std) @ coef, dtype=np.float64)

    def source(fold: Fold) -> tuple[FloatArray, FloatArray]:
        n = data.close.shape[1]
        usable = fold.train[fold.train < fold.test[0] - horizon]
        cut = usable[: int(usable.size * 0.75)]
        early, model = fit(cut), fit(usable)
        if early is None or model is None:
            return np.full((fold.test.size, n), np.nan), np.zeros((fold.test.size, n))
        held_out = usable[cut.size:]
        pred, truth = predict(early, held_out).ravel(), target[held_out].ravel()
        ok = np.isfinite(pred) & np.isfinite(truth)
        ic = float(np.corrcoef(np.argsort(np.argsort(pred[ok])), np.argsort(np.argsort(truth[ok])))[0, 1]) \
            if ok.sum() > 10 else 0.0
        confidence = float(np.clip(ic, 0.05, 0.5))
        spread = float(np.nanstd(predict(model, usable))) or 1.0
        scores = np.tanh(predict(model, fold.test) / spread)
        return scores, np.where(np.isfinite(scores), confidence, 0.0)

    return source


# -- demo ---------------------------------------------------------------------------------------------------

DEMO_METHODS = ("equal_weight", "inverse_volatility", "risk_parity", "min_variance", "mean_variance",
                "black_litterman")


def demo_configs() -> tuple[dict[str, PortfolioConfig], RebalanceConfig, BrokerConfig]:
    """Long-only, at most 40% per name, monthly rebalancing, the correlation-concentration limit on."""
    constraints = WeightConstraints(long_only=True, max_weight=0.4, net_exposure=1.0, max_turnover=0.5)
    configs = {method: PortfolioConfig(method=method, constraints=constraints, lookback=252,  # type: ignore[arg-type]
                                       risk_aversion=5.0, turnover_penalty=0.0005) for method in DEMO_METHODS}
    risk = RiskConfig(max_position_fraction=0.45, max_gross_exposure=1.0, max_net_exposure=1.0, max_positions=None,
                      daily_loss_limit=None, max_drawdown=None, max_correlation=0.95, history_bars=126)
    rebalance = RebalanceConfig(strategy="portfolio-demo", risk=risk, rebalance_every=21, cash_buffer=0.01)
    broker = BrokerConfig(costs=cost_preset("us_equity_retail"), insufficient_cash="reduce")
    return configs, rebalance, broker


def common_history(data: MarketData) -> MarketData:
    """Rows from the first bar at which every instrument has a close (GOOG lists in 2004)."""
    complete = np.isfinite(data.close).all(axis=1)
    if not complete.any():
        raise InputError("no bar has a close for every instrument")
    first = int(np.flatnonzero(complete)[0])
    return data.window(np.arange(first, len(data), dtype=np.int64))


def compare_methods(data: MarketData, methods: tuple[str, ...] = DEMO_METHODS, *, train_size: int = 252,
                    test_size: int = 252) -> list[dict[str, Any]]:
    configs, rebalance, broker = demo_configs()
    views = ridge_views(data)
    rows = []
    for method in methods:
        report = portfolio_walk_forward(
            data, configs[method], train_size=train_size, test_size=test_size, rebalance=rebalance,
            broker_config=broker, views=views if method == "black_litterman" else None,
        )
        rows.append(report.row())
        log.info("portfolio %s: %s", method, rows[-1])
    return rows


def demo_portfolio(db: Any) -> list[dict[str, Any]]:
    """`tradeloom demo` hook: walk-forward of the portfolio methods on the bundled daily AAPL/IBM/MSFT/GOOG
    (one row per method: chained out-of-sample return, Sharpe, drawdown, turnover, costs)."""
    data = common_history(load_market_data(db, DEMO_KEYS, Timeframe.DAY))
    return compare_methods(data)
