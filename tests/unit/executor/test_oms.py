"""The order manager's state machine against a scripted broker that enters through the port."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from decimal import Decimal

import pytest

from executor.oms import Lineage, ManagedOrder, OrderManager, transition
from tradeloom.broker import BrokerOrder, BrokerPosition, Funds, PlacementUnconfirmed
from tradeloom.domain import Fill, IntentPurpose, OrderIntent, OrderState, OrderType, ProductType, Side
from tradeloom.errors import InputError, InvariantViolation, OrderRejectedError, TransientBrokerError

LINEAGE = Lineage("s", "paper", 1)


@dataclass
class ScriptedBroker:
    """A broker whose answers the test scripts; it remembers every placement it received."""

    name: str = "scripted"
    placed: list[OrderIntent] = field(default_factory=list)
    venue: dict[str, BrokerOrder] = field(default_factory=dict)
    fail_next_place: Exception | None = None
    accept_before_failing: bool = False
    fills: list[Fill] = field(default_factory=list)
    modifiable: bool = False
    modified: list[tuple[str, int]] = field(default_factory=list)

    def _order(self, intent: OrderIntent, state: OrderState = OrderState.ACKNOWLEDGED, filled: int = 0) -> BrokerOrder:
        return BrokerOrder(f"B{len(self.venue)}", intent.client_order_id, intent.instrument_key, intent.side,
                           intent.quantity, filled, state, intent.order_type, intent.product,
                           intent.limit_price, intent.stop_price)

    def place(self, intent: OrderIntent) -> BrokerOrder:
        self.placed.append(intent)
        if self.fail_next_place is not None:
            error, self.fail_next_place = self.fail_next_place, None
            if self.accept_before_failing:
                self.venue[intent.client_order_id] = self._order(intent)
            raise error
        order = self._order(intent)
        self.venue[intent.client_order_id] = order
        return order

    def fill(self, client_id: str, quantity: int) -> BrokerOrder:
        order = self.venue[client_id]
        filled = order.filled_quantity + quantity
        state = OrderState.FILLED if filled == order.quantity else OrderState.PARTIALLY_FILLED
        self.venue[client_id] = replace(order, filled_quantity=filled, state=state)
        self.fills.append(Fill(client_id, order.instrument_key, order.side, quantity, Decimal(100), 1,
                               f"F{len(self.fills)}"))
        return self.venue[client_id]

    def modify(self, broker_order_id: str, *, quantity: int | None = None, **_: object) -> BrokerOrder:
        if not self.modifiable or quantity is None:
            raise OrderRejectedError("no modify")
        for client_id, order in self.venue.items():
            if order.broker_order_id == broker_order_id and not order.state.is_terminal:
                self.modified.append((client_id, quantity))
                self.venue[client_id] = replace(order, quantity=quantity)
                return self.venue[client_id]
        raise OrderRejectedError(broker_order_id)

    def cancel(self, broker_order_id: str) -> BrokerOrder:
        for client_id, order in self.venue.items():
            if order.broker_order_id == broker_order_id:
                self.venue[client_id] = replace(order, state=OrderState.CANCELLED)
                return self.venue[client_id]
        raise OrderRejectedError(broker_order_id)

    def order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        return self.venue.get(client_order_id)

    def open_orders(self) -> list[BrokerOrder]:
        return [o for o in self.venue.values() if not o.state.is_terminal]

    def orders_today(self) -> list[BrokerOrder]:
        return list(self.venue.values())

    def positions(self) -> list[BrokerPosition]:
        """Net of every fill so far (the scripted day starts flat)."""
        net: dict[str, int] = {}
        for fill in self.fills:
            net[fill.instrument_key] = net.get(fill.instrument_key, 0) + int(fill.side) * fill.quantity
        return [BrokerPosition(key, ProductType.INTRADAY, quantity, Decimal(100))
                for key, quantity in net.items() if quantity]

    def fills_today(self) -> list[Fill]:
        return list(self.fills)

    def funds(self) -> Funds:
        return Funds(Decimal(0), Decimal(0))


@dataclass
class RecordingJournal:
    saved: list[tuple[str, OrderState]] = field(default_factory=list)
    fills: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    syncs: list[int] = field(default_factory=list)

    def save_order(self, order: ManagedOrder) -> None:
        self.saved.append((order.client_order_id, order.state))

    def record_fill(self, fill: Fill, broker: str) -> None:
        self.fills.append(fill.fill_id)

    def record_event(self, kind: str, detail: dict[str, object], actor: str = "executor") -> None:
        self.events.append(kind)

    def sync(self) -> None:
        self.syncs.append(len(self.saved))


def _intent(client_id: str, purpose: IntentPurpose = IntentPurpose.ENTRY, parent: str | None = None,
            order_type: OrderType = OrderType.MARKET, side: Side = Side.BUY) -> OrderIntent:
    return OrderIntent(client_id, "NSE:INFY", side, 10, order_type, purpose,
                       stop_price=Decimal(90) if order_type is OrderType.STOP else None,
                       product=ProductType.INTRADAY, parent_client_order_id=parent)


def test_submit_known_client_id_is_never_sent_twice() -> None:
    broker, journal = ScriptedBroker(), RecordingJournal()
    manager = OrderManager(broker, journal)
    manager.submit(_intent("A"), LINEAGE)
    manager.submit(_intent("A"), LINEAGE)
    assert [intent.client_order_id for intent in broker.placed] == ["A"]
    assert manager.duplicates_refused == 1
    assert journal.saved[0] == ("A", OrderState.NEW)  # journaled before the broker saw it


def test_submit_after_restart_with_journal_orders_is_not_resent() -> None:
    broker = ScriptedBroker()
    first = OrderManager(broker, RecordingJournal())
    order = first.submit(_intent("A"), LINEAGE)
    assert order is not None
    second = OrderManager(broker, RecordingJournal())
    second.adopt([order])
    second.submit(_intent("A"), LINEAGE)
    assert len(broker.placed) == 1


def test_placement_timeout_is_reconciled_by_client_id_not_resent() -> None:
    broker = ScriptedBroker(fail_next_place=TransientBrokerError("timeout"), accept_before_failing=True)
    manager = OrderManager(broker, RecordingJournal())
    order = manager.submit(_intent("A"), LINEAGE)
    assert order is not None and order.unconfirmed and order.state is OrderState.SENT
    manager.poll()
    assert order.state is OrderState.ACKNOWLEDGED and not order.unconfirmed
    assert len(broker.placed) == 1


def test_unconfirmed_placement_missing_at_broker_after_restart_is_marked_rejected() -> None:
    broker = ScriptedBroker(fail_next_place=PlacementUnconfirmed("lost"))
    manager = OrderManager(broker, RecordingJournal())
    order = manager.submit(_intent("A"), LINEAGE)
    assert order is not None and order.unconfirmed
    restarted = OrderManager(broker, RecordingJournal())
    restarted.adopt([order])
    report = restarted.reconcile()
    assert order.state is OrderState.REJECTED
    assert report["unconfirmed_resolved"] == 1
    assert len(broker.placed) == 1


def test_unconfirmed_placement_never_arrived_is_closed_after_grace_in_session() -> None:
    broker = ScriptedBroker(fail_next_place=TransientBrokerError("HTTP 502"))
    manager = OrderManager(broker, RecordingJournal(), unconfirmed_grace_seconds=0.0)
    order = manager.submit(_intent("A"), LINEAGE)
    assert order is not None and order.unconfirmed
    manager.poll()
    assert order.state is OrderState.REJECTED and not order.unconfirmed
    assert "never arrived" in order.status_message
    manager.submit(_intent("B"), LINEAGE)  # the engine decides afresh under a new client order id
    assert [intent.client_order_id for intent in broker.placed] == ["A", "B"]


def test_unconfirmed_placement_within_grace_stays_open() -> None:
    broker = ScriptedBroker(fail_next_place=TransientBrokerError("HTTP 502"))
    manager = OrderManager(broker, RecordingJournal(), unconfirmed_grace_seconds=3600.0)
    order = manager.submit(_intent("A"), LINEAGE)
    manager.poll()
    assert order is not None and order.unconfirmed and order.state is OrderState.SENT


@dataclass
class UnreachableLookups(ScriptedBroker):
    def order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        raise TransientBrokerError("HTTP 503")


def test_failed_lookup_never_closes_an_unconfirmed_order() -> None:
    broker = UnreachableLookups(fail_next_place=PlacementUnconfirmed("lost"))
    manager = OrderManager(broker, RecordingJournal(), unconfirmed_grace_seconds=0.0)
    order = manager.submit(_intent("A"), LINEAGE)
    manager.poll()
    restarted = OrderManager(broker, RecordingJournal())
    assert order is not None
    restarted.adopt([order])
    restarted.reconcile()
    assert order.unconfirmed and order.state is OrderState.SENT  # unknown stays unknown until the broker answers


def test_rejection_is_terminal_and_not_retried() -> None:
    broker = ScriptedBroker(fail_next_place=OrderRejectedError("margin"))
    manager = OrderManager(broker, RecordingJournal())
    order = manager.submit(_intent("A"), LINEAGE)
    assert order is not None and order.state is OrderState.REJECTED
    manager.poll()
    assert len(broker.placed) == 1


def test_bracket_legs_wait_for_the_entry_fill_then_oco() -> None:
    broker, journal = ScriptedBroker(), RecordingJournal()
    manager = OrderManager(broker, journal)
    manager.submit(_intent("E"), LINEAGE)
    stop = manager.submit(_intent("S", IntentPurpose.STOP_LOSS, "E", OrderType.STOP, Side.SELL), LINEAGE)
    target = manager.submit(_intent("T", IntentPurpose.TAKE_PROFIT, "E", OrderType.LIMIT, Side.SELL), LINEAGE)
    assert stop is not None and target is not None
    assert stop.held_for_parent and target.held_for_parent
    assert [i.client_order_id for i in broker.placed] == ["E"]
    manager.on_update(broker.fill("E", 10))
    assert [i.client_order_id for i in broker.placed] == ["E", "S", "T"]
    assert all(i.quantity == 10 and i.parent_client_order_id is None for i in broker.placed[1:])
    manager.on_update(broker.fill("T", 10))
    assert target.state is OrderState.FILLED
    assert stop.state is OrderState.CANCELLED  # one cancels the other


def test_duplicate_and_out_of_order_updates_do_not_move_state_back() -> None:
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())
    order = manager.submit(_intent("A"), LINEAGE)
    assert order is not None
    acknowledged = broker.venue["A"]
    filled = broker.fill("A", 10)
    assert manager.on_update(filled)
    assert not manager.on_update(filled)
    assert not manager.on_update(acknowledged)
    assert order.state is OrderState.FILLED and order.filled_quantity == 10


def test_fills_are_recorded_once() -> None:
    broker, journal = ScriptedBroker(), RecordingJournal()
    manager = OrderManager(broker, journal)
    manager.submit(_intent("A"), LINEAGE)
    broker.fill("A", 4)
    manager.poll()
    manager.poll()
    assert journal.fills == ["F0"]


def test_entries_refused_while_paused() -> None:
    broker, journal = ScriptedBroker(), RecordingJournal()
    manager = OrderManager(broker, journal, entries_allowed=lambda: False)
    assert manager.submit(_intent("A"), LINEAGE) is None
    exit_order = manager.submit(_intent("X", IntentPurpose.EXIT, side=Side.SELL), LINEAGE)
    assert exit_order is not None
    assert [i.client_order_id for i in broker.placed] == ["X"]
    assert journal.events == ["entry_refused"]


def test_transition_overfill_is_an_invariant_violation() -> None:
    order = ManagedOrder(_intent("A"), LINEAGE, "b", state=OrderState.ACKNOWLEDGED)
    with pytest.raises(InvariantViolation, match="exceeds quantity"):
        transition(order, OrderState.FILLED, 11)


def test_cancelled_bracket_leg_is_never_sent_after_restart_even_when_its_entry_fills() -> None:
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())
    manager.submit(_intent("E"), LINEAGE)
    stop = manager.submit(_intent("S", IntentPurpose.STOP_LOSS, "E", OrderType.STOP, Side.SELL), LINEAGE)
    assert stop is not None
    manager.cancel("S")
    assert stop.state is OrderState.CANCELLED and not stop.held_for_parent
    broker.fill("E", 10)
    restarted = OrderManager(broker, RecordingJournal())
    restarted.adopt(list(manager.orders.values()))
    restarted.reconcile()
    restarted.reconcile()
    assert [intent.client_order_id for intent in broker.placed] == ["E"]


def test_submit_all_journals_every_intent_durably_before_the_first_send() -> None:
    broker, journal = ScriptedBroker(), RecordingJournal()
    manager = OrderManager(broker, journal)
    manager.submit_all([_intent("A"), _intent("B", side=Side.SELL)], LINEAGE)
    assert journal.saved[:2] == [("A", OrderState.NEW), ("B", OrderState.NEW)]
    assert journal.syncs[0] == 2  # one fsync after both NEW records, before any SENT
    assert [intent.client_order_id for intent in broker.placed] == ["A", "B"]


def test_open_orders_and_pending_follow_fills_cancels_and_adoption() -> None:
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())
    manager.submit_all([_intent("A"), _intent("B", side=Side.SELL), _intent("C")], LINEAGE)
    purposes = frozenset({IntentPurpose.ENTRY})
    assert manager.pending_quantities(("NSE:INFY",), purposes) == [10]  # +10 - 10 + 10
    broker.fill("A", 4)
    manager.poll()
    assert manager.pending_quantities(("NSE:INFY",), purposes) == [6]
    manager.cancel("B")
    assert [order.client_order_id for order in manager.open_orders()] == ["A", "C"]
    assert manager.pending_quantities(("NSE:INFY",), purposes) == [16]
    broker.fill("A", 6)
    manager.poll()
    assert [order.client_order_id for order in manager.open_orders()] == ["C"]
    assert manager.pending_quantities(("NSE:INFY",), purposes) == [10]
    restarted = OrderManager(broker, RecordingJournal())
    restarted.adopt(list(manager.orders.values()))
    assert [order.client_order_id for order in restarted.open_orders()] == ["C"]
    assert restarted.pending_quantities(("NSE:INFY", "NSE:TCS"), purposes) == [10, 0]


def test_a_new_bracket_after_a_stop_out_keeps_its_protection() -> None:
    """OCO pairs the legs of one position: a stop filled earlier in the day must not cancel the legs of a
    later bracket on the same instrument (that would leave the new position naked)."""
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())
    manager.submit(_intent("E1"), LINEAGE)
    manager.submit(_intent("S1", IntentPurpose.STOP_LOSS, "E1", OrderType.STOP, Side.SELL), LINEAGE)
    first_target = manager.submit(_intent("T1", IntentPurpose.TAKE_PROFIT, "E1", OrderType.LIMIT, Side.SELL),
                                  LINEAGE)
    manager.on_update(broker.fill("E1", 10))
    manager.on_update(broker.fill("S1", 10))  # stopped out: T1 is cancelled by OCO
    assert first_target is not None and first_target.state is OrderState.CANCELLED
    manager.submit(_intent("E2"), LINEAGE)
    stop = manager.submit(_intent("S2", IntentPurpose.STOP_LOSS, "E2", OrderType.STOP, Side.SELL), LINEAGE)
    target = manager.submit(_intent("T2", IntentPurpose.TAKE_PROFIT, "E2", OrderType.LIMIT, Side.SELL), LINEAGE)
    manager.on_update(broker.fill("E2", 10))
    manager.poll()
    assert stop is not None and target is not None
    assert stop.state is OrderState.ACKNOWLEDGED and target.state is OrderState.ACKNOWLEDGED
    assert broker.venue["S2"].state is OrderState.ACKNOWLEDGED
    manager.on_update(broker.fill("S2", 10))  # and the new pair still cancels each other
    assert target.state is OrderState.CANCELLED


def test_after_a_restart_the_journal_order_does_not_change_which_legs_oco_pairs() -> None:
    """The journal hands orders back unordered: adoption sorts them by bar (entry before its legs), so a
    restart after a stop-out and a re-entry keeps the new bracket and still cancels a stale leg."""
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())
    first, second = Lineage("s", "paper", 1), Lineage("s", "paper", 2)
    manager.submit(_intent("E1"), first)
    manager.submit(_intent("S1", IntentPurpose.STOP_LOSS, "E1", OrderType.STOP, Side.SELL), first)
    manager.submit(_intent("T1", IntentPurpose.TAKE_PROFIT, "E1", OrderType.LIMIT, Side.SELL), first)
    manager.on_update(broker.fill("E1", 10))
    manager.submit(_intent("E2"), second)
    manager.submit(_intent("S2", IntentPurpose.STOP_LOSS, "E2", OrderType.STOP, Side.SELL), second)
    manager.on_update(broker.fill("E2", 10))
    # S1 filled at the broker while the process was down; T1 is still working there.
    broker.fill("S1", 10)
    restarted = OrderManager(broker, RecordingJournal())
    restarted.adopt([replace(order) for order in reversed(list(manager.orders.values()))])
    restarted.reconcile()
    assert restarted.orders["S1"].state is OrderState.FILLED
    assert restarted.orders["T1"].state is OrderState.CANCELLED and broker.venue["T1"].state is OrderState.CANCELLED
    assert restarted.orders["S2"].state is OrderState.ACKNOWLEDGED
    assert broker.venue["S2"].state is OrderState.ACKNOWLEDGED


def test_an_entry_cancelled_after_a_partial_fill_releases_its_legs_for_what_filled() -> None:
    """A market entry can fill in part and have the rest cancelled (circuit limit, market protection): the
    position that did fill gets its stop and target, sized to it, instead of waiting for a fill that never comes."""
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())
    manager.submit(_intent("E"), LINEAGE)
    stop = manager.submit(_intent("S", IntentPurpose.STOP_LOSS, "E", OrderType.STOP, Side.SELL), LINEAGE)
    manager.submit(_intent("T", IntentPurpose.TAKE_PROFIT, "E", OrderType.LIMIT, Side.SELL), LINEAGE)
    manager.on_update(broker.fill("E", 4))
    assert [i.client_order_id for i in broker.placed] == ["E"]  # still working: the legs wait
    manager.on_update(broker.cancel(broker.venue["E"].broker_order_id))
    assert [(i.client_order_id, i.quantity) for i in broker.placed] == [("E", 10), ("S", 4), ("T", 4)]
    assert stop is not None and stop.state is OrderState.ACKNOWLEDGED and stop.intent.quantity == 4


def _bracket(manager: OrderManager, broker: ScriptedBroker) -> None:
    manager.submit(_intent("E"), LINEAGE)
    manager.submit(_intent("S", IntentPurpose.STOP_LOSS, "E", OrderType.STOP, Side.SELL), LINEAGE)
    manager.submit(_intent("T", IntentPurpose.TAKE_PROFIT, "E", OrderType.LIMIT, Side.SELL), LINEAGE)
    manager.on_update(broker.fill("E", 10))


def test_a_partly_filled_target_cuts_the_stop_to_what_is_left_so_the_position_cannot_flip() -> None:
    """Stop and target both work for 10. The target fills 4: the stop must now work for 6, or its fill would
    sell 10 out of a position of 6 and leave the account short 4."""
    broker, journal = ScriptedBroker(modifiable=True), RecordingJournal()
    manager = OrderManager(broker, journal)
    _bracket(manager, broker)
    manager.on_update(broker.fill("T", 4))
    assert broker.modified == [("S", 6)]
    assert broker.venue["S"].quantity == 6 and manager.orders["S"].intent.quantity == 6
    assert "protection_resized" in journal.events
    manager.on_update(broker.fill("S", 6))  # the stop triggers: flat, not short
    assert sum(p.quantity for p in broker.positions()) == 0
    assert manager.orders["T"].state is OrderState.CANCELLED  # OCO: the rest of the target goes
    assert broker.venue["T"].state is OrderState.CANCELLED


def test_after_a_restart_the_bar_close_check_cuts_a_sibling_the_crash_left_full_size() -> None:
    """The partial fill was journaled but the process died before the resize: the trader's bar-close call
    (with the broker's positions) does it. A sibling already at the position's size is left alone."""
    broker = ScriptedBroker(modifiable=True)
    manager = OrderManager(broker, RecordingJournal())
    _bracket(manager, broker)
    broker.fill("S", 3)  # while the process is down
    restarted = OrderManager(broker, RecordingJournal())
    restarted.adopt([replace(order) for order in manager.orders.values()])
    broker.modifiable = False  # the resize during reconciliation fails (a transient refusal)
    restarted.reconcile()
    assert broker.venue["T"].quantity == 10
    broker.modifiable = True
    held = {p.instrument_key: p.quantity for p in broker.positions()}
    assert held == {"NSE:INFY": 7}
    assert restarted.fit_protection(held) == 1
    assert broker.modified == [("T", 7)] and restarted.orders["T"].intent.quantity == 7
    assert restarted.fit_protection(held) == 0  # level-triggered: nothing more to do


def test_a_quantity_the_broker_lowered_becomes_the_orders_quantity() -> None:
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())
    _bracket(manager, broker)
    broker.venue["T"] = replace(broker.venue["T"], quantity=5)  # e.g. the paper account's clip
    assert manager.on_update(broker.venue["T"])
    assert manager.orders["T"].intent.quantity == 5
    broker.venue["T"] = replace(broker.venue["T"], quantity=0, state=OrderState.CANCELLED)
    manager.on_update(broker.venue["T"])  # a venue that reports 0 for a cancelled order changes nothing else
    assert manager.orders["T"].intent.quantity == 5 and manager.orders["T"].state is OrderState.CANCELLED


def test_a_position_read_smaller_than_it_is_never_shrinks_protection_without_a_sibling_fill() -> None:
    """Right after an entry fills, a lagging positions report can still show part of it: without a protective
    fill in that position nothing is cut (fills of the legs only ever make the position smaller)."""
    broker = ScriptedBroker(modifiable=True)
    manager = OrderManager(broker, RecordingJournal())
    _bracket(manager, broker)
    assert manager.fit_protection({"NSE:INFY": 4}) == 0
    assert broker.modified == [] and broker.venue["S"].quantity == 10
    manager.on_update(broker.fill("S", 10))  # stopped out; a new bracket of 10 follows
    later = Lineage("s", "paper", 2)
    manager.submit(_intent("E2"), later)
    manager.submit(_intent("S2", IntentPurpose.STOP_LOSS, "E2", OrderType.STOP, Side.SELL), later)
    manager.on_update(broker.fill("E2", 10))
    assert manager.fit_protection({"NSE:INFY": 4}) == 0  # the earlier position's stop fill is not a sibling
    assert broker.modified == [] and broker.venue["S2"].quantity == 10


def _day_of_brackets(broker: ScriptedBroker, manager: OrderManager) -> tuple[ManagedOrder, ManagedOrder]:
    """Day 1 (bar 1): a bracket stopped out. Day 1 (bar 2): a bracket whose entry filled and whose legs still
    work overnight. Returns the overnight stop and target."""
    manager.submit(_intent("E1"), LINEAGE)
    manager.submit(_intent("S1", IntentPurpose.STOP_LOSS, "E1", OrderType.STOP, Side.SELL), LINEAGE)
    manager.submit(_intent("T1", IntentPurpose.TAKE_PROFIT, "E1", OrderType.LIMIT, Side.SELL), LINEAGE)
    manager.on_update(broker.fill("E1", 10))
    manager.on_update(broker.fill("S1", 10))
    later = Lineage("s", "paper", 2)
    manager.submit(_intent("E2"), later)
    stop = manager.submit(_intent("S2", IntentPurpose.STOP_LOSS, "E2", OrderType.STOP, Side.SELL), later)
    target = manager.submit(_intent("T2", IntentPurpose.TAKE_PROFIT, "E2", OrderType.LIMIT, Side.SELL), later)
    manager.on_update(broker.fill("E2", 10))
    assert stop is not None and target is not None and stop.is_open and target.is_open
    return stop, target


def test_retire_drops_finished_episodes_keeps_a_working_one_whole_and_never_resends_a_retired_id() -> None:
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())
    stop, target = _day_of_brackets(broker, manager)
    assert manager.retire(decided_before_ns=10) == 3  # E1, S1, T1: E2 starts the episode that still works
    assert sorted(manager.orders) == ["E2", "S2", "T2"]
    assert manager.known("E1") and manager.known("S2") and not manager.known("X")
    sent = len(broker.placed)
    assert manager.submit(_intent("S1", IntentPurpose.STOP_LOSS, order_type=OrderType.STOP, side=Side.SELL),
                          LINEAGE) is None
    assert len(broker.placed) == sent and manager.duplicates_refused == 1
    # OCO still pairs the overnight legs, and only them: the stop fills, the target goes.
    manager.on_update(broker.fill("S2", 10))
    assert target.state is OrderState.CANCELLED and stop.state is OrderState.FILLED
    assert manager.retire(decided_before_ns=10) == 3 and manager.orders == {}


def test_retire_keeps_orders_decided_after_the_cutoff_and_everything_of_an_open_episode() -> None:
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())
    _day_of_brackets(broker, manager)
    assert manager.retire(decided_before_ns=2) == 3  # bar 2 is not before the cutoff
    assert manager.retire(decided_before_ns=1) == 0
    assert sorted(manager.orders) == ["E2", "S2", "T2"]


def _bracket_intents(entry: str = "E") -> list[OrderIntent]:
    return [_intent(entry), _intent("S", IntentPurpose.STOP_LOSS, entry, OrderType.STOP, Side.SELL),
            _intent("T", IntentPurpose.TAKE_PROFIT, entry, OrderType.LIMIT, Side.SELL)]


def test_legs_of_a_refused_or_dropped_entry_are_never_sent() -> None:
    broker, journal = ScriptedBroker(), RecordingJournal()
    manager = OrderManager(broker, journal, entries_allowed=lambda: False)  # e.g. the journal's database is down
    assert manager.submit_all(_bracket_intents(), LINEAGE) == [None, None, None]
    dropped = OrderManager(broker, journal)  # the trader dropped the entry itself (entries paused)
    assert dropped.submit_all(_bracket_intents()[1:], LINEAGE) == [None, None]
    assert broker.placed == [] and manager.orders == {} and dropped.orders == {}
    assert journal.events.count("leg_dropped") == 4


def test_restart_after_the_sent_record_was_lost_adopts_the_brokers_state() -> None:
    broker = ScriptedBroker()
    first = OrderManager(broker, RecordingJournal())
    first.submit(_intent("E"), LINEAGE, send=False)  # journaled NEW (durable) ...
    broker.place(_intent("E"))  # ... reached the broker, and the process died before SENT was written
    journaled = copy.deepcopy(first.orders["E"])
    assert journaled.state is OrderState.NEW
    restarted = OrderManager(broker, RecordingJournal())
    restarted.adopt([journaled])
    assert restarted.reconcile()["orders_updated"] == 1
    assert restarted.orders["E"].state is OrderState.ACKNOWLEDGED
    assert [i.client_order_id for i in broker.placed] == ["E"]


@pytest.mark.parametrize("entry_fill_durable", [False, True])
def test_legs_sent_before_a_machine_crash_are_found_not_sent_again(entry_fill_durable: bool) -> None:
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())
    manager.submit_all(_bracket_intents(), LINEAGE)
    durable = {key: copy.deepcopy(order) for key, order in manager.orders.items()}  # the bar's sync
    manager.on_update(broker.fill("E", 10))  # legs released and placed; their records never reach the disk
    if entry_fill_durable:
        durable["E"] = copy.deepcopy(manager.orders["E"])
    assert [(o.state, o.held_for_parent) for k, o in durable.items() if k != "E"] == [(OrderState.NEW, True)] * 2
    restarted = OrderManager(broker, RecordingJournal())
    restarted.adopt(durable.values())
    restarted.reconcile()
    assert [i.client_order_id for i in broker.placed] == ["E", "S", "T"]
    assert {k: o.state for k, o in restarted.orders.items()} == {
        "E": OrderState.FILLED, "S": OrderState.ACKNOWLEDGED, "T": OrderState.ACKNOWLEDGED}
    assert not any(o.held_for_parent for o in restarted.orders.values())


def test_a_contingent_leg_sized_to_a_partial_entry_grows_with_the_entrys_fills() -> None:
    broker = ScriptedBroker()
    broker.supports_contingent_orders = True  # type: ignore[attr-defined]  # legs go out with the entry
    manager = OrderManager(broker, RecordingJournal())
    manager.submit_all(_bracket_intents()[:2], LINEAGE)
    stop = manager.orders["S"]
    manager.on_update(broker.fill("E", 4))
    manager.on_update(replace(broker.venue["S"], quantity=4))  # the venue sizes the leg to the entry's fill
    assert stop.intent.quantity == 4
    manager.on_update(broker.fill("E", 6))
    manager.on_update(replace(broker.venue["S"], quantity=10))
    assert stop.intent.quantity == 10
    manager.on_update(replace(broker.venue["S"], quantity=12))  # never past what the entry filled
    assert stop.intent.quantity == 10
    manager.on_update(broker.fill("S", 10))
    assert stop.state is OrderState.FILLED and stop.filled_quantity == 10


@pytest.mark.parametrize(("name", "bad"), [("side", "2"), ("state", "open"), ("quantity", "ten"),
                                           ("limit_price", "x"), ("product", None)])
def test_a_bad_journal_row_names_the_order_the_field_and_the_value(name: str, bad: str | None) -> None:
    from executor.journal import order_record
    from executor.oms import order_from_row

    row = order_record(ManagedOrder(_intent("A"), LINEAGE, "paper"))
    assert order_from_row(row).intent == _intent("A")  # the good row round-trips
    with pytest.raises(InputError, match=f"journal order 'A': field '{name}'") as caught:
        order_from_row({**row, name: bad})
    assert bad is None or repr(bad) in str(caught.value)
