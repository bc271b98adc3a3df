"""OCO under random days of brackets on one instrument, with partial fills of the legs, retirement of finished
orders and restarts that adopt the journal in any order: a position's legs are never cancelled while it is open,
never work for more than it, and a closed position never keeps a working leg."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from executor.oms import Lineage, ManagedOrder, OrderManager
from tests.unit.executor.test_oms import RecordingJournal, ScriptedBroker, _intent
from tradeloom.domain import IntentPurpose, OrderState, OrderType, Side

# A day is a run of bracket cycles; each cycle may be cut by restarts and polls anywhere.
PARTS = st.lists(st.sampled_from(["part_stop", "part_target"]), max_size=2)
CYCLE = st.tuples(st.just("bracket"), st.just("fill_entry"), st.sampled_from(["fill_stop", "fill_target"]))
NOISE = st.lists(st.sampled_from(["restart", "poll", "retire"]), max_size=2)
OPS = st.lists(st.tuples(CYCLE, NOISE, PARTS, NOISE, NOISE), min_size=1, max_size=6).map(
    lambda cycles: [op for (b, f, x), n1, parts, n2, n3 in cycles for op in (b, *n1, f, *parts, *n2, x, *n3)])


@settings(max_examples=200, deadline=None)
@given(ops=OPS, orders_seed=st.randoms(use_true_random=False))
def test_oco_keeps_the_open_position_protected_and_closes_the_legs_of_a_closed_one(ops: list[str],
                                                                                   orders_seed: object) -> None:
    broker = ScriptedBroker(modifiable=True)
    manager = OrderManager(broker, RecordingJournal())
    episodes = 0
    closed: set[int] = set()  # episodes whose position a protective leg closed
    filled_entry: set[int] = set()
    for bar, op in enumerate(ops, start=1):
        k = episodes
        if op == "bracket" and (k == 0 or k in closed):  # the engine enters only when flat
            episodes += 1
            k = episodes
            lineage = Lineage("s", "paper", bar)
            manager.submit(_intent(f"E{k}"), lineage)
            manager.submit(_intent(f"S{k}", IntentPurpose.STOP_LOSS, f"E{k}", OrderType.STOP, Side.SELL), lineage)
            manager.submit(_intent(f"T{k}", IntentPurpose.TAKE_PROFIT, f"E{k}", OrderType.LIMIT, Side.SELL),
                           lineage)
        elif op == "fill_entry" and k and k not in filled_entry:
            manager.on_update(broker.fill(f"E{k}", 10))
            filled_entry.add(k)
        elif op in ("fill_stop", "fill_target") and k in filled_entry and k not in closed:
            leg = f"{'S' if op == 'fill_stop' else 'T'}{k}"
            venue = broker.venue[leg]
            if not venue.state.is_terminal:  # the rest of the leg: what the position still holds
                manager.on_update(broker.fill(leg, venue.quantity - venue.filled_quantity))
                closed.add(k)
        elif op in ("part_stop", "part_target") and k in filled_entry and k not in closed:
            venue = broker.venue[f"{'S' if op == 'part_stop' else 'T'}{k}"]
            if not venue.state.is_terminal and venue.quantity - venue.filled_quantity > 3:
                manager.on_update(broker.fill(venue.client_order_id or "", 3))
        elif op == "restart":
            adopted: list[ManagedOrder] = [replace(order) for order in manager.orders.values()]
            orders_seed.shuffle(adopted)  # type: ignore[attr-defined]
            manager = OrderManager(broker, RecordingJournal())
            manager.adopt(adopted)
            manager.reconcile()
        elif op == "poll":
            manager.poll()
        elif op == "retire":  # a service running into a new day forgets what finished before this bar
            manager.retire(decided_before_ns=bar)
        held = sum(position.quantity for position in broker.positions())
        assert held >= 0, (ops[:bar], held)  # a leg never sold more than the position
        working = (OrderState.ACKNOWLEDGED, OrderState.PARTIALLY_FILLED)
        for j in range(1, episodes + 1):
            if j in filled_entry and j not in closed:  # an open position: both legs working, none bigger than it
                legs = [manager.orders[f"{name}{j}"] for name in ("S", "T")]  # never retired while it works
                assert all(leg.state in working for leg in legs), (ops[:bar], j, legs)
                venue_legs = [broker.venue[leg.client_order_id] for leg in legs]
                assert all(leg.state in working for leg in venue_legs)
                assert all(leg.quantity - leg.filled_quantity <= held for leg in venue_legs), (ops[:bar], venue_legs)
            if j in closed:  # closed by one leg: the other is no longer working anywhere (in memory or retired)
                kept = [manager.orders.get(f"{name}{j}") for name in ("S", "T")]
                assert not any(leg.is_open for leg in kept if leg is not None)
                assert all(broker.venue[f"{name}{j}"].state.is_terminal for name in ("S", "T"))
    placed = [intent.client_order_id for intent in broker.placed]
    assert len(placed) == len(set(placed))  # nothing sent twice, across every restart
