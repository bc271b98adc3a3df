"""The order manager: an explicit order state machine over the broker port.

Rules that keep money safe:
- An order is journaled (durably, before it is sent) under its deterministic client order id; an id the
  manager already knows is never sent again, in this process or after a restart.
- Placement is never retried blindly: an unknown outcome leaves the order SENT and unconfirmed, and the next
  poll looks it up by client order id (`Broker.order_by_client_id`); an order the broker still does not know
  `unconfirmed_grace_seconds` after the send never arrived and is closed as rejected, so the engine may decide
  afresh (a lookup that itself fails proves nothing and closes nothing).
- Broker updates only move an order forward (duplicates and out-of-order updates are dropped).
- Bracket legs (stop-loss / take-profit with `parent_client_order_id`) are held until their parent fills and
  then placed at once for the filled quantity; when one leg fills, the other is cancelled (OCO).
- A protective order never works for more than the position it protects: when a leg fills in part, the others
  on that instrument are cut to what is left (`fit_protection`, from the broker's positions; the trader applies
  it again at every bar close), so a sibling filling in full can never flip the position.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Protocol, TypeVar

from tradeloom.broker import Broker, BrokerOrder, PlacementUnconfirmed
from tradeloom.domain import Fill, IntentPurpose, OrderIntent, OrderState, OrderType, ProductType, Side
from tradeloom.errors import InputError, InvariantViolation, OrderRejectedError, TransientBrokerError

log = logging.getLogger(__name__)
_T = TypeVar("_T")

RANK = {
    OrderState.NEW: 0, OrderState.SENT: 1, OrderState.ACKNOWLEDGED: 2, OrderState.PARTIALLY_FILLED: 3,
    OrderState.FILLED: 4, OrderState.CANCELLED: 4, OrderState.REJECTED: 4, OrderState.EXPIRED: 4,
}
ALLOWED: dict[OrderState, frozenset[OrderState]] = {
    OrderState.NEW: frozenset({OrderState.SENT, OrderState.REJECTED, OrderState.CANCELLED}),
    OrderState.SENT: frozenset(set(OrderState) - {OrderState.NEW, OrderState.SENT}),
    OrderState.ACKNOWLEDGED: frozenset({OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.CANCELLED,
                                        OrderState.REJECTED, OrderState.EXPIRED}),
    OrderState.PARTIALLY_FILLED: frozenset({OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.CANCELLED,
                                            OrderState.EXPIRED}),
}
PROTECTIVE = frozenset({IntentPurpose.STOP_LOSS, IntentPurpose.TAKE_PROFIT})


@dataclass(frozen=True)
class Lineage:
    """Where a decision came from: journaled with every order."""

    strategy: str
    mode: str
    bar_at_ns: int | None = None
    model_name: str | None = None
    model_version: str | None = None
    feature_snapshot_hash: str | None = None


@dataclass
class ManagedOrder:
    intent: OrderIntent
    lineage: Lineage
    broker: str
    state: OrderState = OrderState.NEW
    broker_order_id: str | None = None
    filled_quantity: int = 0
    average_price: Decimal | None = None
    status_message: str = ""
    unconfirmed: bool = False  # sent, outcome unknown: look it up by client order id before anything else
    held_for_parent: bool = False  # a bracket leg waiting for its parent's fill
    unconfirmed_since: float | None = None  # time.monotonic() of the unconfirmed send (this process only)
    events: list[str] = field(default_factory=list)

    @property
    def client_order_id(self) -> str:
        return self.intent.client_order_id

    @property
    def is_open(self) -> bool:
        return not self.state.is_terminal


class OrderJournal(Protocol):
    """What the order manager needs from the journal (see executor/journal.py)."""

    def save_order(self, order: ManagedOrder) -> None: ...

    def record_fill(self, fill: Fill, broker: str) -> None: ...

    def record_event(self, kind: str, detail: dict[str, object], actor: str = "executor") -> None: ...

    def sync(self) -> None:
        """Make everything recorded so far durable (fsync)."""
        ...


def transition(order: ManagedOrder, new_state: OrderState, filled: int | None = None) -> bool:
    """Move `order` to `new_state` if that is a forward move; returns whether anything changed."""
    filled = order.filled_quantity if filled is None else filled
    if filled < order.filled_quantity:
        return False  # stale update: fills never go back
    if order.state.is_terminal:
        return False
    if new_state != order.state and new_state not in ALLOWED[order.state]:
        if RANK[new_state] < RANK[order.state]:
            return False  # out-of-order update
        raise InvariantViolation(
            f"order {order.client_order_id}: illegal transition {order.state.value} -> {new_state.value}"
        )
    if filled > order.intent.quantity:
        raise InvariantViolation(
            f"order {order.client_order_id}: filled {filled} exceeds quantity {order.intent.quantity}"
        )
    changed = new_state != order.state or filled != order.filled_quantity
    order.state, order.filled_quantity = new_state, filled
    return changed


class OrderManager:
    def __init__(
        self,
        broker: Broker,
        journal: OrderJournal,
        *,
        entries_allowed: Callable[[], bool] = lambda: True,
        unconfirmed_grace_seconds: float = 30.0,
    ) -> None:
        self.unconfirmed_grace_seconds = unconfirmed_grace_seconds
        self.broker = broker
        self.journal = journal
        self.orders: dict[str, ManagedOrder] = {}
        # Every order that may still be open (terminal ones are dropped as they are met): the per-bar views
        # walk these, not the whole day's orders.
        self._maybe_open: dict[str, ManagedOrder] = {}
        self._key_index: tuple[tuple[str, ...], dict[str, int]] | None = None
        # Today's orders per (strategy, instrument) in submit order: what OCO pairs legs within.
        self._by_instrument: dict[tuple[str, str], list[ManagedOrder]] = {}
        self._by_broker_id: dict[str, str] = {}
        self._entries_allowed = entries_allowed
        self._seen_fill_ids: set[str] = set()
        # Ids of finished orders `retire` took out of memory: still never sent again by this process.
        self._retired_ids: set[str] = set()
        self.duplicates_refused = 0

    # -- loading and reconciliation ----------------------------------------------------------------------
    def adopt(self, orders: Iterable[ManagedOrder], fill_ids: Iterable[str] = ()) -> None:
        """Take over orders known from the journal (after a restart), in the order they were decided: by bar,
        an entry before the legs of its bracket (which is what OCO's position episodes are read from)."""
        for order in sorted(orders, key=lambda o: (o.lineage.bar_at_ns or 0,
                                                   o.intent.purpose is not IntentPurpose.ENTRY)):
            self._register(order)
        self._seen_fill_ids.update(fill_ids)

    def reconcile(self) -> dict[str, int]:
        """Make the journal agree with the broker: order states, unconfirmed placements, missed fills."""
        report = {"orders_updated": 0, "unconfirmed_resolved": 0, "fills_recovered": 0, "foreign_orders": 0}
        # Held bracket legs first: one released and sent before a machine crash lost its SENT record must be
        # found at the broker before its entry's fill releases (and sends) it again.
        # All are looked up and marked sent before any update is applied: applying one releases the others.
        sent: list[BrokerOrder] = []
        for order in [o for o in self.orders.values() if o.is_open and o.held_for_parent]:
            leg = self._lookup(order)[1]
            if leg is not None:
                order.state, order.held_for_parent = OrderState.SENT, False
                self.journal.save_order(order)
                sent.append(leg)
        for leg in sent:
            report["orders_updated"] += int(self.on_update(leg))
        for order in list(self.orders.values()):
            if order.is_open and not order.held_for_parent:
                answered, found = self._lookup(order)
                if found is not None:
                    report["unconfirmed_resolved"] += int(order.unconfirmed)
                    report["orders_updated"] += int(self.on_update(found))
                elif answered and (order.unconfirmed or order.broker_order_id is None):
                    # Journaled but the broker has never heard of it: it was never sent (or never arrived).
                    self._set(order, OrderState.REJECTED, message="not found at the broker after restart")
                    report["unconfirmed_resolved"] += 1
        for broker_order in self.broker.orders_today():
            if broker_order.client_order_id and broker_order.client_order_id in self.orders:
                report["orders_updated"] += int(self.on_update(broker_order))
            else:
                report["foreign_orders"] += 1
        for fill in self.broker.fills_today():
            report["fills_recovered"] += int(self.on_fill(fill))
        self._release_and_oco()
        return report

    def _lookup(self, order: ManagedOrder) -> tuple[bool, BrokerOrder | None]:
        """(whether the broker answered, its order if it knows it)."""
        try:
            return True, self.broker.order_by_client_id(order.client_order_id)
        except TransientBrokerError as error:
            log.warning("lookup of %s failed: %s", order.client_order_id, error)
            return False, None

    # -- commands ---------------------------------------------------------------------------------------
    def submit_all(self, intents: list[OrderIntent], lineage: Lineage) -> list[ManagedOrder | None]:
        """Journal every intent of a bar, make the journal durable once, then send them in order."""
        registered = [self.submit(intent, lineage, send=False) for intent in intents]
        ready = [order for order in registered
                 if order is not None and order.state is OrderState.NEW and not order.held_for_parent]
        if ready:
            self.journal.sync()
        for order in ready:
            self._send(order)
        return registered

    def submit(self, intent: OrderIntent, lineage: Lineage, *, send: bool = True) -> ManagedOrder | None:
        """Journal and send one intent. A known client order id is never sent again."""
        known = self.orders.get(intent.client_order_id)
        if known is not None:
            self.duplicates_refused += 1
            log.info("client order id %s already known (%s): not sent again", intent.client_order_id,
                     known.state.value)
            return known
        if intent.client_order_id in self._retired_ids:
            self.duplicates_refused += 1
            log.info("client order id %s finished on an earlier day: not sent again", intent.client_order_id)
            return None
        if intent.purpose is IntentPurpose.ENTRY and not self._entries_allowed():
            log.warning("entry %s refused: entries are paused", intent.client_order_id)
            self.journal.record_event("entry_refused", {"client_order_id": intent.client_order_id})
            return None
        parent_id = intent.parent_client_order_id
        if parent_id is not None and intent.purpose in PROTECTIVE and parent_id not in self.orders:
            # Its entry was refused or dropped (entries paused): alone at a broker without contingent orders,
            # the leg would be an exit order for a position that does not exist.
            log.warning("bracket leg %s dropped: its entry %s was not submitted", intent.client_order_id, parent_id)
            self.journal.record_event("leg_dropped", {"client_order_id": intent.client_order_id,
                                                      "parent_client_order_id": parent_id})
            return None
        order = ManagedOrder(intent=intent, lineage=lineage, broker=self.broker.name)
        parent = self.orders.get(intent.parent_client_order_id or "")
        # Brokers without contingent orders get a bracket leg only once its entry has filled.
        contingent = bool(getattr(self.broker, "supports_contingent_orders", False))
        if intent.purpose in PROTECTIVE and parent is not None and parent.filled_quantity == 0 and not contingent:
            order.held_for_parent = True
        self._register(order)
        self.journal.save_order(order)
        if send and not order.held_for_parent:
            self.journal.sync()  # durable before anything reaches the broker
            self._send(order)
        return order

    def _send(self, order: ManagedOrder) -> None:
        if order.state is not OrderState.NEW:
            raise InvariantViolation(f"order {order.client_order_id} is {order.state.value}: only new orders are sent")
        intent = order.intent
        if order.held_for_parent:
            parent = self.orders[intent.parent_client_order_id or ""]
            intent = replace(intent, quantity=parent.filled_quantity, parent_client_order_id=None)
            order.intent = intent
            order.held_for_parent = False
        self._set(order, OrderState.SENT)
        try:
            placed = self.broker.place(intent)
        except PlacementUnconfirmed as error:
            order.unconfirmed = True
            order.unconfirmed_since = time.monotonic()
            order.status_message = str(error)
            self.journal.save_order(order)
            log.warning("placement of %s unconfirmed; will reconcile by client order id", order.client_order_id)
            return
        except OrderRejectedError as error:
            self._set(order, OrderState.REJECTED, message=str(error))
            return
        except TransientBrokerError as error:
            order.unconfirmed = True
            order.unconfirmed_since = time.monotonic()
            order.status_message = str(error)
            self.journal.save_order(order)
            log.warning("placement of %s hit %s; will reconcile", order.client_order_id, type(error).__name__)
            return
        self.on_update(placed)

    def cancel(self, client_order_id: str) -> None:
        order = self.orders.get(client_order_id)
        if order is None or not order.is_open:
            return
        if order.held_for_parent or order.broker_order_id is None:
            if not order.unconfirmed:
                order.held_for_parent = False  # a cancelled leg is never released later
                self._set(order, OrderState.CANCELLED, message="cancelled before it was sent")
            return
        try:
            self.on_update(self.broker.cancel(order.broker_order_id))
        except OrderRejectedError as error:
            log.info("cancel of %s refused (%s); polling will tell its final state", client_order_id, error)
        except TransientBrokerError as error:
            log.warning("cancel of %s failed transiently: %s", client_order_id, error)

    def modify_stop(self, client_order_id: str, stop_price: Decimal) -> None:
        order = self.orders.get(client_order_id)
        if order is None or not order.is_open or order.broker_order_id is None:
            return
        try:
            self.on_update(self.broker.modify(order.broker_order_id, stop_price=stop_price))
            order.intent = replace(order.intent, stop_price=stop_price)
            self.journal.save_order(order)
        except (OrderRejectedError, TransientBrokerError) as error:
            log.warning("modify of %s failed: %s", client_order_id, error)

    def fit_protection(self, positions: Mapping[str, int], instrument_key: str | None = None) -> int:
        """Cut working protective orders to the position they protect (signed quantities by instrument key)
        once a sibling leg of the same position has filled in part; returns how many were resized.

        Only shrinks, and only after a sibling's fill: a position that reads smaller than it is (a lagging
        positions report right after the entry filled) can then never shrink a stop below the real position,
        since protective fills only ever make it smaller. Flat instruments are OCO's and the engine's business.
        """
        resized = 0
        for order in list(self._maybe_open.values()):
            intent = order.intent
            if (not order.is_open or intent.purpose not in PROTECTIVE or order.held_for_parent or order.unconfirmed
                    or order.broker_order_id is None or (instrument_key is not None
                                                         and intent.instrument_key != instrument_key)):
                continue
            held = int(positions.get(intent.instrument_key, 0))
            if (held * int(intent.side) >= 0 or intent.quantity - order.filled_quantity <= abs(held)
                    or not self._sibling_filled(order)):
                continue
            quantity = order.filled_quantity + abs(held)
            try:
                update = self.broker.modify(order.broker_order_id, quantity=quantity)
            except (OrderRejectedError, TransientBrokerError) as error:
                log.warning("resize of %s to %d (position %d) failed: %s; retried at the next bar",
                            order.client_order_id, quantity, held, error)
                continue
            self.journal.record_event("protection_resized", {
                "client_order_id": order.client_order_id, "instrument_key": intent.instrument_key,
                "from": intent.quantity, "to": quantity, "position": held})
            log.info("protective %s of %s cut from %d to %d: the position is %d", order.client_order_id,
                     intent.instrument_key, intent.quantity, quantity, held)
            order.intent = replace(intent, quantity=quantity)
            self.journal.save_order(order)
            self.on_update(update)
            resized += 1
        return resized

    def _sibling_filled(self, order: ManagedOrder) -> bool:
        """Whether another protective leg of `order`'s position (its OCO episode, see `_oco`) has fills."""
        episode, mine = -1, -1
        filled_in: set[int] = set()
        for other in self._by_instrument.get((order.lineage.strategy, order.intent.instrument_key), []):
            if other.intent.purpose is IntentPurpose.ENTRY:
                episode += 1
            if other is order:
                mine = episode
            elif other.intent.purpose in PROTECTIVE and other.filled_quantity > 0:
                filled_in.add(episode)
        return mine in filled_in

    def _fit_from_broker(self, instrument_key: str) -> None:
        """A protective leg filled in part: cut its siblings now, from the broker's positions."""
        try:
            held = sum(p.quantity for p in self.broker.positions() if p.instrument_key == instrument_key)
        except TransientBrokerError as error:
            log.warning("positions unavailable after a partial protective fill on %s (%s); the trader's bar-close "
                        "check will cut the other legs", instrument_key, error)
            return
        self.fit_protection({instrument_key: held}, instrument_key)

    # -- updates ----------------------------------------------------------------------------------------
    def on_update(self, update: BrokerOrder) -> bool:
        """Apply a broker order update (stream or poll). Returns whether the order changed."""
        client_id = update.client_order_id or self._by_broker_id.get(update.broker_order_id)
        order = self.orders.get(client_id or "")
        if order is None:
            return False
        if order.broker_order_id is None:
            order.broker_order_id = update.broker_order_id
            self._by_broker_id[update.broker_order_id] = order.client_order_id
        sent_unrecorded = order.state is OrderState.NEW and update.state is not OrderState.NEW
        if sent_unrecorded:
            # The broker has it, so it was sent: its SENT record was lost (a crash before the journal wrote or
            # synced it) or a held leg went out before the restart.
            order.state, order.held_for_parent = OrderState.SENT, False
        was_unconfirmed = order.unconfirmed
        order.unconfirmed = False
        if update.average_price is not None:
            order.average_price = update.average_price
        filled_before = order.filled_quantity
        # The venue's quantity is the order's quantity once it is lower (a resize of ours, the paper account's
        # clip to the position, a manual modify); never below what filled.
        resized = order.is_open and update.quantity > 0 and max(
            update.filled_quantity, order.filled_quantity) <= update.quantity < order.intent.quantity
        # A leg a contingent broker sized to its entry's partial fill grows with the entry's later fills, up to
        # what the entry has filled (the leg's own size at submission).
        parent = self.orders.get(order.intent.parent_client_order_id or "")
        resized = resized or (order.is_open and parent is not None and order.intent.purpose in PROTECTIVE
                              and order.intent.quantity < update.quantity <= parent.filled_quantity)
        if resized:
            order.intent = replace(order.intent, quantity=update.quantity)
        changed = (transition(order, update.state, update.filled_quantity) or was_unconfirmed or resized
                   or sent_unrecorded)
        if changed:
            order.status_message = update.status_message or order.status_message
            self.journal.save_order(order)
            self._release_and_oco(order.intent.instrument_key)
            if order.intent.purpose in PROTECTIVE and order.filled_quantity > filled_before and order.is_open:
                self._fit_from_broker(order.intent.instrument_key)
        return changed

    def on_fill(self, fill: Fill) -> bool:
        """Record a fill once (fill ids are the broker's trade ids)."""
        if fill.fill_id in self._seen_fill_ids:
            return False
        self._seen_fill_ids.add(fill.fill_id)
        self.journal.record_fill(fill, self.broker.name)
        return True

    def poll(self) -> int:
        """The fallback to the stream: refresh every open order from the broker."""
        changed = 0
        try:
            for update in self.broker.orders_today():
                changed += int(self.on_update(update))
            for fill in self.broker.fills_today():
                self.on_fill(fill)
        except TransientBrokerError as error:
            log.warning("poll failed: %s", error)
            return changed
        for order in list(self.orders.values()):
            if order.unconfirmed:
                answered, found = self._lookup(order)
                if found is not None:
                    changed += int(self.on_update(found))
                elif answered and order.unconfirmed_since is not None and (
                        time.monotonic() - order.unconfirmed_since >= self.unconfirmed_grace_seconds):
                    order.unconfirmed = False
                    grace = self.unconfirmed_grace_seconds
                    self._set(order, OrderState.REJECTED,
                              message=f"not at the broker {grace:g} s after an unconfirmed placement: never arrived")
                    changed += 1
        self._release_and_oco()
        return changed

    def _register(self, order: ManagedOrder) -> None:
        self.orders[order.client_order_id] = order
        self._maybe_open[order.client_order_id] = order
        if order.broker_order_id:
            self._by_broker_id[order.broker_order_id] = order.client_order_id
        group = (order.lineage.strategy, order.intent.instrument_key)
        self._by_instrument.setdefault(group, []).append(order)

    def _release_and_oco(self, instrument_key: str | None = None) -> None:
        """Send bracket legs whose entry is done (filled, or cancelled / expired after a partial fill: the legs
        then cover what did fill), and apply OCO (all instruments, or the one named)."""
        for order in list(self._maybe_open.values()):
            parent_id = order.intent.parent_client_order_id
            if order.held_for_parent and order.is_open and parent_id:
                parent = self.orders.get(parent_id)
                if parent is not None and parent.filled_quantity > 0 and parent.state.is_terminal:
                    self._send(order)
                elif parent is not None and parent.state.is_terminal and parent.filled_quantity == 0:
                    order.held_for_parent = False
                    self._set(order, OrderState.CANCELLED, message="parent never filled")
        for (_strategy, key), group in list(self._by_instrument.items()):
            if instrument_key is None or key == instrument_key:
                self._oco(group)

    def _oco(self, group: list[ManagedOrder]) -> None:
        """A filled protective leg cancels the open protective orders of its own position, never those of a
        later one: each entry starts an episode, and a leg belongs to the episode it was submitted in.

        Level-triggered (re-checked on every update), so it also holds after a restart that journaled the
        fill but not the sibling's cancel.
        """
        episode, last_filled = -1, -2
        episodes: list[int] = []
        for order in group:
            if order.intent.purpose is IntentPurpose.ENTRY:
                episode += 1
            episodes.append(episode)
            if order.intent.purpose in PROTECTIVE and order.state is OrderState.FILLED:
                last_filled = episode
        if last_filled < -1:
            return
        for order, order_episode in zip(group, episodes, strict=True):
            if order_episode <= last_filled and order.is_open and order.intent.purpose in PROTECTIVE:
                self.cancel(order.client_order_id)

    def _set(self, order: ManagedOrder, state: OrderState, message: str = "") -> None:
        if transition(order, state) or message:
            if message:
                order.status_message = message
            self.journal.save_order(order)

    def known(self, client_order_id: str) -> bool:
        """Whether this process has ever journaled the id (in memory, or retired)."""
        return client_order_id in self.orders or client_order_id in self._retired_ids

    def retire(self, decided_before_ns: int) -> int:
        """Take finished orders decided before `decided_before_ns` out of memory (the journal keeps them): a
        service that runs for days then holds what a restart would load, and the per-update and per-cycle
        walks stay the size of a day. Per (strategy, instrument) only a leading run of finished orders goes,
        and only up to an entry, so every position episode that stays is whole and OCO pairs what it paired.
        Returns how many orders were retired."""
        retired = 0
        for group_key, group in list(self._by_instrument.items()):
            cut = 0
            for position, order in enumerate(group):
                if order.intent.purpose is IntentPurpose.ENTRY:
                    cut = position  # an episode starts here: everything before it is finished and old
                if order.is_open or (order.lineage.bar_at_ns or 0) >= decided_before_ns:
                    break
            else:
                cut = len(group)
            for order in group[:cut]:
                self.orders.pop(order.client_order_id, None)
                self._maybe_open.pop(order.client_order_id, None)
                if order.broker_order_id:
                    self._by_broker_id.pop(order.broker_order_id, None)
                self._retired_ids.add(order.client_order_id)
            retired += cut
            if cut == len(group):
                del self._by_instrument[group_key]
            elif cut:
                self._by_instrument[group_key] = group[cut:]
        return retired

    # -- views ------------------------------------------------------------------------------------------
    def open_orders(self) -> list[ManagedOrder]:
        """Open orders in the order they were added (a terminal state never reopens)."""
        open_ = [order for order in self._maybe_open.values() if order.is_open]
        if len(open_) != len(self._maybe_open):
            self._maybe_open = {order.client_order_id: order for order in open_}
        return open_

    def pending_quantities(self, keys: tuple[str, ...], purposes: frozenset[IntentPurpose]) -> list[int]:
        """Signed remaining quantity of open orders of the given purposes, per key (one pass)."""
        cached = self._key_index
        if cached is None or cached[0] is not keys:  # the trader passes the same tuple on every bar
            cached = self._key_index = (keys, {key: i for i, key in enumerate(keys)})
        index = cached[1]
        out = [0] * len(keys)
        for order in self.open_orders():
            if order.intent.purpose in purposes and order.intent.instrument_key in index:
                out[index[order.intent.instrument_key]] += int(order.intent.side) * (
                    order.intent.quantity - order.filled_quantity)
        return out

    def pending_quantity(self, instrument_key: str, purposes: frozenset[IntentPurpose]) -> int:
        """Signed remaining quantity of open orders of the given purposes."""
        return sum(
            int(order.intent.side) * (order.intent.quantity - order.filled_quantity)
            for order in self.orders.values()
            if order.is_open and order.intent.instrument_key == instrument_key and order.intent.purpose in purposes
        )


def order_from_row(row: dict[str, object]) -> ManagedOrder:
    """Rebuild a ManagedOrder from a journal row (see executor/journal.py); a bad field raises InputError
    naming the order, the field and its value."""
    client_id = row.get("client_order_id")

    def need(name: str, convert: Callable[[str], _T]) -> _T:
        value = row.get(name)
        if value is None:
            raise InputError(f"journal order {client_id!r}: field {name!r} is missing or null")
        try:
            return convert(str(value))
        except (ValueError, ArithmeticError) as error:
            raise InputError(f"journal order {client_id!r}: field {name!r} = {value!r} is not valid "
                             f"({error})") from error

    def maybe(name: str, convert: Callable[[str], _T]) -> _T | None:
        return None if row.get(name) is None else need(name, convert)

    intent = OrderIntent(
        client_order_id=need("client_order_id", str), instrument_key=need("instrument_key", str),
        side=need("side", lambda text: Side(int(text))), quantity=need("quantity", int),
        order_type=need("order_type", OrderType), purpose=need("purpose", IntentPurpose),
        limit_price=maybe("limit_price", Decimal), stop_price=maybe("stop_price", Decimal),
        product=need("product", ProductType),
        parent_client_order_id=maybe("parent_client_order_id", str),
    )
    lineage = Lineage(
        strategy=need("strategy", str), mode=need("mode", str), bar_at_ns=maybe("bar_at_ns", int),
        model_name=maybe("model_name", str), model_version=maybe("model_version", str),
        feature_snapshot_hash=maybe("feature_snapshot_hash", str),
    )
    return ManagedOrder(
        intent=intent, lineage=lineage, broker=need("broker", str), state=need("state", OrderState),
        broker_order_id=maybe("broker_order_id", str),
        filled_quantity=maybe("filled_quantity", int) or 0,
        average_price=maybe("average_price", Decimal),
        status_message=str(row.get("status_message") or ""), unconfirmed=bool(row.get("unconfirmed", False)),
        held_for_parent=bool(row.get("held_for_parent", False)),
    )
