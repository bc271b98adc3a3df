"""Backtester: the engine's `step` plus the simulated broker over historical bars (arrays or TimescaleDB),
walk-forward evaluation, stress windows and a Monte Carlo bootstrap of trade returns."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from tradeloom.adapters.store import load_splits
from tradeloom.collection import collect_at_safe_points
from tradeloom.corporate import back_adjust_column
from tradeloom.domain import Side, Timeframe
from tradeloom.engine import (
    BrokerConfig,
    DecisionRecord,
    EngineConfig,
    EngineInputs,
    EngineState,
    SimFill,
    SimulatedBroker,
    StepResult,
    Universe,
    step,
)
from tradeloom.engine.config import check_costs_fit_product
from tradeloom.engine.kernels import round_trips_kernel
from tradeloom.engine.metrics import Metrics, Trade, compute_metrics
from tradeloom.engine.montecarlo import bootstrap_trades
from tradeloom.errors import InputError, InvariantViolation
from tradeloom.walkforward import Fold, walk_forward_splits

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
NS_PER_DAY = 86_400_000_000_000


@dataclass(frozen=True)
class MarketData:
    """Bars as (T, N) arrays over one time axis; NaN where an instrument has no bar."""

    universe: Universe
    bar_at_ns: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    features: dict[str, FloatArray] = field(default_factory=dict)
    session_day: IntArray | None = None
    minutes_to_close: FloatArray | None = None
    bars_per_year: float = 252.0

    def __len__(self) -> int:
        return int(self.bar_at_ns.shape[0])

    def window(self, rows: npt.NDArray[np.int64]) -> MarketData:
        return MarketData(
            self.universe, self.bar_at_ns[rows], self.open[rows], self.high[rows], self.low[rows], self.close[rows],
            self.volume[rows], {name: values[rows] for name, values in self.features.items()},
            None if self.session_day is None else self.session_day[rows],
            None if self.minutes_to_close is None else self.minutes_to_close[rows], self.bars_per_year,
        )


@dataclass
class BacktestResult:
    bar_at_ns: IntArray
    equity: FloatArray
    positions: IntArray  # (T, N) after each bar's fills
    fills: list[SimFill]
    trades: list[Trade]
    metrics: Metrics
    attribution: dict[str, dict[str, float]]
    records: list[DecisionRecord]
    intents_by_bar: list[list[str]]  # client order ids sent after each bar


def _session_days(bar_at_ns: IntArray) -> IntArray:
    return (bar_at_ns // NS_PER_DAY).astype(np.int64)


def trades_from_fills(fills: Sequence[SimFill], keys: tuple[str, ...]) -> list[Trade]:
    """Round trips, flat to flat, per instrument (one compiled pass over the fills: see `round_trips_kernel`)."""
    if not fills:
        return []
    at_ns = [sim.filled_at_ns for sim in fills]
    (instrument, side, first, last, entry_qty, entry_value, exit_value, exit_qty, cash,
     fees) = round_trips_kernel(
        np.array([sim.index for sim in fills], dtype=np.int64),
        np.array([int(sim.side) for sim in fills], dtype=np.int64),
        np.array([sim.quantity for sim in fills], dtype=np.int64),
        np.array([sim.price for sim in fills], dtype=np.float64),
        np.array([sim.fees for sim in fills], dtype=np.float64), len(keys))
    return [
        Trade(keys[i], s, q, at_ns[f], at_ns[x], ev / q, xv / max(xq, 1), c, fee, c / ev if ev else 0.0)
        for i, s, f, x, q, ev, xv, xq, c, fee in zip(
            instrument.tolist(), side.tolist(), first.tolist(), last.tolist(), entry_qty.tolist(),
            entry_value.tolist(), exit_value.tolist(), exit_qty.tolist(), cash.tolist(), fees.tolist(), strict=True)
    ]


def run_backtest(
    data: MarketData,
    probabilities: FloatArray,
    *,
    engine_config: EngineConfig | None = None,
    broker_config: BrokerConfig | None = None,
    cash: float = 100_000.0,
    keep_records: bool = False,
    observer: Callable[[int, SimulatedBroker, StepResult], None] | None = None,
    liquidate_at_end: bool = False,
) -> BacktestResult:
    """Step the engine over every bar close; the simulated broker fills its orders on the following bars.

    `liquidate_at_end` closes what is still held at the last bar's close, paying the exit's spread, slippage
    and fees, and counts those round trips (walk-forward folds: each starts flat, so each is judged flat).

    `probabilities` is (T, N, 3) ordered down/flat/up, row t known at bar t's close. Deterministic: no
    randomness is used (the Monte Carlo takes its own seeded generator).
    """
    engine_config = engine_config or EngineConfig()
    broker_config = broker_config or BrokerConfig()
    check_costs_fit_product(engine_config.product, broker_config.costs)
    n_bars, n = data.close.shape
    if probabilities.shape != (n_bars, n, 3):
        raise InputError(f"probabilities must have shape {(n_bars, n, 3)}, got {probabilities.shape}")
    keys = data.universe.keys
    broker = SimulatedBroker(broker_config, keys, cash)
    state = EngineState.for_config(engine_config, n, cash)
    days = data.session_day if data.session_day is not None else _session_days(data.bar_at_ns)
    equity = np.empty(n_bars)
    positions = np.empty((n_bars, n), dtype=np.int64)
    fills: list[SimFill] = []
    records: list[DecisionRecord] = []
    intents_by_bar: list[list[str]] = []
    traded_notional = 0.0
    # Python ints and row views taken once per bar (each is read twice: by the broker and by the step).
    bar_ats, day_numbers = data.bar_at_ns.tolist(), days.tolist()
    features = data.features
    # The automatic collector re-walks every kept fill as the run grows: one collection per 5,000 bars instead.
    with collect_at_safe_points(young_every=5_000, middle_every=1) as collector:
        for t in range(n_bars):
            bar_at = bar_ats[t]
            open_, high, low, close, volume = data.open[t], data.high[t], data.low[t], data.close[t], data.volume[t]
            new_fills = broker.on_bar(bar_at, open_, high, low, close, volume)
            for sim in new_fills:
                traded_notional += sim.quantity * sim.price
            fills.extend(new_fills)
            equity[t] = broker.equity(close, state.last_close)
            positions[t] = broker.positions
            inputs = EngineInputs(
                universe=data.universe, bar_at_ns=bar_at, open=open_, high=high, low=low,
                close=close, volume=volume, probabilities=probabilities[t], positions=broker.positions.copy(),
                cash=broker.cash, pending=broker.pending_quantities(),
                features={name: values[t] for name, values in features.items()} if features else {},
                session_day=day_numbers[t],
                minutes_to_close=None if data.minutes_to_close is None else data.minutes_to_close[t],
            )
            # Nothing keeps the previous state unless an observer is watching: step it in place.
            # The rule events only go into records, which are dropped unless kept.
            result = step(engine_config, state, inputs, consume=observer is None, explain=keep_records)
            state = result.state
            for order_id in result.cancels:
                broker.cancel(order_id)
            for intent in result.intents:
                broker.submit(intent)
            if observer is not None:
                observer(t, broker, result)
            if keep_records:
                records.append(result.record)
                intents_by_bar.append([intent.client_order_id for intent in result.intents])
            collector.safe_point()
        if liquidate_at_end and n_bars:
            closing = broker.liquidate(bar_ats[-1], np.where(np.isfinite(data.close[-1]), data.close[-1],
                                                             state.last_close))
            for sim in closing:
                traded_notional += sim.quantity * sim.price
            fills.extend(closing)
            equity[-1] = broker.equity(data.close[-1], state.last_close)
        trades = trades_from_fills(fills, keys)  # one object per round trip: also without the collector
    exposure = float(np.mean(np.any(positions != 0, axis=1))) if n_bars else 0.0
    metrics = compute_metrics(equity, trades, bars_per_year=data.bars_per_year, exposure=exposure,
                              traded_notional=traded_notional, costs_paid=float(broker.fees_paid.sum()))
    last_close = np.nan_to_num(state.last_close)
    flows = np.zeros(n)
    for sim in fills:
        flows[sim.index] -= int(sim.side) * sim.quantity * sim.price + sim.fees
    realised = np.zeros(n)
    trade_count = np.zeros(n)
    position_of = {key: i for i, key in enumerate(keys)}
    for trade in trades:
        realised[position_of[trade.instrument_key]] += trade.pnl
        trade_count[position_of[trade.instrument_key]] += 1
    attribution = {
        key: {"pnl": float(flows[i] + broker.positions[i] * last_close[i]), "realised_pnl": float(realised[i]),
              "fees": float(broker.fees_paid[i]), "trades": float(trade_count[i])}
        for i, key in enumerate(keys)
    }
    return BacktestResult(data.bar_at_ns, equity, positions, fills, trades, metrics, attribution, records,
                          intents_by_bar)


# -- walk-forward --------------------------------------------------------------------------------------

STRESS_WINDOWS: dict[str, tuple[str, str]] = {
    "dot-com bust": ("2000-03-10", "2002-10-09"),
    "global financial crisis": ("2008-09-01", "2009-03-09"),
    "2011 euro / US downgrade": ("2011-07-22", "2011-10-03"),
    "covid crash": ("2020-02-19", "2020-03-23"),
}


@dataclass
class FoldResult:
    fold: int
    start_ns: int
    end_ns: int
    result: BacktestResult


@dataclass
class WalkForwardReport:
    strategy: str
    folds: list[FoldResult]
    metric_spread: dict[str, dict[str, float]]  # metric -> mean / std / min / max across folds
    stress: dict[str, dict[str, float]]
    monte_carlo: dict[str, dict[str, float]]
    equity_ns: IntArray
    equity: FloatArray  # folds chained: each fold's returns applied to the previous fold's end
    tearsheet: Path | None = None
    benchmark: dict[str, Any] = field(default_factory=dict)

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per fold plus the spread: what the lead prints."""
        rows: list[dict[str, Any]] = []
        for fold in self.folds:
            m = fold.result.metrics
            rows.append({
                "fold": fold.fold,
                "from": datetime.fromtimestamp(fold.start_ns / 1e9, UTC).date().isoformat(),
                "to": datetime.fromtimestamp(fold.end_ns / 1e9, UTC).date().isoformat(),
                "return": round(m.total_return, 4), "sharpe": round(m.sharpe, 2),
                "max_dd": round(m.max_drawdown, 4), "trades": m.trades, "costs": round(m.costs_paid, 2),
            })
        return rows

    def __str__(self) -> str:
        lines = [f"walk-forward {self.strategy}: {len(self.folds)} folds"]
        for row in self.table_rows():
            lines.append("  " + "  ".join(f"{key}={value}" for key, value in row.items()))
        for metric in ("total_return", "sharpe", "max_drawdown"):
            spread = self.metric_spread[metric]
            lines.append(f"  {metric}: mean {spread['mean']:.4f} std {spread['std']:.4f} "
                         f"min {spread['min']:.4f} max {spread['max']:.4f}")
        if self.tearsheet is not None:
            lines.append(f"  tearsheet: {self.tearsheet}")
        return "\n".join(lines)


def _date_ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


def stress_metrics(bar_at_ns: IntArray, equity: FloatArray, bars_per_year: float,
                   windows: dict[str, tuple[str, str]] | None = None) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, (start, end) in (windows or STRESS_WINDOWS).items():
        rows = np.flatnonzero((bar_at_ns >= _date_ns(start)) & (bar_at_ns <= _date_ns(end)))
        if rows.size < 2:
            continue
        m = compute_metrics(equity[rows], [], bars_per_year=bars_per_year)
        out[name] = {"return": m.total_return, "max_drawdown": m.max_drawdown, "volatility": m.annual_volatility}
    return out


def walk_forward(
    data: MarketData,
    probabilities_for_fold: Callable[[Fold], FloatArray],
    *,
    train_size: int,
    test_size: int,
    purge: int = 0,
    embargo: int = 0,
    expanding: bool = False,
    engine_config: EngineConfig | None = None,
    broker_config: BrokerConfig | None = None,
    cash: float = 100_000.0,
    strategy: str = "strategy",
    seed: int = 0,
    bootstrap_paths: int = 2_000,
) -> WalkForwardReport:
    """Backtest each test window of `tradeloom.walkforward.walk_forward_splits` from flat with fresh cash,
    closing what is held at the window's last close (with the exit's costs).

    `probabilities_for_fold(fold)` returns (len(fold.test), N, 3): a model trains on `fold.train` and
    scores `fold.test`; a baseline just slices its causal signal.
    """
    folds = walk_forward_splits(len(data), train_size=train_size, test_size=test_size, purge=purge,
                                embargo=embargo, expanding=expanding)
    results: list[FoldResult] = []
    chained: list[FloatArray] = []
    level = cash
    for fold in folds:
        window = data.window(fold.test)
        result = run_backtest(window, probabilities_for_fold(fold), engine_config=engine_config,
                              broker_config=broker_config, cash=cash, liquidate_at_end=True)
        results.append(FoldResult(fold.number, int(window.bar_at_ns[0]), int(window.bar_at_ns[-1]), result))
        chained.append(result.equity / cash * level)
        level = float(chained[-1][-1])
    names = ("total_return", "annual_return", "sharpe", "sortino", "max_drawdown", "win_rate", "exposure")
    spread: dict[str, dict[str, float]] = {}
    for name in names:
        values = np.array([getattr(fold.result.metrics, name) for fold in results], dtype=np.float64)
        spread[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=0)),
                        "min": float(values.min()), "max": float(values.max())}
    equity_ns = np.concatenate([data.bar_at_ns[fold.test] for fold in folds])
    equity = np.concatenate(chained)
    # Each trade's P&L as a fraction of the fold's starting equity: what one trade did to the account.
    trade_returns = np.array([t.pnl / cash for f in results for t in f.result.trades], dtype=np.float64)
    bootstrap = bootstrap_trades(trade_returns, paths=bootstrap_paths, rng=np.random.default_rng(seed))
    return WalkForwardReport(strategy, results, spread, stress_metrics(equity_ns, equity, data.bars_per_year),
                             bootstrap.quantiles(), equity_ns, equity)


# -- TimescaleDB loader ------------------------------------------------------------------------------------

def load_market_data(
    db: Any, keys: Sequence[str], timeframe: Timeframe, start: datetime | None = None, end: datetime | None = None,
    *, adjust_splits: bool = True,
) -> MarketData:
    """Bars of `keys` from `bars_<timeframe>` joined to `instruments`, pivoted onto one time axis; with
    `adjust_splits`, bars before each split in `corporate_actions` are back-adjusted (prices divided, volume
    multiplied by the ratio: a 2-for-1 split is not a 50% gap). Dividends are not applied."""
    from decimal import Decimal

    from tradeloom.domain import Instrument

    if not keys:
        raise InputError("backtest needs at least one instrument key (EXCHANGE:SYMBOL)")
    pairs = [tuple(key.split(":", 1)) for key in keys]
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select exchange, symbol, instrument_id, tick_size, lot_size, timezone, session_close, session_open "
                "from instruments where (exchange, symbol) in %s", (tuple(pairs),),
            )
            meta = {f"{row[0]}:{row[1]}": row for row in cur.fetchall()}
            missing = [key for key in keys if key not in meta]
            if missing:
                raise InputError(f"instruments {missing} are not in the instruments table; ingest them first")
            ids = [meta[key][2] for key in keys]
            cur.execute(
                f"select instrument_id, extract(epoch from bar_at)::float8, open, high, low, close, volume "
                f"from {timeframe.table} where instrument_id = any(%s) "
                "and (%s::timestamptz is null or bar_at >= %s) and (%s::timestamptz is null or bar_at < %s) "
                "order by bar_at",
                (ids, start, start, end, end),
            )
            rows = cur.fetchall()
        splits = load_splits(conn, ids) if adjust_splits else {}
    finally:
        conn.close()
    if not rows:
        raise InputError(f"no bars for {list(keys)} in {timeframe.table} between {start} and {end}")
    column = {instrument_id: i for i, instrument_id in enumerate(ids)}
    seconds = np.array([row[1] for row in rows], dtype=np.float64)
    stamps = np.round(seconds).astype(np.int64) * 1_000_000_000
    axis = np.unique(stamps)
    position = np.searchsorted(axis, stamps)
    cols = np.array([column[row[0]] for row in rows], dtype=np.int64)
    shape = (axis.size, len(keys))
    arrays = {name: np.full(shape, np.nan) for name in ("open", "high", "low", "close", "volume")}
    for offset, name in enumerate(("open", "high", "low", "close", "volume"), start=2):
        arrays[name][position, cols] = np.array([row[offset] for row in rows], dtype=np.float64)
    for instrument_id, actions in splits.items():
        back_adjust_column(axis, arrays, column[instrument_id], actions)
    instruments = [Instrument(exchange=meta[k][0], symbol=meta[k][1], tick_size=Decimal(str(meta[k][3])),
                              lot_size=int(meta[k][4])) for k in keys]
    zone = ZoneInfo(meta[keys[0]][5])
    local = [datetime.fromtimestamp(ns / 1e9, UTC).astimezone(zone) for ns in axis.tolist()]
    session_day = np.array([moment.toordinal() for moment in local], dtype=np.int64)
    minutes_to_close = None
    if timeframe is not Timeframe.DAY:
        closes = [meta[key][6] for key in keys]
        bar = timedelta(seconds=timeframe.seconds)
        minutes_to_close = np.array([
            [((datetime.combine(moment.date(), close_time, zone) - (moment + bar)).total_seconds() / 60.0)
             for close_time in closes] for moment in local
        ], dtype=np.float64)
    # Minute bars a year from the first instrument's session (NSE 375, NYSE 390), not a fixed 390.
    opens, closes_at = meta[keys[0]][7], meta[keys[0]][6]
    session_minutes = (closes_at.hour * 60 + closes_at.minute) - (opens.hour * 60 + opens.minute)
    bars_per_year = {Timeframe.DAY: 252.0, Timeframe.HOUR: 252.0 * 7,
                     Timeframe.MINUTE: 252.0 * session_minutes}[timeframe]
    return MarketData(Universe.of(instruments), axis, arrays["open"], arrays["high"], arrays["low"],
                      arrays["close"], arrays["volume"], {}, session_day, minutes_to_close, bars_per_year)


# -- demo --------------------------------------------------------------------------------------------------

DEMO_KEYS = ("NASDAQ:AAPL", "NYSE:IBM", "NASDAQ:MSFT", "NASDAQ:GOOG")


def sma_cross_walk_forward(data: MarketData, *, fast: int = 10, slow: int = 20, cash: float = 100_000.0,
                           engine_config: EngineConfig | None = None, broker_config: BrokerConfig | None = None,
                           train_size: int = 504, test_size: int = 252) -> WalkForwardReport:
    """The SMA-cross baseline through the engine on each walk-forward test window."""
    from tradeloom.engine import RiskConfig, SizingConfig, StopConfig, cost_preset
    from tradeloom.engine.baselines import sma_cross_probabilities

    probabilities = sma_cross_probabilities(data.close, fast, slow, on_cross=False)
    engine_config = engine_config or EngineConfig(
        strategy=f"sma{fast}x{slow}", stops=StopConfig(stop_loss_pct=0.08, trailing=True),
        sizing=SizingConfig(method="fixed_notional", notional_fraction=0.24),
        risk=RiskConfig(max_position_fraction=0.3, daily_loss_limit=0.05, max_drawdown=0.35),
    )
    broker_config = broker_config or BrokerConfig(costs=cost_preset("us_equity_retail"))
    return walk_forward(
        data, lambda fold: probabilities[fold.test], train_size=train_size, test_size=test_size, purge=slow,
        engine_config=engine_config, broker_config=broker_config, cash=cash, strategy=engine_config.strategy,
    )


def run_demo_walk_forward(db: Any, out_dir: Path) -> WalkForwardReport:
    from pipelines.tearsheet import write_walk_forward_tearsheet

    data = load_market_data(db, DEMO_KEYS, Timeframe.DAY)
    report = sma_cross_walk_forward(data)
    buy_hold = _buy_and_hold_equity(data, report)
    out_dir.mkdir(parents=True, exist_ok=True)
    report.tearsheet = write_walk_forward_tearsheet(report, out_dir / "walk_forward_sma_cross.html",
                                                    benchmark=buy_hold)
    log.info("walk-forward tearsheet written to %s", report.tearsheet)
    return report


def demo_walk_forward(db: Any, out_dir: Path) -> Path:
    """`tradeloom demo` hook: walk-forward SMA-cross baseline on the bundled daily data -> tearsheet path."""
    report = run_demo_walk_forward(db, out_dir)
    if report.tearsheet is None:
        raise InvariantViolation("walk-forward report has no tearsheet path after writing it")
    return report.tearsheet


def _buy_and_hold_equity(data: MarketData, report: WalkForwardReport) -> dict[str, Any]:
    """Equal-weight buy and hold over the same test windows (the benchmark line on the tearsheet)."""
    mask = np.isin(data.bar_at_ns, report.equity_ns)
    close = data.close[mask]
    filled = np.where(np.isfinite(close), close, np.nan)
    first = np.array([col[np.isfinite(col)][0] if np.isfinite(col).any() else np.nan for col in filled.T])
    relative = np.nanmean(np.where(np.isfinite(filled), filled / first, np.nan), axis=1)
    return {"name": "equal-weight buy & hold", "bar_at_ns": report.equity_ns,
            "equity": relative * float(report.equity[0])}


__all__ = ["BacktestResult", "MarketData", "Side", "WalkForwardReport", "demo_walk_forward", "load_market_data",
           "run_backtest", "run_demo_walk_forward", "sma_cross_walk_forward", "walk_forward"]
