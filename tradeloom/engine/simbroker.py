"""Simulated broker: fills at the next bar's open, stops within the bar with the gap rule, limit, stop,
stop-limit and bracket orders, partial fills under a participation cap, costs from the cost model.

Fill rules (per bar, orders in submission order):
- market: the bar's open, plus half spread, slippage and impact (adverse);
- limit: the open when it is already through the limit, else the limit when the range reaches it;
- stop: triggers when the range reaches the stop; a bar that *opens* through the stop (a gap) fills at the
  open, not at the stop; then pays spread/slippage like a market order;
- stop-limit: triggers like a stop, then fills at the trigger price only if that respects the limit,
  otherwise rests as a limit order;
- bracket children (`parent_client_order_id`) wake up when the parent fills, for the parent's filled
  quantity, and are checked in the same bar; a stop and a target hit in the same bar: the stop wins
  (submitted first; the pessimistic reading);
- protective orders (stop-loss, take-profit) never exceed the position they protect (one cancels the other);
- a buy the cash cannot pay for is rejected (or reduced, by config); without `allow_short` a sell never
  goes below zero.

The class is pure (no I/O, no clock): the paper broker wraps it and persists `to_dict()`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from tradeloom.domain import Fill, IntentPurpose, OrderIntent, OrderState, OrderType, ProductType, Side
from tradeloom.engine.config import BrokerConfig
from tradeloom.engine.costs import execution_price, fee_total
from tradeloom.engine.kernels import mark_to_market_kernel
from tradeloom.errors import InputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
PROTECTIVE = {IntentPurpose.STOP_LOSS, IntentPurpose.TAKE_PROFIT}
_PRICES_NEEDED: dict[OrderType, tuple[str, ...]] = {
    OrderType.LIMIT: ("limit_price",), OrderType.STOP: ("stop_price",),
    OrderType.STOP_LIMIT: ("limit_price", "stop_price"),
}


@dataclass(slots=True)
class SimOrder:
    intent: OrderIntent
    index: int
    sequence: int
    filled: int = 0
    state: OrderState = OrderState.ACKNOWLEDGED
    active: bool = True
    triggered: bool = False
    quantity: int = 0  # current total quantity (children follow the parent's fills)
    average_price: float = 0.0
    # The intent's fields the matching loop reads on every bar, as plain Python values (read once here).
    client_id: str = field(init=False)
    side: int = field(init=False)
    kind: OrderType = field(init=False)
    protective: bool = field(init=False)
    stop: float = field(init=False)
    limit: float = field(init=False)

    def __post_init__(self) -> None:
        intent = self.intent
        self.client_id = intent.client_order_id
        self.side = int(intent.side)
        self.kind = intent.order_type
        self.protective = intent.purpose in PROTECTIVE
        self.stop = math.nan if intent.stop_price is None else float(intent.stop_price)
        self.limit = math.nan if intent.limit_price is None else float(intent.limit_price)

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled


class SimFill:
    """A fill with the float price the accounting used (the domain `Fill` carries a Decimal).

    `fill` is built on first read: its two Decimal conversions and the fill id cost more than the rest of
    a simulated fill, and a backtest reads only `quantity`, `side` and `filled_at_ns`, kept here as is.
    """

    __slots__ = ("_fill", "_fill_number", "client_order_id", "fees", "filled_at_ns", "index", "instrument_key",
                 "price", "purpose", "quantity", "side")

    def __init__(self, client_order_id: str, instrument_key: str, side: Side, quantity: int, price: float,
                 fees: float, filled_at_ns: int, fill_number: int, index: int, purpose: IntentPurpose) -> None:
        self.client_order_id = client_order_id
        self.instrument_key = instrument_key
        self.side = side
        self.quantity = quantity
        self.price = price
        self.fees = fees
        self.filled_at_ns = filled_at_ns
        self.index = index
        self.purpose = purpose
        self._fill_number = fill_number
        self._fill: Fill | None = None

    @property
    def fill(self) -> Fill:
        fill = self._fill
        if fill is None:
            fill = self._fill = Fill(
                self.client_order_id, self.instrument_key, self.side, self.quantity, Decimal(repr(self.price)),
                self.filled_at_ns, f"SIM-{self.client_order_id}-{self._fill_number}", Decimal(repr(self.fees)))
        return fill

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SimFill):
            return NotImplemented
        return (self.fill, self.index, self.price, self.fees, self.purpose) == (
            other.fill, other.index, other.price, other.fees, other.purpose)

    __hash__ = None  # type: ignore[assignment]  # mutable cache inside, equality by value: unhashable

    def __repr__(self) -> str:
        return (f"SimFill(fill={self.fill!r}, index={self.index!r}, price={self.price!r}, fees={self.fees!r}, "
                f"purpose={self.purpose!r})")


def _intent_to_dict(intent: OrderIntent) -> dict[str, Any]:
    return {
        "client_order_id": intent.client_order_id, "instrument_key": intent.instrument_key,
        "side": int(intent.side), "quantity": intent.quantity, "order_type": intent.order_type.value,
        "purpose": intent.purpose.value,
        "limit_price": None if intent.limit_price is None else str(intent.limit_price),
        "stop_price": None if intent.stop_price is None else str(intent.stop_price),
        "product": intent.product.value, "parent_client_order_id": intent.parent_client_order_id,
    }


def _intent_from_dict(data: dict[str, Any]) -> OrderIntent:
    return OrderIntent(
        data["client_order_id"], data["instrument_key"], Side(data["side"]), data["quantity"],
        OrderType(data["order_type"]), IntentPurpose(data["purpose"]),
        None if data["limit_price"] is None else Decimal(data["limit_price"]),
        None if data["stop_price"] is None else Decimal(data["stop_price"]),
        ProductType(data["product"]), data["parent_client_order_id"],
    )


class SimulatedBroker:
    def __init__(self, config: BrokerConfig, keys: tuple[str, ...], cash: float) -> None:
        self.config = config
        self.keys = keys
        self._index = {key: i for i, key in enumerate(keys)}
        self.cash = float(cash)
        self.positions = np.zeros(len(keys), dtype=np.int64)
        self.fees_paid = np.zeros(len(keys), dtype=np.float64)
        self._working: dict[str, SimOrder] = {}
        self._final_states: dict[str, OrderState] = {}
        self._sequence = 0
        self._fill_count = 0
        # Indexes over `_working` so a fill does not walk every working order: bracket children by parent id,
        # and the number of working protective orders per instrument (`_add` and `_remove` keep both).
        self._children: dict[str, list[SimOrder]] = {}
        self._protective = [0] * len(keys)

    # -- orders -----------------------------------------------------------------------------------------
    def submit(self, intent: OrderIntent) -> OrderState:
        """Accept an intent (idempotent: a known client order id is not placed twice)."""
        known = self._working.get(intent.client_order_id)
        if known is not None:
            return known.state
        if intent.client_order_id in self._final_states:
            return self._final_states[intent.client_order_id]
        if intent.instrument_key not in self._index:
            raise InputError(f"order {intent.client_order_id}: instrument_key {intent.instrument_key!r} is not "
                             f"traded by this broker")
        if intent.quantity <= 0:
            raise InputError(f"order {intent.client_order_id}: quantity must be > 0, got {intent.quantity}")
        for name in _PRICES_NEEDED.get(intent.order_type, ()):
            if getattr(intent, name) is None:
                raise InputError(f"order {intent.client_order_id}: {intent.order_type.value} needs {name}")
        parent = self._working.get(intent.parent_client_order_id or "")
        order = SimOrder(intent, self._index[intent.instrument_key], self._sequence, quantity=intent.quantity)
        if intent.parent_client_order_id is not None:
            parent_filled = parent.filled if parent is not None else 0
            parent_state = parent.state if parent is not None else self._final_states.get(
                intent.parent_client_order_id)
            if parent is None and parent_state != OrderState.FILLED:
                self._final_states[intent.client_order_id] = OrderState.CANCELLED
                return OrderState.CANCELLED
            order.active = parent is None or parent_filled > 0
            order.quantity = min(intent.quantity, parent_filled) if parent is not None else intent.quantity
        self._sequence += 1
        self._add(order)
        return order.state

    def _add(self, order: SimOrder) -> None:
        self._working[order.client_id] = order
        parent = order.intent.parent_client_order_id
        if parent is not None:
            self._children.setdefault(parent, []).append(order)
        if order.protective:
            self._protective[order.index] += 1

    def _remove(self, client_order_id: str) -> SimOrder | None:
        order = self._working.pop(client_order_id, None)
        if order is not None and order.protective:
            self._protective[order.index] -= 1
        return order

    def _working_children(self, client_order_id: str) -> list[SimOrder]:
        """Bracket children of `client_order_id` that still work, in submission order."""
        children = self._children.get(client_order_id)
        if not children:
            return []
        working = self._working
        return [child for child in children if working.get(child.client_id) is child]

    def cancel(self, client_order_id: str) -> bool:
        order = self._remove(client_order_id)
        if order is None:
            return False
        self._final_states[client_order_id] = OrderState.CANCELLED
        for child in self._working_children(client_order_id):
            if not child.active:
                self.cancel(child.client_id)
        return True

    def resize(self, client_order_id: str, quantity: int) -> bool:
        """Lower a working order's total quantity (never below what filled); False when it does not work."""
        order = self._working.get(client_order_id)
        if order is None:
            return False
        if quantity < order.filled or quantity <= 0:
            raise InputError(f"order {client_order_id}: quantity {quantity} is below the filled {order.filled} "
                             f"or not positive")
        order.quantity = min(order.quantity, quantity)
        if order.remaining <= 0:
            self._finish(order, OrderState.FILLED)
        return True

    def liquidate(self, bar_at_ns: int, price: FloatArray, label: str = "end") -> list[SimFill]:
        """Cancel every working order and close every position at `price` as a market order would (spread,
        slippage and fees paid; no participation cap): a backtest window's end, so that its return and its
        trades are net of the exit it would need. Instruments without a finite price stay as they are."""
        for order in self.open_orders():
            self.cancel(order.client_id)
        fills: list[SimFill] = []
        costs = self.config.costs
        for i in np.flatnonzero(self.positions).tolist():
            reference = float(price[i])
            if not math.isfinite(reference):
                continue
            held = int(self.positions[i])
            side = Side.SELL if held > 0 else Side.BUY
            intent = OrderIntent(f"LIQ-{label}-{self.keys[i]}-{bar_at_ns}", self.keys[i], side, abs(held),
                                 OrderType.MARKET, IntentPurpose.EXIT)
            order = SimOrder(intent, i, self._sequence, quantity=abs(held))
            self._sequence += 1
            self._add(order)
            fill_price = execution_price(costs, side, reference, 0.0)
            fills.append(self._fill(order, abs(held), fill_price, fee_total(costs, side, abs(held), fill_price),
                                    bar_at_ns))
        return fills

    def forget(self, client_order_ids: Sequence[str]) -> None:
        """Drop finished orders from memory (the paper account's day rollover); working ones are kept."""
        for client_id in client_order_ids:
            if client_id in self._working:
                raise InputError(f"order {client_id} still works: only finished orders can be forgotten")
        for client_id in client_order_ids:
            self._final_states.pop(client_id, None)
            children = self._children.pop(client_id, None)
            for child in children or ():
                if child.client_id in self._working:  # a leg that still works keeps its parent's index entry
                    self._children.setdefault(client_id, []).append(child)

    def order_state(self, client_order_id: str) -> OrderState | None:
        order = self._working.get(client_order_id)
        return order.state if order is not None else self._final_states.get(client_order_id)

    def working_order(self, client_order_id: str) -> SimOrder | None:
        """The order while it still works (not filled, cancelled or rejected)."""
        return self._working.get(client_order_id)

    def open_orders(self) -> list[SimOrder]:
        return sorted(self._working.values(), key=lambda order: order.sequence)

    def pending_quantities(self) -> IntArray:
        """Signed remaining quantity of working entry/exit orders (protective orders excluded)."""
        out = np.zeros(len(self.keys), dtype=np.int64)
        if not self._working:
            return out
        for order in self._working.values():
            if order.intent.purpose not in PROTECTIVE and order.active:
                out[order.index] += int(order.intent.side) * order.remaining
        return out

    def equity(self, close: FloatArray, fallback: FloatArray | None = None) -> float:
        """Cash plus the positions marked at `close`; where a close is not finite, at `fallback` if given."""
        return float(mark_to_market_kernel(self.cash, self.positions, close, close if fallback is None else fallback))

    # -- matching -----------------------------------------------------------------------------------------
    @staticmethod
    def _trigger(order: SimOrder, open_: float, high: float, low: float) -> float | None:
        """Price at which a stop triggers in this bar (gap rule: the open when it gapped through)."""
        stop = order.stop
        if order.side > 0:
            return open_ if open_ >= stop else stop if high >= stop else None
        return open_ if open_ <= stop else stop if low <= stop else None

    @staticmethod
    def _limit_price(order: SimOrder, open_: float, high: float, low: float) -> float | None:
        limit = order.limit
        if order.side > 0:
            return open_ if open_ <= limit else limit if low <= limit else None
        return open_ if open_ >= limit else limit if high >= limit else None

    def _reference_price(self, order: SimOrder, open_: float, high: float, low: float) -> tuple[float, bool] | None:
        """(price before costs, pays spread/slippage) or None when the order does not fill in this bar."""
        kind = order.kind
        if kind is OrderType.MARKET:
            return open_, True
        if kind is OrderType.LIMIT:
            price = self._limit_price(order, open_, high, low)
            return None if price is None else (price, False)
        if kind is OrderType.STOP:
            price = self._trigger(order, open_, high, low)
            return None if price is None else (price, True)
        if not order.triggered:
            trigger = self._trigger(order, open_, high, low)
            if trigger is None:
                return None
            order.triggered = True
            limit = order.limit
            within = trigger <= limit if order.side > 0 else trigger >= limit
            return (trigger, False) if within else None
        price = self._limit_price(order, open_, high, low)
        return None if price is None else (price, False)

    def on_bar(self, bar_at_ns: int, open_: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray,
               volume: FloatArray) -> list[SimFill]:
        del close  # fills happen inside the bar; the close only marks to market (see `equity`)
        fills: list[SimFill] = []
        working = self._working
        if not working:  # most bars of most instruments: nothing to match
            return fills
        config = self.config
        costs = config.costs
        cap = config.participation_cap
        room = np.floor(cap * np.where(np.isnan(volume), 0.0, volume)) if cap is not None else None
        allow_short = config.allow_short
        positions = self.positions
        # `_working` only grows in `submit` (rising sequence) and `from_dict` (sequence order), so its
        # insertion order is `open_orders()`'s order without the sort.
        for order in list(working.values()):
            if not order.active or working.get(order.client_id) is not order:
                continue
            i = order.index
            o = float(open_[i])
            if not math.isfinite(o):
                continue
            side = order.side
            quantity = order.quantity - order.filled
            if order.protective:
                held = int(positions[i])
                if held * side >= 0:  # nothing left to protect
                    self._finish(order, OrderState.CANCELLED)
                    continue
                quantity = min(quantity, abs(held))
            elif side < 0 and not allow_short:
                quantity = min(quantity, max(int(positions[i]), 0))
                if quantity == 0:
                    self._finish(order, OrderState.REJECTED)
                    continue
            if order.kind is OrderType.MARKET:  # the usual order: `_reference_price` inlined
                reference, pays_spread = o, True
            else:
                found = self._reference_price(order, o, float(high[i]), float(low[i]))
                if found is None:
                    continue
                reference, pays_spread = found
            if room is not None:
                quantity = min(quantity, int(room[i]))
                if quantity <= 0:
                    continue
            intent_side = order.intent.side
            if pays_spread:
                bar_volume = float(volume[i])
                participation = quantity / bar_volume if math.isfinite(bar_volume) and bar_volume > 0 else 0.0
                price = execution_price(costs, intent_side, reference, participation)
            else:
                price = reference
            fee = fee_total(costs, intent_side, quantity, price)
            if side * int(positions[i]) >= 0 and quantity * price + fee > self.cash:  # opening, unaffordable
                if config.insufficient_cash == "reject":
                    self._finish(order, OrderState.REJECTED)
                    continue
                quantity = min(quantity, int(self.cash // price))
                fee = fee_total(costs, intent_side, quantity, price)
                while quantity > 0 and quantity * price + fee > self.cash:
                    quantity -= 1
                    fee = fee_total(costs, intent_side, quantity, price)
                if quantity <= 0:
                    self._finish(order, OrderState.REJECTED)
                    continue
            fills.append(self._fill(order, quantity, price, fee, bar_at_ns))
            if room is not None:
                room[i] -= quantity
        return fills

    def _fill(self, order: SimOrder, quantity: int, price: float, fee: float, bar_at_ns: int) -> SimFill:
        side = order.side
        price, fee = float(price), float(fee)
        i = order.index
        self.cash -= side * quantity * price + fee
        held = int(self.positions[i]) + side * quantity
        self.positions[i] = held
        self.fees_paid[i] += fee
        order.average_price = (order.average_price * order.filled + price * quantity) / (order.filled + quantity)
        order.filled += quantity
        self._fill_count += 1
        intent = order.intent
        fill = SimFill(order.client_id, intent.instrument_key, intent.side, quantity, price, fee, bar_at_ns,
                       self._fill_count, i, intent.purpose)
        if order.remaining <= 0:
            self._finish(order, OrderState.FILLED)
        else:
            order.state = OrderState.PARTIALLY_FILLED
        for child in self._working_children(order.client_id):
            child.active = True
            child.quantity = min(child.intent.quantity, order.filled)
        if self._protective[i]:
            for other in list(self._working.values()):
                if other.index == i and other.active and other.protective:
                    if held * other.side >= 0:
                        self._finish(other, OrderState.CANCELLED)
                    elif other.remaining > abs(held):
                        other.quantity = other.filled + abs(held)
        return fill

    def _finish(self, order: SimOrder, state: OrderState) -> None:
        order.state = state
        self._remove(order.client_id)
        self._final_states[order.client_id] = state
        if state is not OrderState.FILLED and order.filled == 0:
            for child in self._working_children(order.client_id):
                if not child.active:
                    self._finish(child, OrderState.CANCELLED)

    # -- persistence ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"), "keys": list(self.keys), "cash": self.cash,
            "positions": self.positions.tolist(), "fees_paid": self.fees_paid.tolist(),
            "sequence": self._sequence, "fill_count": self._fill_count,
            "final_states": {key: state.value for key, state in self._final_states.items()},
            "working": [
                {"intent": _intent_to_dict(o.intent), "index": o.index, "sequence": o.sequence, "filled": o.filled,
                 "state": o.state.value, "active": o.active, "triggered": o.triggered, "quantity": o.quantity,
                 "average_price": o.average_price}
                for o in self.open_orders()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulatedBroker:
        broker = cls(BrokerConfig.model_validate(data["config"]), tuple(data["keys"]), data["cash"])
        broker.positions = np.array(data["positions"], dtype=np.int64)
        broker.fees_paid = np.array(data["fees_paid"], dtype=np.float64)
        broker._sequence = data["sequence"]
        broker._fill_count = data["fill_count"]
        broker._final_states = {key: OrderState(value) for key, value in data["final_states"].items()}
        for raw in sorted(data["working"], key=lambda raw: raw["sequence"]):  # `on_bar` relies on this order
            order = SimOrder(_intent_from_dict(raw["intent"]), raw["index"], raw["sequence"], raw["filled"],
                             OrderState(raw["state"]), raw["active"], raw["triggered"], raw["quantity"],
                             raw["average_price"])
            broker._add(order)
        return broker
