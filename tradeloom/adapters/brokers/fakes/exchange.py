"""A small matching simulation shared by the fake Kite and Fyers servers.

Market orders fill at the last price; limit orders rest until the price crosses; stop orders wait
for their trigger. Faults (partial fills, rejections, delayed acknowledgements) are decided by the
server that calls in. Every change is published to listeners (the servers' order streams) and all
state is inspectable by tests (`orders`, `fills`, `count_by_tag`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

from tradeloom.domain import OrderState, OrderType, ProductType, Side


class ExchangeError(Exception):
    """The simulated venue refused an operation; servers turn it into their own error body."""


@dataclass(frozen=True)
class SimOrder:
    order_id: str
    tag: str | None
    instrument_key: str
    side: Side
    quantity: int
    order_type: OrderType
    product: ProductType
    limit_price: Decimal | None
    trigger_price: Decimal | None
    state: OrderState
    filled_quantity: int = 0
    average_price: Decimal | None = None
    message: str = ""
    created_ns: int = 0
    updated_ns: int = 0
    triggered: bool = False


@dataclass(frozen=True)
class SimFill:
    fill_id: str
    order_id: str
    tag: str | None
    instrument_key: str
    side: Side
    quantity: int
    price: Decimal
    product: ProductType
    at_ns: int


@dataclass(frozen=True)
class SimPosition:
    instrument_key: str
    product: ProductType
    quantity: int
    average_price: Decimal
    realized_pnl: Decimal
    buy_quantity: int
    sell_quantity: int
    buy_value: Decimal
    sell_value: Decimal


Listener = Callable[[SimOrder], None]


class FakeExchange:
    def __init__(self, prices: dict[str, Decimal] | None = None, id_prefix: str = "2501010000") -> None:
        self._lock = threading.RLock()
        self.prices: dict[str, Decimal] = dict(prices or {})
        self.orders: dict[str, SimOrder] = {}
        self.fills: list[SimFill] = []
        self._ids = itertools.count(1)
        self._fill_ids = itertools.count(1)
        self._prefix = id_prefix
        self.listeners: list[Listener] = []
        # Partial-fill fault: the next N marketable orders fill only this fraction now.
        self.partial_fraction = Decimal("0.5")

    # -- inspection ---------------------------------------------------------------------------
    def count_by_tag(self) -> Counter[str]:
        with self._lock:
            return Counter(order.tag for order in self.orders.values() if order.tag)

    def orders_with_tag(self, tag: str) -> list[SimOrder]:
        with self._lock:
            return [order for order in self.orders.values() if order.tag == tag]

    def positions(self) -> list[SimPosition]:
        with self._lock:
            books: dict[tuple[str, ProductType], list[SimFill]] = {}
            for fill in self.fills:
                books.setdefault((fill.instrument_key, fill.product), []).append(fill)
            return [_position(key, product, fills) for (key, product), fills in books.items()]

    # -- venue operations ---------------------------------------------------------------------
    def submit(
        self,
        instrument_key: str,
        side: Side,
        quantity: int,
        order_type: OrderType,
        product: ProductType,
        limit_price: Decimal | None,
        trigger_price: Decimal | None,
        tag: str | None,
        *,
        reject_reason: str | None = None,
        delay_ack: bool = False,
        partial: bool = False,
    ) -> SimOrder:
        with self._lock:
            now = time.time_ns()
            order_id = f"{self._prefix}{next(self._ids):05d}"
            state = OrderState.REJECTED if reject_reason else OrderState.SENT
            order = SimOrder(
                order_id,
                tag,
                instrument_key,
                side,
                quantity,
                order_type,
                product,
                limit_price,
                trigger_price,
                state,
                message=reject_reason or "",
                created_ns=now,
                updated_ns=now,
            )
            self._store(order)
            if reject_reason is None and not delay_ack:
                self._acknowledge(order_id, partial=partial)
            return self.orders[order_id]

    def release_pending(self) -> None:
        """Acknowledge every order held back by a delayed-acknowledgement fault."""
        with self._lock:
            for order in list(self.orders.values()):
                if order.state is OrderState.SENT:
                    self._acknowledge(order.order_id, partial=False)

    def modify(
        self,
        order_id: str,
        quantity: int | None = None,
        limit_price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        order_type: OrderType | None = None,
    ) -> SimOrder:
        with self._lock:
            order = self._open(order_id, "modified")
            if quantity is not None and quantity < order.filled_quantity:
                raise ExchangeError(f"quantity {quantity} is below the filled quantity {order.filled_quantity}")
            updated = replace(
                order,
                quantity=quantity if quantity is not None else order.quantity,
                limit_price=limit_price if limit_price is not None else order.limit_price,
                trigger_price=trigger_price if trigger_price is not None else order.trigger_price,
                order_type=order_type if order_type is not None else order.order_type,
                updated_ns=time.time_ns(),
            )
            self._store(updated)
            self._match(order_id)
            return self.orders[order_id]

    def cancel(self, order_id: str) -> SimOrder:
        with self._lock:
            order = self._open(order_id, "cancelled")
            self._store(replace(order, state=OrderState.CANCELLED, updated_ns=time.time_ns()))
            return self.orders[order_id]

    def set_price(self, instrument_key: str, price: Decimal) -> None:
        with self._lock:
            self.prices[instrument_key] = price
            for order in list(self.orders.values()):
                waiting = not order.state.is_terminal and order.state is not OrderState.SENT
                if order.instrument_key == instrument_key and waiting:
                    self._match(order.order_id)

    def fill_remaining(self, order_id: str) -> None:
        """Complete a partially filled order at the last price (the rest of a partial fill arriving)."""
        with self._lock:
            order = self.orders[order_id]
            remaining = order.quantity - order.filled_quantity
            if remaining > 0 and not order.state.is_terminal:
                self._execute(order_id, remaining, self.prices[order.instrument_key])

    # -- internals ----------------------------------------------------------------------------
    def _open(self, order_id: str, verb: str) -> SimOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise ExchangeError(f"order {order_id} does not exist")
        if order.state.is_terminal:
            raise ExchangeError(f"order {order_id} is {order.state.value} and cannot be {verb}")
        return order

    def _store(self, order: SimOrder) -> None:
        self.orders[order.order_id] = order
        for listener in list(self.listeners):
            listener(order)

    def _acknowledge(self, order_id: str, partial: bool) -> None:
        order = self.orders[order_id]
        self._store(replace(order, state=OrderState.ACKNOWLEDGED, updated_ns=time.time_ns()))
        self._match(order_id, partial=partial)

    def _match(self, order_id: str, partial: bool = False) -> None:
        order = self.orders[order_id]
        price = self.prices.get(order.instrument_key)
        if price is None or order.state.is_terminal:
            return
        order_type, triggered = order.order_type, order.triggered
        if order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and not triggered:
            if order.trigger_price is None:
                raise ExchangeError(f"order {order_id}: a stop order needs a trigger price")
            hit = price >= order.trigger_price if order.side is Side.BUY else price <= order.trigger_price
            if not hit:
                return
            triggered = True
            order = replace(order, triggered=True)
            self.orders[order_id] = order
        if order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            if order.limit_price is None:
                raise ExchangeError(f"order {order_id}: a limit order needs a limit price")
            crosses = price <= order.limit_price if order.side is Side.BUY else price >= order.limit_price
            if not crosses:
                return
        remaining = order.quantity - order.filled_quantity
        quantity = max(1, int(remaining * self.partial_fraction)) if partial and remaining > 1 else remaining
        self._execute(order_id, quantity, price)

    def _execute(self, order_id: str, quantity: int, price: Decimal) -> None:
        order = self.orders[order_id]
        now = time.time_ns()
        fill = SimFill(
            f"{self._prefix}{next(self._fill_ids):06d}",
            order_id,
            order.tag,
            order.instrument_key,
            order.side,
            quantity,
            price,
            order.product,
            now,
        )
        self.fills.append(fill)
        filled = order.filled_quantity + quantity
        previous_value = (order.average_price or Decimal(0)) * order.filled_quantity
        average = (previous_value + price * quantity) / filled
        state = OrderState.FILLED if filled >= order.quantity else OrderState.PARTIALLY_FILLED
        self._store(replace(order, filled_quantity=filled, average_price=average, state=state, updated_ns=now))


def _position(instrument_key: str, product: ProductType, fills: list[SimFill]) -> SimPosition:
    quantity, average, realized = 0, Decimal(0), Decimal(0)
    buy_qty = sell_qty = 0
    buy_value = sell_value = Decimal(0)
    for fill in fills:
        signed = int(fill.side) * fill.quantity
        if fill.side is Side.BUY:
            buy_qty, buy_value = buy_qty + fill.quantity, buy_value + fill.price * fill.quantity
        else:
            sell_qty, sell_value = sell_qty + fill.quantity, sell_value + fill.price * fill.quantity
        if quantity == 0 or (quantity > 0) == (signed > 0):
            average = (average * abs(quantity) + fill.price * fill.quantity) / (abs(quantity) + fill.quantity)
            quantity += signed
            continue
        closing = min(abs(quantity), fill.quantity)
        realized += (fill.price - average) * closing * (1 if quantity > 0 else -1)
        quantity += signed
        if quantity == 0:
            average = Decimal(0)
        elif (quantity > 0) == (signed > 0):  # flipped through zero
            average = fill.price
    return SimPosition(instrument_key, product, quantity, average, realized, buy_qty, sell_qty, buy_value, sell_value)
