"""The engine's inputs, memory and outputs at one bar close. Plain data: the executor persists the state."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tradeloom.domain import Instrument, OrderIntent
from tradeloom.engine.config import EngineConfig
from tradeloom.engine.execution import WorkingParent
from tradeloom.errors import InputError
from tradeloom.records import fast_init

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ObjectArray = npt.NDArray[np.object_]


@dataclass(frozen=True)
class Universe:
    """The instruments the engine trades, in array order."""

    keys: tuple[str, ...]
    lot_size: IntArray
    tick_size: FloatArray

    @classmethod
    def of(cls, instruments: list[Instrument]) -> Universe:
        return cls(
            tuple(instrument.key for instrument in instruments),
            np.array([instrument.lot_size for instrument in instruments], dtype=np.int64),
            np.array([float(instrument.tick_size) for instrument in instruments], dtype=np.float64),
        )

    @classmethod
    def simple(cls, keys: list[str] | tuple[str, ...], tick_size: float = 0.01) -> Universe:
        return cls(tuple(keys), np.ones(len(keys), dtype=np.int64), np.full(len(keys), tick_size))

    def __len__(self) -> int:
        return len(self.keys)


@fast_init
@dataclass(frozen=True)
class EngineInputs:
    """Everything the engine sees at one bar close; arrays are indexed like `universe.keys`.

    `pending` is the signed remaining quantity of working entry/exit orders (not protective stops/targets).
    `session_day` is the exchange-local trading day (any integer that changes when the day does).
    `minutes_to_close` is per instrument; NaN for markets without a close.
    """

    universe: Universe
    bar_at_ns: int
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    probabilities: FloatArray
    positions: IntArray
    cash: float
    pending: IntArray
    features: Mapping[str, FloatArray] = field(default_factory=dict)
    session_day: int = 0
    minutes_to_close: FloatArray | None = None
    kill_switch: bool = False

    def validate(self) -> None:
        n = len(self.universe.keys)
        expected = (n,)
        # One comparison on the common path; the loop only runs to name the offending input.
        shapes = (self.open.shape, self.high.shape, self.low.shape, self.close.shape, self.volume.shape,
                  self.positions.shape, self.pending.shape)
        if shapes != (expected,) * 7:
            for name in ("open", "high", "low", "close", "volume", "positions", "pending"):
                shape = getattr(self, name).shape
                if shape != expected:
                    raise InputError(f"engine input {name} must have shape ({n},), got {shape}")
        if self.probabilities.shape != (n, 3):
            raise InputError(f"engine input probabilities must have shape ({n}, 3), got {self.probabilities.shape}")


@dataclass
class EngineState:
    """What the engine remembers between bars. `step` never mutates its argument; it returns a new one."""

    stop_price: FloatArray
    take_profit_price: FloatArray
    best_close: FloatArray  # trailing-stop anchor: best close since entry
    stop_quantity: IntArray  # quantity the live stop order covers (0: none)
    stop_order_id: ObjectArray  # client order id (str) or None, per instrument
    take_profit_order_id: ObjectArray
    entry_order_id: ObjectArray
    last_position: IntArray
    holding_bars: IntArray
    bars_since_exit: IntArray
    last_close: FloatArray
    returns: FloatArray  # ring buffer (history, N)
    returns_count: int
    equity_peak: float
    day_start_equity: float
    last_equity: float
    session_day: int | None
    halted_for_day: bool
    halted_for_drawdown: bool
    parents: list[WorkingParent]
    bars_seen: int = 0

    @classmethod
    def initial(cls, n: int, equity: float, history: int = 250) -> EngineState:
        nan = np.full(n, np.nan)
        zeros = np.zeros(n, dtype=np.int64)
        return cls(
            stop_price=nan.copy(), take_profit_price=nan.copy(), best_close=nan.copy(), stop_quantity=zeros.copy(),
            stop_order_id=np.full(n, None, dtype=object), take_profit_order_id=np.full(n, None, dtype=object),
            entry_order_id=np.full(n, None, dtype=object),
            last_position=zeros.copy(), holding_bars=zeros.copy(),
            bars_since_exit=np.full(n, np.iinfo(np.int32).max, dtype=np.int64), last_close=nan.copy(),
            returns=np.full((history, n), np.nan), returns_count=0, equity_peak=equity, day_start_equity=equity,
            last_equity=equity, session_day=None, halted_for_day=False, halted_for_drawdown=False, parents=[],
        )

    @classmethod
    def for_config(cls, config: EngineConfig, n: int, equity: float) -> EngineState:
        """Initial state holding a returns history only when a rule reads it (correlation, VaR, CVaR)."""
        risk = config.risk
        needs = risk.max_correlation is not None or risk.var_limit is not None or risk.cvar_limit is not None
        return cls.initial(n, equity, risk.history_bars if needs else 0)

    def copy(self) -> EngineState:
        return EngineState(
            self.stop_price.copy(), self.take_profit_price.copy(), self.best_close.copy(), self.stop_quantity.copy(),
            self.stop_order_id.copy(), self.take_profit_order_id.copy(), self.entry_order_id.copy(),
            self.last_position.copy(), self.holding_bars.copy(), self.bars_since_exit.copy(), self.last_close.copy(),
            self.returns.copy(), self.returns_count, self.equity_peak, self.day_start_equity, self.last_equity,
            self.session_day, self.halted_for_day, self.halted_for_drawdown,
            [WorkingParent(**vars(parent)) for parent in self.parents], self.bars_seen,
        )

    def successor(self) -> EngineState:
        """A copy for `step` to update: shares `last_position` and `last_close`, which `step` replaces
        rather than writes into (so this state still never changes), and the returns buffer when it is empty."""
        returns = self.returns.copy() if self.returns.shape[0] else self.returns
        return EngineState(
            self.stop_price.copy(), self.take_profit_price.copy(), self.best_close.copy(), self.stop_quantity.copy(),
            self.stop_order_id.copy(), self.take_profit_order_id.copy(), self.entry_order_id.copy(),
            self.last_position, self.holding_bars.copy(), self.bars_since_exit.copy(), self.last_close,
            returns, self.returns_count, self.equity_peak, self.day_start_equity, self.last_equity,
            self.session_day, self.halted_for_day, self.halted_for_drawdown,
            [WorkingParent(**vars(parent)) for parent in self.parents] if self.parents else [], self.bars_seen,
        )

    def history(self) -> FloatArray:
        rows = min(self.returns_count, self.returns.shape[0])
        return self.returns[:rows]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray) and value.dtype == object:
                out[name] = {"dtype": "object", "shape": list(value.shape), "data": value.tolist()}
            elif isinstance(value, np.ndarray):
                data = value.ravel().tolist()
                if value.dtype.kind == "f":  # JSON has no NaN: None (math.isnan on Python floats, not np.isnan)
                    data = [None if math.isnan(x) else x for x in data]
                out[name] = {"dtype": str(value.dtype), "shape": list(value.shape), "data": data}
            elif name == "parents":
                out[name] = [vars(parent).copy() for parent in value]
            else:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineState:
        values: dict[str, Any] = {}
        for name, value in data.items():
            if isinstance(value, dict) and "dtype" in value:
                if value["dtype"] == "object":
                    array = np.empty(len(value["data"]), dtype=object)
                    array[:] = value["data"]
                    values[name] = array.reshape(value["shape"])
                    continue
                raw = [np.nan if x is None else x for x in value["data"]]
                values[name] = np.array(raw, dtype=value["dtype"]).reshape(value["shape"])
            elif name == "parents":
                values[name] = [WorkingParent(**parent) for parent in value]
            else:
                values[name] = value
        return cls(**values)


@fast_init
@dataclass(frozen=True)
class RuleEvent:
    instrument_key: str  # "*" for the whole portfolio
    rule: str
    action: str  # blocked, capped, flatten, halt, stop_placed, stop_moved, exit, entry
    reason: str


@fast_init
@dataclass(frozen=True)
class DecisionRecord:
    """The audit trail of one step: what each instrument's signal was and what the risk layer did."""

    bar_at_ns: int
    equity: float
    signal: npt.NDArray[np.int8]
    confidence: FloatArray
    proposed_quantity: IntArray  # unsigned, from sizing, before risk rules
    entry_quantity: IntArray  # signed, after risk rules
    exit_quantity: IntArray  # signed
    events: tuple[RuleEvent, ...]

    def to_dict(self, keys: tuple[str, ...]) -> dict[str, Any]:
        return {
            "bar_at_ns": self.bar_at_ns, "equity": self.equity,
            "instruments": {
                key: {"signal": signal, "confidence": confidence, "proposed": proposed, "entry": entry, "exit": exit_}
                for key, signal, confidence, proposed, entry, exit_ in zip(
                    keys, self.signal.tolist(), self.confidence.tolist(), self.proposed_quantity.tolist(),
                    self.entry_quantity.tolist(), self.exit_quantity.tolist(), strict=True)
            },
            "events": [vars(event) for event in self.events],
        }


@fast_init
@dataclass(frozen=True)
class StepResult:
    intents: list[OrderIntent]
    cancels: list[str]  # client order ids to cancel before the intents are sent
    state: EngineState
    record: DecisionRecord
