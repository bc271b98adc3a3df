"""The broker port: what the order manager and the feed need from any broker.

Every broker (paper, Zerodha Kite, Fyers) is an adapter behind `Broker`. Values crossing the port
are our domain types; broker codes never leak past the adapter.

==========================  ========  =========================================================
method                      required  notes
==========================  ========  =========================================================
``place(intent)``           yes       never retried blindly: on an unknown outcome the adapter
                                      looks the order up by client order id and either returns
                                      it or raises `PlacementUnconfirmed`
``modify(...)``             yes       price / trigger / quantity of an open order (the paper
                                      broker: quantity only, downwards; the order manager cuts
                                      protective legs to the position with it)
``cancel(broker_order_id)`` yes       retried on transient errors (idempotent at the venue)
``order_by_client_id(id)``  yes       reconciliation after a crash: the client order id is the
                                      idempotency key (Kite ``tag``, Fyers ``orderTag``)
``open_orders()``           yes       non-terminal orders of today
``orders_today()``          yes       every order of today, terminal ones included
``positions()``             yes       net positions (signed quantity)
``fills_today()``           yes       every execution of today
``funds()``                 yes       cash available / margin used
``instruments()``           optional  the instrument master; paper brokers return what they trade
``historical_bars(...)``    optional  returns `tradeloom.quality.BarColumns`
``stream(...)``             optional  callbacks for order updates and ticks; `stop_stream()`
==========================  ========  =========================================================

Errors raised across the port come from `tradeloom.errors`: `TransientBrokerError` (back off; retry
reads and cancels, never placements), `OrderRejectedError` (do not retry), `ConfigError` and its
subclass `TokenExpiredError` (stop; log in again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

from tradeloom.domain import Fill, Instrument, OrderIntent, OrderState, OrderType, ProductType, Side, Timeframe
from tradeloom.errors import ConfigError, TransientBrokerError
from tradeloom.quality import BarColumns
from tradeloom.records import fast_init


class TokenExpiredError(ConfigError):
    """The broker session (access token) is no longer valid: log in again (`executor login kite`)."""


class PlacementUnconfirmed(TransientBrokerError):
    """A placement failed in transit and no order with its client order id was found (yet).

    The order may still appear (delayed acknowledgement): reconcile by client order id before any
    new attempt; never re-send blindly.
    """


@fast_init
@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker reports it, translated to our vocabulary."""

    broker_order_id: str
    client_order_id: str | None  # None for orders placed outside tradeloom (no or foreign tag)
    instrument_key: str
    side: Side
    quantity: int
    filled_quantity: int
    state: OrderState
    order_type: OrderType
    product: ProductType
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    average_price: Decimal | None = None
    status_message: str = ""
    # Broker-side time of the last change, UTC epoch ns; 0 when the broker does not say.
    updated_at_ns: int = 0

    @classmethod
    def just_sent(cls, intent: OrderIntent, broker_order_id: str) -> BrokerOrder:
        """The order as it stands the moment the broker accepted it (before any acknowledgement)."""
        return cls(
            broker_order_id=broker_order_id, client_order_id=intent.client_order_id,
            instrument_key=intent.instrument_key, side=intent.side, quantity=intent.quantity, filled_quantity=0,
            state=OrderState.SENT, order_type=intent.order_type, product=intent.product,
            limit_price=intent.limit_price, stop_price=intent.stop_price,
        )

    @property
    def pending_quantity(self) -> int:
        return 0 if self.state.is_terminal else self.quantity - self.filled_quantity


@fast_init
@dataclass(frozen=True)
class BrokerPosition:
    instrument_key: str
    product: ProductType
    quantity: int  # signed: long > 0, short < 0
    average_price: Decimal
    realized_pnl: Decimal = Decimal(0)


@fast_init
@dataclass(frozen=True)
class Funds:
    available_cash: Decimal
    used_margin: Decimal


@fast_init
@dataclass(frozen=True)
class DepthLevel:
    price: float
    quantity: int
    orders: int


@fast_init
@dataclass(frozen=True)
class Tick:
    """One market data update; prices as floats (market data, not money we owe)."""

    instrument_key: str
    last_price: float
    last_quantity: int
    volume: int  # cumulative for the day
    exchange_at_ns: int  # UTC epoch ns; 0 when the feed gives no exchange time
    bids: tuple[DepthLevel, ...] = ()
    asks: tuple[DepthLevel, ...] = ()


OrderCallback = Callable[[BrokerOrder], None]
TickCallback = Callable[[Tick], None]


@runtime_checkable
class Broker(Protocol):
    """See the module docstring for which methods are required and which optional."""

    name: str

    def place(self, intent: OrderIntent) -> BrokerOrder: ...

    def modify(
        self,
        broker_order_id: str,
        *,
        quantity: int | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        order_type: OrderType | None = None,
    ) -> BrokerOrder: ...

    def cancel(self, broker_order_id: str) -> BrokerOrder: ...

    def order_by_client_id(self, client_order_id: str) -> BrokerOrder | None: ...

    def open_orders(self) -> list[BrokerOrder]: ...

    def orders_today(self) -> list[BrokerOrder]: ...

    def positions(self) -> list[BrokerPosition]: ...

    def fills_today(self) -> list[Fill]: ...

    def funds(self) -> Funds: ...


@runtime_checkable
class MarketDataBroker(Protocol):
    """The optional part of the port: instrument master, history, streaming."""

    def instruments(self) -> list[Instrument]: ...

    def historical_bars(
        self, instrument_key: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> BarColumns: ...

    def stream(
        self,
        instrument_keys: Sequence[str],
        on_order: OrderCallback | None = None,
        on_tick: TickCallback | None = None,
    ) -> None: ...

    def stop_stream(self) -> None: ...
