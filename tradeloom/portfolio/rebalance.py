"""The portfolio step: target weights -> target quantities -> the engine's risk rules -> order intents.

The same shape as `tradeloom.engine.step` (pure, no clock, no randomness; `EngineState` is the memory), but
driven by target weights instead of per-instrument entry signals: a portfolio optimiser or an RL sizing
policy proposes, the risk layer disposes. Per instrument the move from the current to the target quantity
splits into a reduction (always allowed: it lowers risk) and an increase (a new or bigger position, or the
new side after a flip), and only increases pass through the entry rules (`tradeloom.engine.risk`: session
window, volatility, correlation concentration, max positions, position cap, gross/net exposure, cash,
VaR/CVaR), evaluated on the book *after* the reductions, which are sent first and so fill first. The
portfolio guards (kill switch, drawdown halt, daily-loss halt, square-off) flatten and block as in `step`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tradeloom.domain import IntentPurpose, OrderIntent, OrderType, Side, client_order_id
from tradeloom.engine.risk import (
    GUARDS,
    EntryResult,
    Proposal,
    RiskContext,
    cash_available,
    correlation_filter,
    gross_exposure,
    max_positions,
    net_exposure,
    position_cap,
    session_window,
    var_limit,
    volatility_filter,
)
from tradeloom.engine.state import EngineState, RuleEvent, Universe
from tradeloom.errors import InputError
from tradeloom.portfolio.config import RebalanceConfig

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class RebalanceInputs:
    """What the portfolio step sees at one bar close; `target_weights` None means "no rebalance this bar"
    (the guards still run and the memory still advances)."""

    universe: Universe
    bar_at_ns: int
    close: FloatArray
    positions: IntArray
    cash: float
    pending: IntArray
    target_weights: FloatArray | None = None
    features: Mapping[str, FloatArray] = field(default_factory=dict)
    session_day: int = 0
    minutes_to_close: FloatArray | None = None
    kill_switch: bool = False

    def validate(self) -> None:
        n = len(self.universe)
        for name in ("close", "positions", "pending"):
            if getattr(self, name).shape != (n,):
                raise InputError(f"rebalance input {name} must have shape ({n},), got {getattr(self, name).shape}")
        if self.target_weights is not None and self.target_weights.shape != (n,):
            raise InputError(f"target_weights must have shape ({n},), got {self.target_weights.shape}")


@dataclass(frozen=True)
class RebalanceResult:
    intents: list[OrderIntent]
    state: EngineState
    equity: float
    desired: IntArray  # signed target quantity before the risk rules
    approved: IntArray  # signed quantity the orders lead to, after the risk rules
    events: tuple[RuleEvent, ...]


def _remember(s: EngineState, inputs: RebalanceInputs, close: FloatArray) -> float:
    """The memory `step` keeps (returns ring, peak, session day): the same fields, the same updates."""
    returns = close / s.last_close - 1.0
    if s.returns.shape[0] and np.isfinite(s.last_close).any():  # no ring kept (a state started by `step`)
        s.returns[s.returns_count % s.returns.shape[0]] = returns
        s.returns_count += 1
    s.last_close = close.copy()
    equity = float(inputs.cash + np.nansum(inputs.positions * close))
    if s.session_day != inputs.session_day:
        s.day_start_equity = s.last_equity if s.session_day is not None else equity
        s.session_day = inputs.session_day
        s.halted_for_day = False
    s.equity_peak = max(s.equity_peak, equity)
    s.last_equity = equity
    s.last_position = inputs.positions.copy()
    s.bars_seen += 1
    return equity


def _to_lots(quantity: FloatArray, lot_size: IntArray) -> IntArray:
    return (np.sign(quantity) * np.floor(np.abs(quantity) / lot_size) * lot_size).astype(np.int64)


def _apply(rule: EntryResult, before: IntArray, keys: tuple[str, ...], events: list[RuleEvent]) -> IntArray:
    for index in np.flatnonzero(rule.quantity != before):
        action = "blocked" if rule.quantity[index] == 0 else "capped"
        reason = rule.details.get(int(index), rule.reason)
        events.append(RuleEvent(keys[index], rule.rule, action,
                                f"{reason} ({before[index]} -> {rule.quantity[index]})"))
    return rule.quantity


def portfolio_step(config: RebalanceConfig, state: EngineState, inputs: RebalanceInputs) -> RebalanceResult:
    inputs.validate()
    s = state.copy()
    universe, keys, n = inputs.universe, inputs.universe.keys, len(inputs.universe)
    close = np.where(np.isfinite(inputs.close), inputs.close, s.last_close)
    equity = _remember(s, inputs, close)
    base = inputs.positions + inputs.pending
    events: list[RuleEvent] = []
    minutes = inputs.minutes_to_close if inputs.minutes_to_close is not None else np.full(n, np.nan)
    features = dict(inputs.features)

    def context(positions: IntArray, cash: float) -> RiskContext:
        return RiskContext(
            config=config.risk, equity=equity, cash=cash, close=close, positions=positions,
            pending=np.zeros(n, dtype=np.int64), lot_size=universe.lot_size, features=features,
            returns=s.history(), minutes_to_close=minutes, is_intraday=config.product.value == "intraday",
            equity_peak=s.equity_peak, day_start_equity=s.day_start_equity, halted_for_day=s.halted_for_day,
            halted_for_drawdown=s.halted_for_drawdown, kill_switch=inputs.kill_switch,
        )

    # -- guards ------------------------------------------------------------------------------------------
    flatten = np.zeros(n, dtype=bool)
    block_all = False
    # Cash a working buy will spend when it fills: the context folds pending into positions (pending = 0), so
    # the budget must leave it out itself, as `step`'s cash rule does from its pending quantities.
    committed = float(np.nansum(np.maximum(inputs.pending, 0) * close))
    ctx = context(base.astype(np.int64), inputs.cash - committed)
    for guard in GUARDS:
        result = guard(ctx)
        if result.halt == "day" and not s.halted_for_day:
            s.halted_for_day = True
            events.append(RuleEvent("*", result.rule, "halt", result.reason))
        if result.halt == "drawdown" and not s.halted_for_drawdown:
            s.halted_for_drawdown = True
            events.append(RuleEvent("*", result.rule, "halt", result.reason))
        for index in np.flatnonzero(result.flatten & ~flatten):
            events.append(RuleEvent(keys[index], result.rule, "flatten", result.reason))
        flatten |= result.flatten
        block_all |= result.block_all

    # -- desired quantities ---------------------------------------------------------------------------
    priced = np.isfinite(close) & (close > 0)
    if inputs.target_weights is None:
        desired = base.copy()
    else:
        weights = np.nan_to_num(inputs.target_weights) * (1.0 - config.cash_buffer)
        raw = np.where(priced, weights * max(equity, 0.0) / np.where(priced, close, 1.0), base)
        desired = np.where(priced, _to_lots(raw, universe.lot_size), base)
    desired[flatten] = 0
    same_side = np.sign(desired) * np.sign(base) > 0
    after_reduce = np.where(same_side, np.sign(base) * np.minimum(np.abs(base), np.abs(desired)), 0)
    after_reduce = np.where(desired == base, base, after_reduce).astype(np.int64)
    reduce = after_reduce - base  # signed, towards zero
    increase = desired - after_reduce  # signed, away from zero
    # Dust: skip small trades unless they close a position out.
    dust = np.abs(increase) * np.nan_to_num(close) < config.min_trade_fraction * equity
    increase[dust] = 0
    # A small reduction is skipped only when the position keeps its side: a flip always exits in full first.
    small_trim = ((np.abs(reduce) * np.nan_to_num(close) < config.min_trade_fraction * equity) & (desired != 0)
                  & (np.sign(desired) == np.sign(base)))
    reduce[small_trim] = 0
    after_reduce = base + reduce

    # -- increases through the entry rules, on the book after the reductions ------------------------------
    side = np.sign(increase).astype(np.int8)
    quantity = np.abs(increase).astype(np.int64)
    if block_all and quantity.any():
        for index in np.flatnonzero(quantity):
            events.append(RuleEvent(keys[index], "halt", "blocked", "trading halted or kill switch on"))
        quantity[:] = 0
    if quantity.any():
        proceeds = float(np.nansum(-reduce * close))
        ctx = context(after_reduce.astype(np.int64), inputs.cash - committed + proceeds)
        confidence = np.abs(np.nan_to_num(inputs.target_weights)) if inputs.target_weights is not None else np.ones(n)
        proposal = Proposal(side, quantity.copy(), confidence)
        quantity = _apply(session_window(ctx, proposal, quantity), quantity, keys, events)
        quantity = _apply(volatility_filter(ctx, proposal, quantity), quantity, keys, events)
        quantity = _apply(correlation_filter(ctx, proposal, quantity), quantity, keys, events)
        # Max positions limits new names only; adding to a held name does not open a slot.
        new = after_reduce == 0
        limited = max_positions(ctx, Proposal(np.where(new, side, 0).astype(np.int8), quantity, confidence),
                                quantity)
        quantity = _apply(EntryResult(limited.rule, np.where(new, limited.quantity, quantity), limited.reason),
                          quantity, keys, events)
        # The cap is on the whole position: what is already held uses part of it.
        held = np.abs(after_reduce)
        capped = position_cap(ctx, proposal, quantity + held)
        quantity = _apply(EntryResult(capped.rule, np.clip(capped.quantity - held, 0, quantity), capped.reason),
                          quantity, keys, events)
        for rule in (gross_exposure, net_exposure, cash_available, var_limit):
            quantity = _apply(rule(ctx, proposal, quantity), quantity, keys, events)

    # -- intents: reductions first so their proceeds are there when the increases fill -----------------
    intents: list[OrderIntent] = []
    bar = inputs.bar_at_ns
    for index in np.flatnonzero(reduce):
        purpose = IntentPurpose.EXIT
        intents.append(OrderIntent(client_order_id(config.strategy, keys[index], bar, purpose), keys[index],
                                   Side(int(np.sign(reduce[index]))), int(abs(reduce[index])), OrderType.MARKET,
                                   purpose, product=config.product))
    for index in np.flatnonzero(quantity):
        purpose = IntentPurpose.ENTRY
        intents.append(OrderIntent(client_order_id(config.strategy, keys[index], bar, purpose, 1), keys[index],
                                   Side(int(side[index])), int(quantity[index]), OrderType.MARKET, purpose,
                                   product=config.product))
    approved = (after_reduce + side * quantity).astype(np.int64)
    return RebalanceResult(intents, s, equity, desired.astype(np.int64), approved, tuple(events))
