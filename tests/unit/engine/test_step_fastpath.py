"""The step skips guards and entry rules it judges idle for speed: check each skip against the rule itself."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeloom.engine import RiskConfig
from tradeloom.engine.risk import (
    ENTRY_RULES,
    GUARDS,
    Proposal,
    RiskContext,
    active_entry_rules,
    guard_idle,
    max_positions,
)

N = 6
OPTIONAL = st.one_of(st.none(), st.floats(0.01, 0.9))


@st.composite
def risk_configs(draw: st.DrawFn) -> RiskConfig:
    return RiskConfig(
        max_position_fraction=draw(OPTIONAL), max_gross_exposure=draw(OPTIONAL), max_net_exposure=draw(OPTIONAL),
        max_positions=draw(st.one_of(st.none(), st.integers(1, N))), daily_loss_limit=draw(OPTIONAL),
        max_drawdown=draw(OPTIONAL), max_realised_vol=draw(OPTIONAL), max_correlation=draw(OPTIONAL),
        var_limit=draw(OPTIONAL), cvar_limit=draw(OPTIONAL), history_bars=10,
        no_entry_minutes_before_close=draw(st.sampled_from([0.0, 15.0])),
        square_off_minutes_before_close=draw(st.one_of(st.none(), st.just(5.0))),
        kill_switch=draw(st.booleans()),
    )


@st.composite
def contexts(draw: st.DrawFn) -> tuple[RiskContext, Proposal, np.ndarray]:
    config = draw(risk_configs())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    close = 100 * np.exp(rng.normal(0, 0.1, N))
    positions = rng.integers(-3, 4, N) * (rng.random(N) < 0.5)
    equity = float(draw(st.floats(1e3, 1e5)))
    ctx = RiskContext(
        config=config, equity=equity, cash=equity * 0.5, close=close, positions=positions.astype(np.int64),
        pending=(rng.integers(-2, 3, N) * (rng.random(N) < 0.3)).astype(np.int64),
        lot_size=np.ones(N, dtype=np.int64), features={"realised_vol": rng.random(N)},
        returns=rng.normal(0, 0.02, (12, N)), minutes_to_close=rng.uniform(0, 60, N),
        is_intraday=draw(st.booleans()), equity_peak=equity * draw(st.floats(1.0, 1.5)),
        day_start_equity=equity * draw(st.floats(0.9, 1.2)), halted_for_day=draw(st.booleans()),
        halted_for_drawdown=draw(st.booleans()), kill_switch=draw(st.booleans()),
    )
    side = rng.integers(-1, 2, N).astype(np.int8)
    quantity = (rng.integers(1, 50, N) * (side != 0)).astype(np.int64)
    return ctx, Proposal(side, quantity, rng.uniform(0.4, 1.0, N)), quantity


@settings(max_examples=150, deadline=None)
@given(contexts())
def test_guard_idle_random_context_guard_would_do_nothing(case: tuple[RiskContext, Proposal, np.ndarray]) -> None:
    ctx, _, _ = case
    for guard in GUARDS:
        if guard_idle(guard, ctx):
            result = guard(ctx)
            assert not result.flatten.any() and not result.block_all and result.halt is None, guard.__name__


@settings(max_examples=150, deadline=None)
@given(contexts())
def test_active_entry_rules_random_context_skipped_rules_hand_quantity_back(
    case: tuple[RiskContext, Proposal, np.ndarray],
) -> None:
    ctx, proposal, quantity = case
    active = active_entry_rules(ctx.config, ctx.is_intraday)
    assert list(active) == [rule for rule in ENTRY_RULES if rule in active]  # same order as ENTRY_RULES
    for rule in ENTRY_RULES:
        if rule not in active:
            assert rule(ctx, proposal, quantity).quantity is quantity, rule.__name__


def test_active_entry_rules_everything_disabled_keeps_only_cash_available() -> None:
    config = RiskConfig(max_position_fraction=None, max_gross_exposure=None, max_net_exposure=None,
                        max_positions=None)
    assert [rule.__name__ for rule in active_entry_rules(config, False)] == ["cash_available"]


@settings(max_examples=150, deadline=None)
@given(contexts(), st.integers(0, 2**32 - 1))
def test_entry_rules_random_context_only_ever_cut_so_the_step_may_stop_at_all_zero(
    case: tuple[RiskContext, Proposal, np.ndarray], seed: int,
) -> None:
    # The step stops applying entry rules once every quantity is 0: sound only if no rule ever raises one.
    ctx, proposal, quantity = case
    rng = np.random.default_rng(seed)
    quantity = quantity * (rng.random(N) < 0.6)  # some entries already cut by an earlier rule
    for rule in ENTRY_RULES:
        out = rule(ctx, proposal, quantity).quantity
        assert np.all(out >= 0) and np.all(out <= quantity), (rule.__name__, quantity, out)
        zeros = np.zeros(N, dtype=np.int64)
        assert not rule(ctx, proposal, zeros).quantity.any(), rule.__name__


@settings(max_examples=300, deadline=None)
@given(contexts(), st.one_of(st.floats(0.0, 3.0), st.sampled_from([1.0, 1.0 + 1e-7, 1.001, 1.01, 1.05])),
       st.integers(1, 5), st.sampled_from([0.0, 0.0, 0.001]))
def test_cash_available_fast_path_equals_the_ranked_cuts(
    case: tuple[RiskContext, Proposal, np.ndarray], cover: float, lot: int, buffer: float,
) -> None:
    # Cash from none to three times the wanted notional, often just above it (where a lot more decides): the
    # fast path (cash to spare) and the ranked cuts agree.
    from dataclasses import replace

    from tradeloom.engine.risk import _cash_cuts, cash_available

    ctx, proposal, quantity = case
    quantity = quantity // lot * lot + (quantity % 3 == 0)  # some quantities off the lot grid
    lots = np.full(N, lot, dtype=np.int64)
    notional = float((quantity * ctx.close).sum())
    committed = float(np.nansum(np.abs(ctx.pending) * ctx.close))
    ctx = replace(ctx, cash=notional * cover + committed, lot_size=lots, cost_buffer_rate=buffer)
    reference = _cash_cuts(ctx, proposal, quantity, ctx.cash - committed, 1.0 + buffer)
    assert np.array_equal(cash_available(ctx, proposal, quantity).quantity, reference)


def max_positions_by_ranking(ctx: RiskContext, proposal: Proposal, quantity: np.ndarray) -> np.ndarray:
    """The rule as first written: keep the `room` most confident entries, cut the rest."""
    assert ctx.config.max_positions is not None
    room = max(ctx.config.max_positions - int(np.count_nonzero((ctx.positions != 0) | (ctx.pending != 0))), 0)
    out = quantity.copy()
    wanted = quantity.tolist()
    out[[index for index in proposal.ranked if wanted[index] > 0][room:]] = 0
    return out


@settings(max_examples=300, deadline=None)
@given(contexts(), st.integers(0, N + 1))
def test_max_positions_shortcuts_cut_as_the_ranking_does(case: tuple[RiskContext, Proposal, np.ndarray],
                                                         limit: int) -> None:
    ctx, proposal, quantity = case
    ctx = RiskContext(**{**vars(ctx), "config": ctx.config.model_copy(update={"max_positions": limit})})
    got = max_positions(ctx, proposal, quantity)
    assert np.array_equal(got.quantity, max_positions_by_ranking(ctx, proposal, quantity))
    assert got.quantity.dtype == quantity.dtype
