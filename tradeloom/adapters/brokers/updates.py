"""Order updates arrive duplicated and out of order (socket replays, polling racing the stream).

`OrderUpdateFilter` passes an update only when it moves an order forward: a higher state rank or
more filled quantity. Terminal states never go back.
"""

from __future__ import annotations

import threading

from tradeloom.broker import BrokerOrder
from tradeloom.domain import OrderState

_RANK = {
    OrderState.NEW: 0,
    OrderState.SENT: 1,
    OrderState.ACKNOWLEDGED: 2,
    OrderState.PARTIALLY_FILLED: 3,
    OrderState.FILLED: 4,
    OrderState.CANCELLED: 4,
    OrderState.REJECTED: 4,
    OrderState.EXPIRED: 4,
}


class OrderUpdateFilter:
    def __init__(self) -> None:
        self._last: dict[str, BrokerOrder] = {}
        self._lock = threading.Lock()
        self.dropped = 0

    def accept(self, update: BrokerOrder) -> bool:
        with self._lock:
            last = self._last.get(update.broker_order_id)
            if last is not None and not _is_newer(update, last):
                self.dropped += 1
                return False
            self._last[update.broker_order_id] = update
            return True


def _is_newer(update: BrokerOrder, last: BrokerOrder) -> bool:
    if last.state.is_terminal:
        return False
    if update.filled_quantity != last.filled_quantity:
        return update.filled_quantity > last.filled_quantity
    if _RANK[update.state] != _RANK[last.state]:
        return _RANK[update.state] > _RANK[last.state]
    # Same rank and fill: a modification (price/quantity) is news, an exact repeat is not.
    return (update.limit_price, update.stop_price, update.quantity) != (
        last.limit_price,
        last.stop_price,
        last.quantity,
    )
