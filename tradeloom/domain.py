"""Domain values shared by every layer."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import time
from decimal import Decimal
from hashlib import blake2b as _blake2b

from tradeloom.records import fast_init


class Timeframe(enum.StrEnum):
    MINUTE = "1m"
    HOUR = "1h"
    DAY = "1d"

    @property
    def table(self) -> str:
        return f"bars_{self.value}"

    @property
    def seconds(self) -> int:
        return {"1m": 60, "1h": 3600, "1d": 86400}[self.value]


class Segment(enum.StrEnum):
    EQUITY = "equity"
    FUTURES = "futures"
    OPTIONS = "options"
    CURRENCY = "currency"
    CRYPTO = "crypto"
    INDEX = "index"


class Side(enum.IntEnum):
    SELL = -1
    BUY = 1


@dataclass(frozen=True)
class Instrument:
    """A tradable instrument; `symbol` is unique per `exchange`."""

    exchange: str
    symbol: str
    segment: Segment = Segment.EQUITY
    tick_size: Decimal = Decimal("0.01")
    lot_size: int = 1
    currency: str = "USD"
    timezone: str = "America/New_York"
    session_open: time = time(9, 30)
    session_close: time = time(16, 0)
    # Weekdays the session runs (Monday=0); FX runs Sunday evening to Friday in UTC terms.
    trading_days: tuple[int, ...] = (0, 1, 2, 3, 4)
    calendar: str | None = "XNYS"
    is_synthetic: bool = False
    kite_token: int | None = None
    fyers_symbol: str | None = None

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class ProductType(enum.StrEnum):
    INTRADAY = "intraday"  # squared off before the exchange's cut-off (Kite MIS, Fyers INTRADAY)
    DELIVERY = "delivery"  # carried overnight (Kite CNC, Fyers CNC)


class OrderState(enum.StrEnum):
    NEW = "new"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_STATES


_TERMINAL_STATES = frozenset({OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED, OrderState.EXPIRED})


class IntentPurpose(enum.StrEnum):
    ENTRY = "entry"
    EXIT = "exit"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    SQUARE_OFF = "square_off"


@fast_init
@dataclass(frozen=True)
class OrderIntent:
    """What the engine wants done; the order manager turns it into broker orders.

    `client_order_id` is derived deterministically (see `client_order_id`) so that a retry or a
    restart can never create a second order for the same intent.
    """

    client_order_id: str
    instrument_key: str
    side: Side
    quantity: int
    order_type: OrderType
    purpose: IntentPurpose
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    product: ProductType = ProductType.INTRADAY
    parent_client_order_id: str | None = None


@fast_init
@dataclass(frozen=True)
class Fill:
    client_order_id: str
    instrument_key: str
    side: Side
    quantity: int
    price: Decimal
    filled_at_ns: int
    fill_id: str
    fees: Decimal = Decimal(0)


def client_order_id(strategy: str, instrument_key: str, bar_at_ns: int, purpose: IntentPurpose, leg: int = 0) -> str:
    """Deterministic id from (strategy, symbol, bar time, intent): the same decision always maps to
    the same id. Short enough for Kite's tag (20 chars) and Fyers' orderTag."""
    # `{purpose}` formats a StrEnum member as its value (same bytes as `purpose.value`, without the enum
    # descriptor lookup): the ids must never change, live orders at brokers carry them.
    return "TL" + _blake2b(f"{strategy}|{instrument_key}|{bar_at_ns}|{purpose}|{leg}".encode(),
                           digest_size=8).hexdigest()
