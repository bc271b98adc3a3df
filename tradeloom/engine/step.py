"""The one decision function: features -> probabilities -> signals -> risk -> sizing -> order intents.

Pure: no I/O, no clock, no randomness. The backtester and the live executor call the same `step`, so a
replayed day gives the same intents (and the same client order ids) in both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from tradeloom.domain import IntentPurpose, OrderIntent, OrderType, Side, client_order_id
from tradeloom.engine.config import EngineConfig
from tradeloom.engine.execution import WorkingParent, next_slice
from tradeloom.engine.kernels import bar_memory_kernel, held_levels_kernel, mark_to_market_kernel
from tradeloom.engine.risk import GUARDS, Proposal, RiskContext, active_entry_rules, guard_idle
from tradeloom.engine.signals import signals_from_probabilities
from tradeloom.engine.sizing import target_quantity
from tradeloom.engine.state import DecisionRecord, EngineInputs, EngineState, RuleEvent, StepResult

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# Hot path: `np.count_nonzero(mask)` stands for `mask.any()` (a direct C call, several times cheaper).


def _indices(mask: npt.NDArray[np.bool_] | npt.NDArray[np.int64] | npt.NDArray[np.int8]) -> list[int]:
    """Positions of the true/non-zero entries as Python ints (one C call; cheaper than np.flatnonzero)."""
    indices: list[int] = mask.nonzero()[0].tolist()
    return indices


def _price(value: float, tick: float, side: int) -> Decimal:
    """Round a trigger/limit price to the tick, away from the market for protective orders."""
    ticks = np.floor(value / tick + 1e-9) if side < 0 else np.ceil(value / tick - 1e-9)
    return Decimal(str(round(float(ticks) * tick, 10)))


@lru_cache(maxsize=8)
def _nan_row(n: int) -> FloatArray:
    """A read-only row of NaN (minutes to close without a session, unused inputs): one per width, not per bar."""
    row = np.full(n, np.nan)
    row.flags.writeable = False
    return row


def _stop_levels(config: EngineConfig, side: npt.NDArray[np.int8], reference: FloatArray,
                 features: Mapping[str, FloatArray]) -> tuple[FloatArray, FloatArray]:
    stops = config.stops
    if not stops.has_stop and stops.take_profit_pct is None and stops.take_profit_atr is None:
        nan = _nan_row(reference.shape[0])  # read-only: callers only read levels they did not ask for
        return nan, nan
    stop = np.full_like(reference, np.nan)
    target = np.full_like(reference, np.nan)
    atr = features.get(stops.atr_feature)
    direction = side.astype(np.float64)
    if stops.stop_loss_atr is not None and atr is not None:
        stop = reference - direction * stops.stop_loss_atr * atr
    elif stops.stop_loss_pct is not None:
        stop = reference * (1.0 - direction * stops.stop_loss_pct)
    if stops.take_profit_atr is not None and atr is not None:
        target = reference + direction * stops.take_profit_atr * atr
    elif stops.take_profit_pct is not None:
        target = reference * (1.0 + direction * stops.take_profit_pct)
    return stop, target


def step(config: EngineConfig, state: EngineState, inputs: EngineInputs, *, consume: bool = False,
         explain: bool = True) -> StepResult:
    """One bar close. `state` is left as it was unless `consume`: then the step updates it in place and
    returns it as the result's state (a caller that never reads the old state again, as the backtester,
    saves the copy). `explain=False` leaves the rule events (the record's reasons) out, for a caller that
    discards the record. Neither changes a decision: the intents, cancels and state are the same."""
    inputs.validate()
    s = state if consume else state.successor()
    universe, keys, n = inputs.universe, inputs.universe.keys, len(inputs.universe)
    bar = inputs.bar_at_ns
    features = dict(inputs.features)
    close = np.where(np.isfinite(inputs.close), inputs.close, s.last_close)
    positions = inputs.positions
    # Nothing below writes to `pending`: only copy it when working parents add to it.
    pending = inputs.pending
    if s.parents:
        pending = pending.copy()
        for parent in s.parents:
            pending[parent.index] += parent.side * parent.remaining
    events: list[RuleEvent] = []
    intents: list[OrderIntent] = []
    cancels: list[str] = []

    # -- memory: returns history, equity peak, session day, position transitions ------------------
    if s.returns.shape[0] and s.bars_seen:
        s.returns[s.returns_count % s.returns.shape[0]] = close / s.last_close - 1.0
        s.returns_count += 1
    s.last_close = close  # a fresh array (np.where above) that nothing else holds
    signals = signals_from_probabilities(config.signal, inputs.probabilities)
    # One compiled pass over the instruments (in place on the copies `state.successor()` made): bars since
    # exit, holding time, levels of flat instruments cleared, and the exit/entry masks used further down.
    signal_config = config.signal
    held_now, opposite, timed, candidates = bar_memory_kernel(
        positions, pending, s.last_position, s.bars_since_exit, s.holding_bars, s.stop_price, s.take_profit_price,
        s.best_close, signals.direction, signals.exit_direction, signal_config.allow_short, signal_config.cooldown_bars,
        -1 if signal_config.max_holding_bars is None else signal_config.max_holding_bars)
    flat = ~held_now
    equity = float(mark_to_market_kernel(inputs.cash, positions, close, close))  # close is finite or NaN
    if s.session_day != inputs.session_day:
        s.day_start_equity = s.last_equity if s.session_day is not None else equity
        s.session_day = inputs.session_day
        s.halted_for_day = False
    s.equity_peak = max(s.equity_peak, equity)
    s.last_equity = equity
    # Flat again (stopped out or exited): the broker's OCO clip cancels what is left of the protection.
    stale = flat & ((s.stop_order_id != None) | (s.take_profit_order_id != None))  # noqa: E711
    if np.count_nonzero(stale):
        s.stop_order_id[stale] = None
        s.take_profit_order_id[stale] = None
        s.stop_quantity[stale] = 0
    s.entry_order_id[flat & (pending == 0)] = None
    s.last_position = positions.copy()
    s.bars_seen += 1

    # -- portfolio guards ---------------------------------------------------------------------------
    minutes = inputs.minutes_to_close if inputs.minutes_to_close is not None else _nan_row(n)
    ctx = RiskContext(
        config=config.risk, equity=equity, cash=inputs.cash, close=close, positions=positions, pending=pending,
        lot_size=universe.lot_size, features=features, returns=s.history(), minutes_to_close=minutes,
        is_intraday=config.product.value == "intraday", equity_peak=s.equity_peak,
        day_start_equity=s.day_start_equity, halted_for_day=s.halted_for_day,
        halted_for_drawdown=s.halted_for_drawdown, kill_switch=inputs.kill_switch,
        cost_buffer_rate=config.sizing.cost_buffer_rate,
    )
    flatten = np.zeros(n, dtype=bool)
    block_all = False
    square_off = np.zeros(n, dtype=bool)
    for guard in GUARDS:
        if guard_idle(guard, ctx):
            continue
        result = guard(ctx)
        if result.halt == "day" and not s.halted_for_day:
            s.halted_for_day = True
            if explain:
                events.append(RuleEvent("*", result.rule, "halt", result.reason))
        if result.halt == "drawdown" and not s.halted_for_drawdown:
            s.halted_for_drawdown = True
            if explain:
                events.append(RuleEvent("*", result.rule, "halt", result.reason))
        block_all |= result.block_all
        if not np.count_nonzero(result.flatten):  # the usual case: the guard leaves every position alone
            continue
        if result.rule == "session_square_off":
            square_off |= result.flatten
        for index in _indices(result.flatten & ~flatten) if explain else ():
            events.append(RuleEvent(keys[index], result.rule, "flatten", result.reason))
        flatten |= result.flatten

    # -- exits ----------------------------------------------------------------------------------------
    exiting = (flatten | opposite | timed) & held_now
    exit_quantity = np.zeros(n, dtype=np.int64)
    exit_indices = _indices(exiting)
    for index in exit_indices:
        key = keys[index]
        for order_id in (s.stop_order_id[index], s.take_profit_order_id[index], s.entry_order_id[index]):
            if order_id is not None:
                cancels.append(str(order_id))
        s.stop_order_id[index] = s.take_profit_order_id[index] = s.entry_order_id[index] = None
        s.stop_quantity[index] = 0
        if s.parents:
            for parent in s.parents:
                if parent.index == index:
                    cancels.extend(parent.children)  # children still working stop buying behind the exit
            s.parents = [parent for parent in s.parents if parent.index != index]
        working, held_quantity = int(pending[index]), int(positions[index])
        # An exit already in flight: pending works against the position (sign(pending) == -sign(position)).
        if (working > 0) - (working < 0) == (held_quantity < 0) - (held_quantity > 0):
            continue
        purpose = IntentPurpose.SQUARE_OFF if square_off[index] else IntentPurpose.EXIT
        closing = -int(positions[index])
        exit_quantity[index] = closing
        why = "signal" if opposite[index] else "max_holding" if timed[index] and not flatten[index] else "risk"
        if explain:
            events.append(RuleEvent(key, why, "exit", f"exit {closing} ({purpose.value})"))
        intents.append(OrderIntent(
            client_order_id(config.strategy, key, bar, purpose), key, Side.BUY if closing > 0 else Side.SELL,
            abs(closing),
            OrderType.MARKET, purpose, product=config.product,
        ))

    # -- protective stops on every position that stays open -------------------------------------------
    held = held_now & ~exiting if exit_indices else held_now
    if config.stops.has_stop and np.count_nonzero(held):
        # One compiled pass: sides, sizes, held positions without a stop level, and the best close since entry
        # ratcheted in place (longs up, shorts down).
        side, unknown, size = held_levels_kernel(held, positions, close, s.stop_price, s.best_close)
        if np.count_nonzero(unknown):  # usually every held position already has its level (set at entry)
            fresh_stop, _ = _stop_levels(config, side, close, features)
            s.stop_price[unknown] = fresh_stop[unknown]
        if config.stops.trailing:
            trail, _ = _stop_levels(config, side, s.best_close, features)
            better = held & np.isfinite(trail) & ((trail - s.stop_price) * side >= universe.tick_size)
            s.stop_price = np.where(better, trail, s.stop_price)
        else:
            better = np.zeros(n, dtype=bool)
        replace = held & ((s.stop_order_id == None) | (size > s.stop_quantity) | better)  # noqa: E711
        for index in _indices(replace & np.isfinite(s.stop_price)):
            key = keys[index]
            if s.stop_order_id[index] is not None:
                cancels.append(str(s.stop_order_id[index]))
            exit_side = -int(side[index])
            order_id = client_order_id(config.strategy, key, bar, IntentPurpose.STOP_LOSS)
            intents.append(OrderIntent(
                order_id, key, Side(exit_side), int(size[index]), OrderType.STOP, IntentPurpose.STOP_LOSS,
                stop_price=_price(float(s.stop_price[index]), float(universe.tick_size[index]), exit_side),
                product=config.product,
            ))
            s.stop_order_id[index] = order_id
            s.stop_quantity[index] = int(size[index])
            if explain:
                events.append(RuleEvent(key, "stop_loss", "stop_moved" if better[index] else "stop_placed",
                                        f"stop {s.stop_price[index]:.4f} for {int(size[index])}"))

    # -- entries ----------------------------------------------------------------------------------------
    # Entry candidates came from the kernel; the multi-timeframe confirmation applies last, as in
    # `entry_candidates`.
    side = candidates
    confirm = features.get(signal_config.confirm_feature) if signal_config.confirm_feature else None
    if confirm is not None:
        side[np.sign(np.nan_to_num(confirm)) != side] = 0
    if exit_indices:
        side[exiting] = 0
    if block_all:
        for index in _indices(side) if explain else ():
            events.append(RuleEvent(keys[index], "halt", "blocked", "trading halted or kill switch on"))
        side[:] = 0
    proposed = np.zeros(n, dtype=np.int64)
    quantity = proposed
    if np.count_nonzero(side):  # levels and sizing only matter for an entry
        stop, target = _stop_levels(config, side, close, features)
        # Only fixed fractional sizing reads the distance to the stop.
        distance = np.abs(close - stop) if config.sizing.method == "fixed_fractional" else _nan_row(n)
        proposed = target_quantity(
            config.sizing, equity=equity, cash=inputs.cash, price=close, stop_distance=distance,
            probability_win=signals.confidence, realised_vol=features.get(config.risk.realised_vol_feature),
            lot_size=universe.lot_size,
        )
        proposed[side == 0] = 0
        for index in _indices((side != 0) & (proposed == 0)) if explain else ():
            events.append(RuleEvent(keys[index], "sizing", "blocked", "sized to zero lots"))
        proposal = Proposal(side, proposed, signals.confidence)
        quantity = proposed.copy()
        for entry_rule in active_entry_rules(config.risk, ctx.is_intraday):
            if not np.count_nonzero(quantity):  # every entry already cut: a rule only ever cuts, never adds
                break
            outcome = entry_rule(ctx, proposal, quantity)
            if outcome.quantity is quantity:  # disabled or nothing to do: the rule handed the array back
                continue
            changed = _indices(outcome.quantity != quantity) if explain else ()
            if changed:  # Python ints format as the numpy ones do, several times faster
                before, after = quantity.tolist(), outcome.quantity.tolist()
                for index in changed:
                    action = "blocked" if after[index] == 0 else "capped"
                    reason = outcome.details.get(index, outcome.reason)
                    events.append(RuleEvent(keys[index], outcome.rule, action,
                                            f"{reason} ({before[index]} -> {after[index]})"))
            quantity = outcome.quantity
    entry_quantity = (side * quantity).astype(np.int64)
    algo = config.execution.algo
    sliced = algo != "immediate" and config.execution.slices > 1
    strategy, product = config.strategy, config.product
    # Python scalars in this per-order loop: the same values as the numpy scalars, without their overhead.
    for index in _indices(entry_quantity):
        key = keys[index]
        sign = int(side[index])
        units = int(quantity[index])
        stop_level, target_level = float(stop[index]), float(target[index])
        entry_id = client_order_id(strategy, key, bar, IntentPurpose.ENTRY)
        if explain:
            events.append(RuleEvent(key, "signal", "entry", f"enter {int(entry_quantity[index])} "
                                    f"at confidence {signals.confidence[index]:.3f}"))
        s.stop_price[index] = stop_level
        s.take_profit_price[index] = target_level
        s.best_close[index] = close[index]
        s.entry_order_id[index] = entry_id
        if sliced:
            s.parents.append(WorkingParent(entry_id, int(index), sign, units, config.execution.slices,
                                           IntentPurpose.ENTRY.value))
            continue
        entry_side, exit_side = (Side.BUY, Side.SELL) if sign > 0 else (Side.SELL, Side.BUY)
        intents.append(OrderIntent(entry_id, key, entry_side, units, OrderType.MARKET, IntentPurpose.ENTRY,
                                   product=product))
        tick = float(universe.tick_size[index])
        if math.isfinite(stop_level):
            stop_id = client_order_id(strategy, key, bar, IntentPurpose.STOP_LOSS)
            intents.append(OrderIntent(
                stop_id, key, exit_side, units, OrderType.STOP, IntentPurpose.STOP_LOSS,
                stop_price=_price(stop_level, tick, -sign), product=product, parent_client_order_id=entry_id,
            ))
            s.stop_order_id[index] = stop_id
            s.stop_quantity[index] = units
        if math.isfinite(target_level):
            target_id = client_order_id(strategy, key, bar, IntentPurpose.TAKE_PROFIT)
            intents.append(OrderIntent(
                target_id, key, exit_side, units, OrderType.LIMIT, IntentPurpose.TAKE_PROFIT,
                limit_price=_price(target_level, tick, sign), product=product, parent_client_order_id=entry_id,
            ))
            s.take_profit_order_id[index] = target_id

    # -- working parents (TWAP / VWAP): one child per bar ------------------------------------------------
    profile = features.get("volume_share")
    sent_now: set[str] = set()
    for parent in s.parents:
        share = float(profile[parent.index]) if profile is not None else None
        child = next_slice(config.execution, parent, lot_size=int(universe.lot_size[parent.index]),
                           bar_volume=float(inputs.volume[parent.index]), expected_volume_share=share)
        parent.slices_left = max(parent.slices_left - 1, 1)
        if child == 0:
            continue
        key = keys[parent.index]
        child_id = client_order_id(config.strategy, key, bar, IntentPurpose(parent.purpose), 1)
        intents.append(OrderIntent(
            child_id, key, Side(parent.side), child, OrderType.MARKET, IntentPurpose(parent.purpose),
            product=config.product, parent_client_order_id=None,
        ))
        parent.remaining -= child
        parent.children = (*parent.children, child_id)
        sent_now.add(parent.parent_id)
    # A parent fully sliced stays (with nothing left to send) while its children may still work: this bar's
    # child, or earlier ones the broker still holds on its side, so that an exit can cancel them.
    s.parents = [parent for parent in s.parents if parent.remaining > 0 or parent.parent_id in sent_now
                 or pending[parent.index] * parent.side > 0]

    record = DecisionRecord(bar, equity, signals.direction, signals.confidence, proposed, entry_quantity,
                            exit_quantity, tuple(events))
    return StepResult(intents, cancels, s, record)
