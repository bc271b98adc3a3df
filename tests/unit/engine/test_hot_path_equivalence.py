"""Shortcuts taken for speed in the per-bar and per-order paths, each checked against the long way round."""

from __future__ import annotations

import hashlib
import random
from decimal import Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeloom.domain import IntentPurpose, OrderIntent, OrderType, Side, client_order_id
from tradeloom.engine import (
    BrokerConfig,
    EngineConfig,
    EngineInputs,
    EngineState,
    RiskConfig,
    SignalConfig,
    SimulatedBroker,
    SizingConfig,
    StopConfig,
    Universe,
    cost_preset,
    step,
)
from tradeloom.engine.config import CostConfig
from tradeloom.engine.costs import fee_total, fees


@given(strategy=st.text(min_size=1, max_size=12), key=st.text(min_size=1, max_size=20),
       bar=st.integers(0, 2**63 - 1), purpose=st.sampled_from(list(IntentPurpose)), leg=st.integers(0, 3))
def test_client_order_id_any_intent_matches_documented_derivation(strategy: str, key: str, bar: int,
                                                                  purpose: IntentPurpose, leg: int) -> None:
    # The derivation live orders at brokers already carry: blake2b-64 of "strategy|key|bar|purpose|leg".
    digest = hashlib.blake2b(f"{strategy}|{key}|{bar}|{purpose.value}|{leg}".encode(), digest_size=8).hexdigest()
    assert client_order_id(strategy, key, bar, purpose, leg) == "TL" + digest


@settings(max_examples=300)
@given(preset=st.sampled_from(["zero", "nse_equity_intraday", "nse_equity_delivery", "us_equity_retail"]),
       flat=st.floats(0, 30), cap=st.one_of(st.none(), st.floats(0, 25)), side=st.sampled_from(list(Side)),
       quantity=st.integers(-5_000, 5_000), price=st.floats(0.01, 1e5))
def test_fee_total_any_fill_equals_sum_of_fee_lines(preset: str, flat: float, cap: float | None, side: Side,
                                                    quantity: int, price: float) -> None:
    config = cost_preset(preset).model_copy(update={"commission_flat": flat, "commission_cap": cap})
    assert fee_total(config, side, quantity, price) == fees(config, side, quantity, price).total


def _market(b: SimulatedBroker, order_id: str, side: Side, quantity: int, key: str = "X:A") -> None:
    b.submit(OrderIntent(order_id, key, side, quantity, OrderType.MARKET, IntentPurpose.ENTRY))


def test_sim_fill_domain_fill_built_on_read_carries_decimal_price_fees_and_id() -> None:
    b = SimulatedBroker(BrokerConfig(costs=CostConfig(commission_rate=0.001, slippage_bps=3.0)), ("X:A",), 1e6)
    _market(b, "A1", Side.BUY, 7)
    (sim,) = b.on_bar(42, *(np.array([x]) for x in (101.37, 102.0, 100.0, 101.0, 1e6)))
    fill = sim.fill
    assert fill is sim.fill  # built once
    assert (fill.client_order_id, fill.instrument_key, fill.side, fill.quantity, fill.filled_at_ns) == (
        "A1", "X:A", Side.BUY, 7, 42)
    assert fill.price == Decimal(repr(sim.price)) and fill.fees == Decimal(repr(sim.fees))
    assert sim.price > 101.37 and float(fill.fees) > 0  # slippage paid, commission charged
    assert fill.fill_id == "SIM-A1-1"
    assert (sim.quantity, sim.side, sim.filled_at_ns, sim.index) == (7, Side.BUY, 42, 0)
    assert repr(sim).startswith("SimFill(fill=Fill(client_order_id='A1'")


def test_simulated_broker_from_dict_shuffled_working_orders_fill_in_submission_order() -> None:
    b = SimulatedBroker(BrokerConfig(), ("X:A", "X:B"), 1e6)
    for n in range(6):
        _market(b, f"O{n}", Side.BUY, n + 1, "X:A" if n % 2 else "X:B")
    data = b.to_dict()
    random.Random(3).shuffle(data["working"])
    restored = SimulatedBroker.from_dict(data)
    bar = [np.array([100.0, 50.0])] * 4 + [np.array([1e6, 1e6])]
    fills = restored.on_bar(1, *bar)
    assert [f.client_order_id for f in fills] == [f"O{n}" for n in range(6)]


def test_step_any_bars_never_mutates_the_state_it_was_given() -> None:
    n = 6
    universe = Universe.simple([f"X:{i}" for i in range(n)])
    config = EngineConfig(
        signal=SignalConfig(enter_threshold=0.4, exit_threshold=0.4, allow_short=True, cooldown_bars=2,
                            max_holding_bars=4),
        stops=StopConfig(stop_loss_pct=0.02, take_profit_pct=0.03, trailing=True),
        risk=RiskConfig(max_correlation=0.9, history_bars=10), sizing=SizingConfig(method="fixed_notional"),
    )
    rng = np.random.default_rng(5)
    state = EngineState.for_config(config, n, 1e6)
    positions = np.zeros(n, dtype=np.int64)
    close = np.full(n, 100.0)
    seen: set[tuple[OrderType, IntentPurpose]] = set()
    for t in range(40):
        close = close * (1 + rng.normal(0, 0.01, n))
        logits = rng.normal(0, 2, (n, 3))
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        inputs = EngineInputs(universe, t, close, close, close, close, np.full(n, 1e6), probabilities, positions.copy(),
                              1e6, np.zeros(n, dtype=np.int64))
        before = EngineState.from_dict(state.to_dict()).to_dict()
        result = step(config, state, inputs)
        assert state.to_dict() == before, f"bar {t}"
        state = result.state
        for intent in result.intents:
            seen.add((intent.order_type, intent.purpose))
            if intent.order_type is OrderType.MARKET:  # fills at once: enough to hold and exit positions
                positions[universe.keys.index(intent.instrument_key)] += int(intent.side) * intent.quantity
    assert state.bars_seen == 40
    # The walk went through entries, brackets and exits (so every state array was written at least once).
    assert {(OrderType.MARKET, IntentPurpose.ENTRY), (OrderType.MARKET, IntentPurpose.EXIT),
            (OrderType.STOP, IntentPurpose.STOP_LOSS), (OrderType.LIMIT, IntentPurpose.TAKE_PROFIT)} <= seen


@settings(max_examples=300, deadline=None)
@given(confidence=st.lists(st.sampled_from([0.0, -0.0, 0.25, 0.5, 0.5000001, 0.9, float("nan")]), min_size=1,
                           max_size=12), data=st.data())
def test_proposal_ranked_equals_numpy_stable_argsort(confidence: list[float], data: st.DataObject) -> None:
    from tradeloom.engine.risk import Proposal

    side = np.array(data.draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=len(confidence),
                                       max_size=len(confidence))), dtype=np.int8)
    values = np.array(confidence)
    wanted = np.flatnonzero(side != 0)
    expected = wanted[np.argsort(-values[wanted], kind="stable")].tolist()  # the definition it replaced
    assert Proposal(side, np.ones(len(side), dtype=np.int64), values).ranked == expected
