"""One bar close through the one engine: features -> model -> engine step -> order manager.

A direction model's probabilities go through `tradeloom.engine.step.step`; a sizing policy's target weights
(card `output_kind == "target_weight"`, `executor.policy.PolicyChampion`) through
`tradeloom.portfolio.portfolio_step`, as in the environment it was trained and evaluated in.
The cycle mirrors `pipelines.backtest.run_backtest` step for step (broker matching for the bar, then the
engine on the bar's close, then cancels, then intents), so a replayed day gives the backtest's orders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from executor.journal import Journal
from executor.oms import Lineage, OrderManager
from executor.policy import PolicyChampion
from tradeloom.broker import Broker
from tradeloom.domain import IntentPurpose, OrderState
from tradeloom.engine.baselines import one_hot, sma_cross_direction
from tradeloom.engine.config import EngineConfig
from tradeloom.engine.kernels import warm_up
from tradeloom.engine.state import EngineInputs, EngineState, StepResult, Universe
from tradeloom.engine.step import step
from tradeloom.features.online import OnlineFeatureEngine
from tradeloom.portfolio.rebalance import RebalanceInputs, RebalanceResult, portfolio_step
from tradeloom.portfolio.sizing_policy import book_equity, state_features

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
# Engine rules read these names; the feature spec calls them by their full names.
FEATURE_ALIASES = {"atr": "atr_14", "realised_vol": "rvol_20"}
WORKING = frozenset({IntentPurpose.ENTRY, IntentPurpose.EXIT, IntentPurpose.SQUARE_OFF})
LOST = frozenset({OrderState.CANCELLED, OrderState.REJECTED, OrderState.EXPIRED})  # ended without a fill
Decision = TypeVar("Decision", StepResult, RebalanceResult)


class Scorer(Protocol):
    """Turns the latest features into (N, 3) probabilities (down, flat, up)."""

    name: str
    version: str

    def score(self, features: FloatArray, close: FloatArray) -> FloatArray: ...


class SmaCrossScorer:
    """The SMA-cross baseline as a scorer: the same function the backtester's baseline uses."""

    version = "baseline"

    def __init__(self, size: int, fast: int = 10, slow: int = 20) -> None:
        self.name = f"baseline:sma_cross_{fast}_{slow}"
        self.fast, self.slow = fast, slow
        self.closes = np.full((slow + 1, size), np.nan)

    def score(self, features: FloatArray, close: FloatArray) -> FloatArray:
        del features
        has_bar = np.isfinite(close)
        self.closes[:-1, has_bar] = self.closes[1:, has_bar]
        self.closes[-1, has_bar] = close[has_bar]
        direction = sma_cross_direction(self.closes, self.fast, self.slow)[-1]
        return one_hot(np.where(has_bar, direction, 0).astype(np.int8))

    def reset(self) -> None:
        """Forget the closes (a warm-up refills them)."""
        self.closes[:] = np.nan


class OnnxChampion:
    """A registered model served by onnxruntime; keeps the last `window` feature rows per instrument."""

    def __init__(self, scorer: object, name: str, version: str, size: int, n_features: int) -> None:
        self._scorer = scorer
        self.name, self.version = name, version
        window = int(getattr(scorer, "window", 1))
        self.rows = np.full((size, window, n_features), np.nan)
        card = getattr(scorer, "card", None)
        names = tuple(getattr(card, "feature_names", ()))
        required = tuple(getattr(card, "required_features", ()))
        # Columns every training row had: a row missing one (features still warming up after a cold start,
        # a window padded after a reload) is outside what the model saw and scores flat (no entry).
        self._required = np.array([names.index(name) for name in required if name in names], dtype=np.int64)
        self.not_ready = np.zeros(size, dtype=bool)

    def score(self, features: FloatArray, close: FloatArray) -> FloatArray:
        has_bar = np.isfinite(close)
        self.rows[has_bar, :-1] = self.rows[has_bar, 1:]
        self.rows[has_bar, -1] = features[has_bar]
        probabilities = np.asarray(self._scorer.predict_proba(self.rows), dtype=np.float64)  # type: ignore[attr-defined]
        flat = np.array([0.0, 1.0, 0.0])
        ready = has_bar
        if self._required.size:
            self.not_ready = has_bar & ~np.isfinite(self.rows[:, :, self._required]).all(axis=(1, 2))
            ready = has_bar & ~self.not_ready
        return np.where(ready[:, None], probabilities, flat)

    def reset(self) -> None:
        """Forget the feature window (a warm-up refills it)."""
        self.rows[:] = np.nan


_FLOAT_MAX = float(np.finfo(np.float64).max)


def feature_snapshot_hash(matrix: FloatArray) -> str:
    """The lineage hash of a bar's feature matrix: sha256 of its bytes with NaN as -1e300 and +-inf as the
    largest finite float, i.e. of `np.nan_to_num(matrix, nan=-1e300)` (the same bytes, several times faster)."""
    finite = np.where(np.isnan(matrix), -1e300, matrix)
    np.clip(finite, -_FLOAT_MAX, _FLOAT_MAX, out=finite)
    return hashlib.sha256(finite.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class BarSlice:
    """The closed bars of one period across the universe (NaN where an instrument has no bar)."""

    bar_at_ns: int
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    session_day: int = 0
    minutes_to_close: FloatArray | None = None
    source: str = "live"


class Trader:
    def __init__(
        self,
        *,
        universe: Universe,
        config: EngineConfig,
        broker: Broker,
        orders: OrderManager,
        journal: Journal,
        features: OnlineFeatureEngine,
        scorer: Scorer,
        mode: str,
        cash: float,
        state_path: Path | None = None,
    ) -> None:
        self.universe, self.config, self.broker, self.orders = universe, config, broker, orders
        self.journal, self.features, self.scorer, self.mode = journal, features, scorer, mode
        self.state_path = state_path
        self.state = self._load_state(cash)
        self.kill_switch = False
        self.entries_paused = False
        self.last_step_seconds = 0.0
        self.last_decision_seconds = 0.0
        self.bars_done = 0
        self._index = {key: i for i, key in enumerate(universe.keys)}
        self._names: tuple[object, tuple[str, ...]] = (None, ())
        # Compile (or load from numba's disk cache) the engine's kernels now: otherwise the first bars of the
        # session pay numba's import and cache load inside the decision (tens of ms; seconds with a cold cache).
        warm_up()

    # -- state persistence ---------------------------------------------------------------------------------
    def _load_state(self, cash: float) -> EngineState:
        self.last_bar_at_ns = 0
        if self.state_path is not None and self.state_path.exists():
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            self.last_bar_at_ns = int(data["last_bar_at_ns"])
            return EngineState.from_dict(data["engine"])
        if isinstance(self.scorer, PolicyChampion):  # the portfolio step keeps its returns memory (as in training)
            return EngineState.initial(len(self.universe), cash, self.config.risk.history_bars)
        # As the backtester starts: a returns history only when a rule reads it. Kept always, it was copied by
        # every step and written to the state file at every bar (250 x N floats as JSON: ~30 ms a bar at N=50).
        return EngineState.for_config(self.config, len(self.universe), cash)

    def _save_state(self, bar_at_ns: int) -> None:
        """Engine state after `bar_at_ns`, replaced atomically (a process crash leaves the old or the new file;
        the journal and the broker, not this file, are the record of money)."""
        self.last_bar_at_ns = bar_at_ns
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"last_bar_at_ns": bar_at_ns, "engine": self.state.to_dict()}),
                             encoding="utf-8")
        temporary.replace(self.state_path)

    def rescale_prices(self, ratios: dict[int, float]) -> None:
        """A split of `ratio` new shares per old one at instrument index i: the engine's price levels (last
        close, stop, take-profit, trailing anchor) move to the post-split scale, as the broker's position does."""
        for name in ("last_close", "stop_price", "take_profit_price", "best_close"):
            levels = getattr(self.state, name).copy()  # `last_close` may be shared with an earlier state
            for index, ratio in ratios.items():
                levels[index] = levels[index] / ratio
            setattr(self.state, name, levels)

    # -- the cycle -------------------------------------------------------------------------------------------
    def portfolio(self) -> tuple[npt.NDArray[np.int64], float, npt.NDArray[np.int64]]:
        index = self._index
        positions = np.zeros(len(self.universe), dtype=np.int64)
        for position in self.broker.positions():
            if position.instrument_key in index:
                positions[index[position.instrument_key]] += position.quantity
        pending = np.array(self.orders.pending_quantities(self.universe.keys, WORKING), dtype=np.int64)
        return positions, float(self.broker.funds().available_cash), pending

    def on_bar_close(self, bar: BarSlice) -> StepResult | RebalanceResult:
        match = getattr(self.broker, "on_bar", None)
        if match is not None:  # the paper broker matches its orders against this bar, like the backtester
            for sim in match(bar.bar_at_ns, bar.open, bar.high, bar.low, bar.close, bar.volume):
                self.orders.on_fill(sim.fill)
        # The decision clock starts after the paper exchange's matching: a live broker matches elsewhere.
        started = time.perf_counter()
        matrix = self.features.step(bar.bar_at_ns, bar.open, bar.high, bar.low, bar.close, bar.volume)
        if isinstance(self.scorer, PolicyChampion):
            rebalanced, rebalance_record = self._rebalance(bar, matrix, self.scorer)
            return self._finish(bar, matrix, started, rebalanced, lambda: rebalance_record)
        probabilities = self.scorer.score(matrix, bar.close)
        positions, cash, pending = self.portfolio()
        self._forget_lost_stops(positions)
        inputs = EngineInputs(
            universe=self.universe, bar_at_ns=bar.bar_at_ns, open=bar.open, high=bar.high, low=bar.low,
            close=bar.close, volume=bar.volume, probabilities=probabilities, positions=positions, cash=cash,
            pending=pending, features=self._feature_arrays(matrix), session_day=bar.session_day,
            minutes_to_close=bar.minutes_to_close, kill_switch=self.kill_switch,
        )
        result = step(self.config, self.state, inputs)

        def record() -> dict[str, Any]:
            out: dict[str, Any] = result.record.to_dict(self.universe.keys)
            out["probabilities"] = dict(zip(self.universe.keys, np.round(probabilities, 6).tolist(), strict=True))
            return out

        return self._finish(bar, matrix, started, result, record)

    def _forget_lost_stops(self, positions: npt.NDArray[np.int64]) -> None:
        """A held position whose stop the broker cancelled, rejected or expired (not filled) gets a new stop
        from this bar's step: the engine places one wherever it knows of none. The backtest's simulated broker
        never drops a stop by itself, so this changes nothing a replay compares."""
        ids = self.state.stop_order_id
        for index in np.flatnonzero((ids != None) & (positions != 0)).tolist():  # noqa: E711
            order = self.orders.orders.get(str(ids[index]))
            if order is None or order.state not in LOST:
                continue
            log.warning("protective stop %s of %s is %s (%s): placing a new one", order.client_order_id,
                        self.universe.keys[index], order.state.value, order.status_message[:200])
            self.journal.record_event("protective_stop_lost", {
                "client_order_id": order.client_order_id, "instrument_key": self.universe.keys[index],
                "state": order.state.value, "message": order.status_message[:200]})
            ids[index] = None
            self.state.stop_quantity[index] = 0

    def _feature_arrays(self, matrix: FloatArray) -> dict[str, FloatArray]:
        spec = self.features.spec
        if self._names[0] is not spec:  # `spec.names` builds a tuple per call; the spec does not change
            self._names = (spec, spec.names)
        names = self._names[1]
        feature_arrays = {name: matrix[:, column] for column, name in enumerate(names)}
        for alias, name in FEATURE_ALIASES.items():
            if name in feature_arrays:
                feature_arrays[alias] = feature_arrays[name]
        return feature_arrays

    def _rebalance(self, bar: BarSlice, matrix: FloatArray,
                   policy: PolicyChampion) -> tuple[RebalanceResult, dict[str, Any]]:
        """The sizing policy's target weights through the portfolio step (the risk rules cap them), with the
        book state marked exactly as the training environment marks it."""
        if getattr(self.broker, "on_bar", None) is not None:
            # The paper broker pushes no order updates in replay: without this the order manager would count
            # orders filled or rejected at this bar's open as pending, and the target would be traded twice.
            self.orders.poll()
        positions, cash, pending = self.portfolio()
        marks = np.nan_to_num(np.where(np.isfinite(bar.close), bar.close, self.state.last_close))
        equity = book_equity(positions, marks, cash)
        book = state_features(positions, marks, equity, max(self.state.equity_peak, equity))
        weights = policy.target_weights(matrix, book)
        result = portfolio_step(policy.rebalance, self.state, RebalanceInputs(
            universe=self.universe, bar_at_ns=bar.bar_at_ns, close=bar.close, positions=positions, cash=cash,
            pending=pending, target_weights=weights, features=self._feature_arrays(matrix),
            session_day=bar.session_day, minutes_to_close=bar.minutes_to_close, kill_switch=self.kill_switch,
        ))
        record: dict[str, Any] = {
            "bar_at_ns": bar.bar_at_ns, "equity": result.equity, "output_kind": "target_weight",
            "instruments": {key: {"target_weight": round(float(weights[i]), 6),
                                  "position": int(positions[i]), "position_weight": round(float(book[i, 0]), 6),
                                  "desired": int(result.desired[i]), "approved": int(result.approved[i])}
                            for i, key in enumerate(self.universe.keys)},
            "drawdown": round(float(book[0, 1]), 6) if len(book) else 0.0,
            "events": [vars(event) for event in result.events],
        }
        return result, record

    def _finish(self, bar: BarSlice, matrix: FloatArray, started: float, result: Decision,
                record: Callable[[], dict[str, Any]]) -> Decision:
        """Send cancels then intents, journal the decision with its lineage, persist the engine state; the
        decision record (audit) is formatted after the orders are out, and the bar ends with a journal sync so
        that the next order's write-ahead sync has only that order's records to flush."""
        def lineage_of_bar() -> Lineage:
            return Lineage(strategy=self.config.strategy, mode=self.mode, bar_at_ns=bar.bar_at_ns,
                           model_name=self.scorer.name, model_version=self.scorer.version,
                           feature_snapshot_hash=feature_snapshot_hash(matrix))

        intents = [intent for intent in result.intents
                   if not (intent.purpose is IntentPurpose.ENTRY and self.entries_paused)]
        # The feature hash is taken before the orders only when there are orders (they carry it).
        lineage = lineage_of_bar() if intents else None
        # The records after each order's write-ahead sync (sent, acknowledged) and those of the cancels (the
        # broker holds their outcome) are written once all are out.
        with self.journal.deferred():
            for client_id in getattr(result, "cancels", ()):  # the portfolio step sends market orders only
                self.orders.cancel(client_id)
            if lineage is not None:
                self.orders.submit_all(intents, lineage)
            # Bar close -> every intent handed to the broker port (what the latency benchmark measures).
            self.last_decision_seconds = time.perf_counter() - started
        lineage = lineage or lineage_of_bar()
        # The decision record is audit, written off the order path: each order carries the same lineage and
        # was made durable before it was sent; this record becomes durable with the next sync.
        self.journal.record_decision(lineage, record(), bar.source)
        self.state = result.state
        self._save_state(bar.bar_at_ns)
        positions, cash, _ = self.portfolio()
        # Level-triggered, after the orders are out: a protective order never works for more than its position.
        self.orders.fit_protection(dict(zip(self.universe.keys, positions.tolist(), strict=True)))
        self._snapshot(bar, positions, cash)
        checkpoint = getattr(self.broker, "checkpoint", None)
        if checkpoint is not None:  # the paper account, made durable by the sync below with the rest of the bar
            checkpoint()
        self.journal.sync()
        self.bars_done += 1
        self.last_step_seconds = time.perf_counter() - started
        return result

    def _snapshot(self, bar: BarSlice, positions: npt.NDArray[np.int64], cash: float) -> None:
        marks = np.where(np.isfinite(bar.close), bar.close, self.state.last_close)
        values = positions * np.nan_to_num(marks)
        self.journal.record_equity(
            bar.bar_at_ns, cash + float(values.sum()), cash, float(np.abs(values).sum()), float(values.sum()), 0.0,
            {key: {"quantity": int(positions[i]), "mark": float(np.nan_to_num(marks[i]))}
             for i, key in enumerate(self.universe.keys) if positions[i] != 0},
        )
