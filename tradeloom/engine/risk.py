"""Risk rules: each a small function applied on every step; each says what it did and why.

Two kinds:
- portfolio guards (kill switch, drawdown halt, daily-loss halt, session square-off) may flatten positions
  and block every entry;
- entry rules (session window, volatility, correlation, max positions, position cap, exposure, cash,
  VaR/CVaR) block or shrink the proposed entry quantities, in confidence order where a budget is shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from tradeloom.engine.config import RiskConfig
from tradeloom.engine.kernels import cash_covers_kernel
from tradeloom.records import fast_init

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@fast_init
@dataclass(frozen=True)
class RiskContext:
    config: RiskConfig
    equity: float
    cash: float
    close: FloatArray
    positions: IntArray
    pending: IntArray  # signed remaining quantity of working entry/exit orders
    lot_size: IntArray
    features: Mapping[str, FloatArray]
    returns: FloatArray  # (history, N) simple close-to-close returns, NaN where unknown
    minutes_to_close: FloatArray  # NaN where the session is unknown (24h markets)
    is_intraday: bool
    equity_peak: float
    day_start_equity: float
    halted_for_day: bool
    halted_for_drawdown: bool
    kill_switch: bool
    cost_buffer_rate: float = 0.0


@fast_init
@dataclass(frozen=True)
class Proposal:
    side: npt.NDArray[np.int8]  # +1 / -1 entry side, 0 none
    quantity: IntArray  # unsigned
    confidence: FloatArray

    @cached_property
    def ranked(self) -> list[int]:
        """Instruments with an entry side, most confident first; stable: ties keep instrument order, so a
        replay always picks the same ones. Sorted once per step; each rule filters it (a subsequence of a
        stable sort is the stable sort of the subset)."""
        chosen = (self.side != 0).nonzero()[0]
        wanted: list[int] = chosen.tolist()
        if len(wanted) <= 1:
            return wanted
        keys: list[float] = (-self.confidence[chosen]).tolist()
        if any(math.isnan(key) for key in keys):  # NaN: numpy's order (NaN last); signals never produce one
            order: list[int] = np.argsort(np.array(keys), kind="stable").tolist()
            return [wanted[k] for k in order]
        # Python's sort of (key, index) pairs: ties fall back to the (ascending) instrument index, which is
        # what a stable sort keeps; cheaper than numpy's on the few entries of a bar.
        return [index for _, index in sorted(zip(keys, wanted, strict=True))]


@fast_init
@dataclass(frozen=True)
class GuardResult:
    rule: str
    flatten: BoolArray
    block_all: bool
    halt: str | None  # "day" or "drawdown" when the rule halts trading
    reason: str


@fast_init
@dataclass(frozen=True)
class EntryResult:
    rule: str
    quantity: IntArray
    reason: str
    details: dict[int, str] = field(default_factory=dict)  # instrument index -> specific reason


def _finite_sum(values: FloatArray) -> float:
    return float(values[np.isfinite(values)].sum())


def _none(ctx: RiskContext) -> BoolArray:
    return np.zeros(ctx.close.shape[0], dtype=bool)


def _held(ctx: RiskContext) -> BoolArray:
    return np.asarray(ctx.positions != 0, dtype=bool)


# -- portfolio guards ------------------------------------------------------------------------------

def kill_switch(ctx: RiskContext) -> GuardResult:
    on = ctx.kill_switch or ctx.config.kill_switch
    return GuardResult("kill_switch", _held(ctx) if on else _none(ctx), on, None,
                       "kill switch is on: flatten everything, no entries" if on else "")


def _drawdown(ctx: RiskContext) -> float:
    return 1.0 - ctx.equity / ctx.equity_peak if ctx.equity_peak > 0 else 0.0


def _day_loss(ctx: RiskContext) -> float:
    return 1.0 - ctx.equity / ctx.day_start_equity if ctx.day_start_equity > 0 else 0.0


def drawdown_halt(ctx: RiskContext) -> GuardResult:
    limit = ctx.config.max_drawdown
    drawdown = _drawdown(ctx)
    hit = ctx.halted_for_drawdown or (limit is not None and drawdown >= limit)
    reason = f"drawdown {drawdown:.4f} from peak {ctx.equity_peak:.2f} reached limit {limit}" if hit else ""
    return GuardResult("drawdown_halt", _held(ctx) if hit else _none(ctx), hit, "drawdown" if hit else None, reason)


def daily_loss_halt(ctx: RiskContext) -> GuardResult:
    limit = ctx.config.daily_loss_limit
    loss = _day_loss(ctx)
    hit = ctx.halted_for_day or (limit is not None and loss >= limit)
    reason = f"day loss {loss:.4f} from {ctx.day_start_equity:.2f} reached limit {limit}" if hit else ""
    return GuardResult("daily_loss_halt", _held(ctx) if hit else _none(ctx), hit, "day" if hit else None, reason)


def session_square_off(ctx: RiskContext) -> GuardResult:
    cutoff = ctx.config.square_off_minutes_before_close
    if cutoff is None or not ctx.is_intraday:
        return GuardResult("session_square_off", _none(ctx), False, None, "")
    late = ctx.minutes_to_close <= cutoff  # NaN (no session) compares False
    return GuardResult("session_square_off", _held(ctx) & late, False, None,
                       f"intraday product within {cutoff} minutes of the close")


GUARDS: tuple[Callable[[RiskContext], GuardResult], ...] = (
    kill_switch, drawdown_halt, daily_loss_halt, session_square_off,
)


def guard_idle(guard: Callable[[RiskContext], GuardResult], ctx: RiskContext) -> bool:
    """True when `guard` would neither flatten, block nor halt on this bar (disabled, or its limit not
    reached, and not already halted): the guard's own scalar test, so the step can skip its full-width
    arrays."""
    config = ctx.config
    if guard is kill_switch:
        return not (ctx.kill_switch or config.kill_switch)
    if guard is drawdown_halt:
        limit = config.max_drawdown
        # `not x >= limit` (not `x < limit`): a NaN drawdown does not halt in the guard, so it is idle here too.
        return not ctx.halted_for_drawdown and (limit is None or not _drawdown(ctx) >= limit)
    if guard is daily_loss_halt:
        limit = config.daily_loss_limit
        return not ctx.halted_for_day and (limit is None or not _day_loss(ctx) >= limit)
    if guard is session_square_off:
        return config.square_off_minutes_before_close is None or not ctx.is_intraday
    return False


# -- entry rules -----------------------------------------------------------------------------------

def _zero_where(proposal: Proposal, quantity: IntArray, mask: BoolArray) -> IntArray:
    out = quantity.copy()
    out[mask & (proposal.side != 0)] = 0
    return out


def session_window(ctx: RiskContext, proposal: Proposal, quantity: IntArray) -> EntryResult:
    minutes = ctx.config.no_entry_minutes_before_close
    square = ctx.config.square_off_minutes_before_close
    if minutes <= 0 and (square is None or not ctx.is_intraday):
        return EntryResult("session_window", quantity, "")
    late = ctx.minutes_to_close < minutes  # NaN (no session) compares False
    if square is not None and ctx.is_intraday:
        late |= ctx.minutes_to_close <= square
    return EntryResult("session_window", _zero_where(proposal, quantity, late),
                       f"no entries within {minutes} minutes of the close")


def volatility_filter(ctx: RiskContext, proposal: Proposal, quantity: IntArray) -> EntryResult:
    limit = ctx.config.max_realised_vol
    vol = ctx.features.get(ctx.config.realised_vol_feature)
    if limit is None or vol is None:
        return EntryResult("volatility_filter", quantity, "")
    return EntryResult("volatility_filter", _zero_where(proposal, quantity, np.nan_to_num(vol) > limit),
                       f"realised vol above {limit}")


def correlation_filter(ctx: RiskContext, proposal: Proposal, quantity: IntArray) -> EntryResult:
    limit = ctx.config.max_correlation
    held = _held(ctx)
    if limit is None or not np.count_nonzero(held) or ctx.returns.shape[0] < 10:
        return EntryResult("correlation_filter", quantity, "")
    returns = np.nan_to_num(ctx.returns)
    weights = ctx.positions * ctx.close / max(ctx.equity, 1e-12)
    book = returns @ np.nan_to_num(weights)
    out = quantity.copy()
    details: dict[int, str] = {}
    book_std = book.std()
    for index in np.flatnonzero((proposal.side != 0) & (quantity > 0)):
        column = returns[:, index]
        if book_std == 0 or column.std() == 0:
            continue
        correlation = float(np.corrcoef(column, book)[0, 1]) * int(proposal.side[index])
        if correlation > limit:
            out[index] = 0
            details[int(index)] = f"correlation {correlation:.3f} to the book above {limit}"
    return EntryResult("correlation_filter", out, f"correlation to existing positions above {limit}", details)


def _by_confidence(proposal: Proposal, quantity: IntArray) -> list[int]:
    """Entries still wanted (quantity > 0), most confident first."""
    wanted = quantity.tolist()
    return [index for index in proposal.ranked if wanted[index] > 0]


def max_positions(ctx: RiskContext, proposal: Proposal, quantity: IntArray) -> EntryResult:
    limit = ctx.config.max_positions
    if limit is None:
        return EntryResult("max_positions", quantity, "")
    open_count = int(np.count_nonzero((ctx.positions != 0) | (ctx.pending != 0)))
    room = max(limit - open_count, 0)
    reason = f"{open_count} positions open of at most {limit}"
    entering = proposal.side != 0
    if int(np.count_nonzero((quantity > 0) & entering)) <= room:  # room for all: nothing to cut or rank
        return EntryResult("max_positions", quantity, reason)
    out = quantity.copy()
    if room == 0:  # the book is full, the usual case when this rule bites: every entry goes, no ranking
        out[entering] = 0
    else:
        out[_by_confidence(proposal, quantity)[room:]] = 0
    return EntryResult("max_positions", out, reason)


def position_cap(ctx: RiskContext, proposal: Proposal, quantity: IntArray) -> EntryResult:
    limit = ctx.config.max_position_fraction
    if limit is None:
        return EntryResult("position_cap", quantity, "")
    cap = np.floor(limit * max(ctx.equity, 0.0) / ctx.close / ctx.lot_size) * ctx.lot_size
    cap = np.where(np.isfinite(cap), cap, 0).astype(np.int64)
    return EntryResult("position_cap", np.minimum(quantity, cap), f"position above {limit} of equity")


def _budgeted(ctx: RiskContext, ranked: list[int], quantity: IntArray, budget: float) -> IntArray:
    """Shrink the entries in `ranked` (most confident first) so their notional fits in `budget`."""
    out = quantity.copy()
    # Python floats/ints in the loop: the same IEEE arithmetic as the numpy scalars, without their overhead.
    for index in ranked:
        price, lot = float(ctx.close[index]), int(ctx.lot_size[index])
        unit = price * lot
        lots = math.floor(max(budget, 0.0) / unit) if unit > 0 else 0
        take = min(int(out[index]), lots * lot)
        out[index] = take
        budget -= take * price
    return out


def gross_exposure(ctx: RiskContext, proposal: Proposal, quantity: IntArray) -> EntryResult:
    limit = ctx.config.max_gross_exposure
    if limit is None:
        return EntryResult("gross_exposure", quantity, "")
    current = float(_finite_sum(np.abs(ctx.positions + ctx.pending) * ctx.close))
    budget = limit * ctx.equity - current
    return EntryResult("gross_exposure", _budgeted(ctx, _by_confidence(proposal, quantity), quantity, budget),
                       f"gross exposure above {limit} of equity")


def net_exposure(ctx: RiskContext, proposal: Proposal, quantity: IntArray) -> EntryResult:
    limit = ctx.config.max_net_exposure
    if limit is None:
        return EntryResult("net_exposure", quantity, "")
    current = float(_finite_sum((ctx.positions + ctx.pending) * ctx.close))
    out = quantity.copy()
    sides = proposal.side.tolist()
    for side in (1, -1):
        # Entries on one side use the room up to +limit (longs) or down to -limit (shorts).
        budget = limit * ctx.equity - side * current
        ranked = [index for index in _by_confidence(proposal, out) if sides[index] == side]
        if not ranked:
            continue
        capped = _budgeted(ctx, ranked, out, budget)
        out[ranked] = capped[ranked]
    return EntryResult("net_exposure", out, f"net exposure above {limit} of equity")


def cash_available(ctx: RiskContext, proposal: Proposal, quantity: IntArray) -> EntryResult:
    """No entry the cash cannot pay for (shorts are collateralised in full: no margin)."""
    if not np.count_nonzero(quantity):
        return EntryResult("cash_available", quantity, "")
    # Nothing working: nothing committed (skips two full-width array passes on most bars).
    committed = float(_finite_sum(np.abs(ctx.pending) * ctx.close)) if np.count_nonzero(ctx.pending) else 0.0
    budget = ctx.cash - committed
    rate = 1.0 + ctx.cost_buffer_rate
    # Cash for every wanted entry plus one more lot of the dearest: then each entry's affordable lots exceed
    # its wanted ones at every turn of `_cash_cuts`, which cuts nothing (the same array back, no ranking).
    if cash_covers_kernel(quantity, ctx.close, ctx.lot_size, rate, budget):
        return EntryResult("cash_available", quantity, "not enough cash")
    return EntryResult("cash_available", _cash_cuts(ctx, proposal, quantity, budget, rate), "not enough cash")


def _cash_cuts(ctx: RiskContext, proposal: Proposal, quantity: IntArray, budget: float, rate: float) -> IntArray:
    """Entries, most confident first, each cut to the whole lots the cash left after the ones before buys."""
    out = quantity  # copied on the first cut only: when the cash covers everything, the same array goes back
    # Python floats/ints in the loop: the same IEEE arithmetic as the numpy scalars, without their overhead
    # (Python's float `//` is numpy's floor_divide algorithm: same result, also at exact multiples).
    for index in _by_confidence(proposal, quantity):
        price = float(ctx.close[index]) * rate
        lot = int(ctx.lot_size[index])
        affordable = int(max(budget, 0.0) // (price * lot)) * lot if price > 0 else 0
        wanted = int(out[index])
        take = min(wanted, affordable)
        if take != wanted:
            if out is quantity:
                out = quantity.copy()
            out[index] = take
        budget -= take * price
    return out


def portfolio_var(ctx: RiskContext, weights: FloatArray) -> tuple[float, float]:
    """(VaR, CVaR) as positive fractions of equity at `var_confidence`, one bar ahead."""
    returns = np.nan_to_num(ctx.returns)
    if returns.shape[0] < 10:
        return 0.0, 0.0
    scenario = returns @ weights
    alpha = 1.0 - ctx.config.var_confidence
    if ctx.config.var_method == "parametric":
        z = NormalDist().inv_cdf(ctx.config.var_confidence)
        mean, std = float(scenario.mean()), float(scenario.std(ddof=1))
        var = z * std - mean
        cvar = std * float(np.exp(-z * z / 2.0) / np.sqrt(2.0 * np.pi)) / alpha - mean
        return max(var, 0.0), max(cvar, 0.0)
    cut = float(np.quantile(scenario, alpha))
    tail = scenario[scenario <= cut]
    return max(-cut, 0.0), max(-float(tail.mean()), 0.0) if tail.size else 0.0


def var_limit(ctx: RiskContext, proposal: Proposal, quantity: IntArray) -> EntryResult:
    limits = (ctx.config.var_limit, ctx.config.cvar_limit)
    if limits == (None, None):
        return EntryResult("var_limit", quantity, "")
    out = quantity.copy()
    base = (ctx.positions + ctx.pending).astype(np.float64)
    details: dict[int, str] = {}
    # Drop the least confident entries until the post-trade book fits.
    for index in [*_by_confidence(proposal, quantity)[::-1], None]:
        signed = base + proposal.side * out
        weights = np.nan_to_num(signed * ctx.close / max(ctx.equity, 1e-12))
        var, cvar = portfolio_var(ctx, weights)
        fits = (limits[0] is None or var <= limits[0]) and (limits[1] is None or cvar <= limits[1])
        if fits or index is None:
            break
        out[index] = 0
        details[int(index)] = f"VaR {var:.4f} / CVaR {cvar:.4f} above {limits[0]} / {limits[1]}"
    return EntryResult("var_limit", out, "portfolio VaR/CVaR above limit", details)


ENTRY_RULES: tuple[Callable[[RiskContext, Proposal, IntArray], EntryResult], ...] = (
    session_window, volatility_filter, correlation_filter, max_positions, position_cap,
    gross_exposure, net_exposure, cash_available, var_limit,
)


EntryRule = Callable[[RiskContext, Proposal, IntArray], EntryResult]


def _never_acts(rule: EntryRule, config: RiskConfig, is_intraday: bool) -> bool:
    """True when `rule` hands the quantity back untouched on every bar under this config (a disabled rule)."""
    if rule is session_window:
        return config.no_entry_minutes_before_close <= 0 and (
            config.square_off_minutes_before_close is None or not is_intraday)
    disabled_by: dict[EntryRule, bool] = {
        volatility_filter: config.max_realised_vol is None, correlation_filter: config.max_correlation is None,
        max_positions: config.max_positions is None, position_cap: config.max_position_fraction is None,
        gross_exposure: config.max_gross_exposure is None, net_exposure: config.max_net_exposure is None,
        var_limit: config.var_limit is None and config.cvar_limit is None,
    }
    return disabled_by.get(rule, False)


_ACTIVE_RULES: dict[tuple[int, bool], tuple[RiskConfig, tuple[EntryRule, ...]]] = {}


def active_entry_rules(config: RiskConfig, is_intraday: bool) -> tuple[EntryRule, ...]:
    """`ENTRY_RULES` without the ones this config disables, in the same order: computed once per config
    instead of calling (and allocating a result for) every disabled rule on every bar."""
    # Keyed by identity, not by value: hashing a pydantic config on every bar costs more than the rules.
    # The entry keeps the config alive, so its id cannot be reused while the entry exists.
    cached = _ACTIVE_RULES.get((id(config), is_intraday))
    if cached is not None and cached[0] is config:
        return cached[1]
    if len(_ACTIVE_RULES) >= 64:
        _ACTIVE_RULES.clear()
    rules = tuple(rule for rule in ENTRY_RULES if not _never_acts(rule, config, is_intraday))
    _ACTIVE_RULES[(id(config), is_intraday)] = (config, rules)
    return rules
