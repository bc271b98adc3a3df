"""Explicit mapping tables between our enums and Kite's codes, and payload → domain parsers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from tradeloom.broker import BrokerOrder, BrokerPosition, DepthLevel, Funds, Tick
from tradeloom.domain import Fill, Instrument, OrderIntent, OrderState, OrderType, ProductType, Segment, Side, Timeframe
from tradeloom.errors import InputError
from tradeloom.quality import BarColumns

log = logging.getLogger(__name__)
IST = timezone(timedelta(hours=5, minutes=30))

ORDER_TYPE_TO_KITE: dict[OrderType, str] = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.STOP: "SL-M",
    OrderType.STOP_LIMIT: "SL",
}
ORDER_TYPE_FROM_KITE = {code: ours for ours, code in ORDER_TYPE_TO_KITE.items()}
PRODUCT_TO_KITE: dict[ProductType, str] = {ProductType.INTRADAY: "MIS", ProductType.DELIVERY: "CNC"}
PRODUCT_FROM_KITE = {code: ours for ours, code in PRODUCT_TO_KITE.items()} | {"NRML": ProductType.DELIVERY}
SIDE_TO_KITE: dict[Side, str] = {Side.BUY: "BUY", Side.SELL: "SELL"}
SIDE_FROM_KITE = {code: ours for ours, code in SIDE_TO_KITE.items()}
# Kite order statuses (docs: "Order statuses"); a partial fill is OPEN with filled_quantity > 0.
STATUS_FROM_KITE: dict[str, OrderState] = {
    "PUT ORDER REQ RECEIVED": OrderState.SENT,
    "VALIDATION PENDING": OrderState.SENT,
    "OPEN PENDING": OrderState.SENT,
    "AMO REQ RECEIVED": OrderState.SENT,
    "OPEN": OrderState.ACKNOWLEDGED,
    "TRIGGER PENDING": OrderState.ACKNOWLEDGED,
    "MODIFY VALIDATION PENDING": OrderState.ACKNOWLEDGED,
    "MODIFY PENDING": OrderState.ACKNOWLEDGED,
    "MODIFIED": OrderState.ACKNOWLEDGED,
    "UPDATE": OrderState.ACKNOWLEDGED,
    "CANCEL PENDING": OrderState.ACKNOWLEDGED,
    "COMPLETE": OrderState.FILLED,
    "CANCELLED": OrderState.CANCELLED,
    "REJECTED": OrderState.REJECTED,
    "LAPSED": OrderState.EXPIRED,
}
TIMEFRAME_TO_KITE: dict[Timeframe, str] = {Timeframe.MINUTE: "minute", Timeframe.HOUR: "60minute", Timeframe.DAY: "day"}


def split_key(instrument_key: str) -> tuple[str, str]:
    exchange, _, symbol = instrument_key.partition(":")
    if not exchange or not symbol:
        raise InputError(f"instrument_key={instrument_key!r}, expected 'EXCHANGE:SYMBOL' such as 'NSE:INFY'")
    return exchange, symbol


def order_params(intent: OrderIntent, variety: str) -> dict[str, Any]:
    """`KiteConnect.place_order` keyword arguments for an intent; our client order id goes in `tag`."""
    exchange, symbol = split_key(intent.instrument_key)
    if intent.quantity <= 0:
        raise InputError(f"quantity={intent.quantity}, expected a positive integer")
    if intent.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and intent.limit_price is None:
        raise InputError(f"limit_price=None for a {intent.order_type.value} order, expected a price")
    if intent.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and intent.stop_price is None:
        raise InputError(f"stop_price=None for a {intent.order_type.value} order, expected a trigger price")
    if len(intent.client_order_id) > 20 or not intent.client_order_id.isalnum():
        raise InputError(f"client_order_id={intent.client_order_id!r}, expected at most 20 alphanumerics (Kite tag)")
    params: dict[str, Any] = {
        "variety": variety,
        "exchange": exchange,
        "tradingsymbol": symbol,
        "transaction_type": SIDE_TO_KITE[intent.side],
        "quantity": intent.quantity,
        "product": PRODUCT_TO_KITE[intent.product],
        "order_type": ORDER_TYPE_TO_KITE[intent.order_type],
        "validity": "DAY",
        "tag": intent.client_order_id,
    }
    if intent.limit_price is not None:
        params["price"] = float(intent.limit_price)
    if intent.stop_price is not None:
        params["trigger_price"] = float(intent.stop_price)
    return params


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "" or float(value) == 0.0:
        return None
    return Decimal(str(value))


def to_utc_ns(value: Any) -> int:
    """Kite sends exchange-local (IST) times without a zone: as strings, or as naive datetimes once
    the SDK has parsed them."""
    if value is None or value == "":
        return 0
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return 0
    if value.tzinfo is None:
        value = value.replace(tzinfo=IST)
    return int(value.timestamp() * 1_000_000_000)


def order_state(status: str, filled: int) -> OrderState:
    state = STATUS_FROM_KITE.get(status)
    if state is None:
        # Unknown means not terminal: keep watching the order rather than forgetting it.
        log.warning("kite order status %r unknown; treated as acknowledged", status)
        state = OrderState.ACKNOWLEDGED
    if state is OrderState.ACKNOWLEDGED and filled > 0:
        return OrderState.PARTIALLY_FILLED
    return state


def parse_order(payload: Mapping[str, Any]) -> BrokerOrder:
    filled = int(payload.get("filled_quantity") or 0)
    tag = payload.get("tag") or None
    return BrokerOrder(
        broker_order_id=str(payload["order_id"]),
        client_order_id=tag if isinstance(tag, str) and tag.startswith("TL") else None,
        instrument_key=f"{payload['exchange']}:{payload['tradingsymbol']}",
        side=SIDE_FROM_KITE[payload["transaction_type"]],
        quantity=int(payload["quantity"]),
        filled_quantity=filled,
        state=order_state(str(payload["status"]), filled),
        order_type=ORDER_TYPE_FROM_KITE[payload["order_type"]],
        product=PRODUCT_FROM_KITE.get(payload.get("product", "MIS"), ProductType.INTRADAY),
        limit_price=_decimal(payload.get("price")),
        stop_price=_decimal(payload.get("trigger_price")),
        average_price=_decimal(payload.get("average_price")),
        status_message=str(payload.get("status_message") or ""),
        updated_at_ns=to_utc_ns(payload.get("exchange_update_timestamp") or payload.get("order_timestamp")),
    )


def parse_fill(payload: Mapping[str, Any], tags: Mapping[str, str]) -> Fill:
    """Kite trades do not carry the tag: `tags` maps broker order id → our client order id."""
    return Fill(
        client_order_id=tags.get(str(payload["order_id"]), ""),
        instrument_key=f"{payload['exchange']}:{payload['tradingsymbol']}",
        side=SIDE_FROM_KITE[payload["transaction_type"]],
        quantity=int(payload["quantity"]),
        price=Decimal(str(payload["average_price"])),
        filled_at_ns=to_utc_ns(payload.get("fill_timestamp") or payload.get("exchange_timestamp")),
        fill_id=str(payload["trade_id"]),
    )


def parse_position(payload: Mapping[str, Any]) -> BrokerPosition:
    return BrokerPosition(
        instrument_key=f"{payload['exchange']}:{payload['tradingsymbol']}",
        product=PRODUCT_FROM_KITE.get(payload.get("product", "MIS"), ProductType.INTRADAY),
        quantity=int(payload["quantity"]),
        average_price=Decimal(str(payload.get("average_price") or 0)),
        realized_pnl=Decimal(str(payload.get("realised") or 0)),
    )


def parse_funds(payload: Mapping[str, Any]) -> Funds:
    equity = payload["equity"]
    return Funds(
        available_cash=Decimal(str(equity["net"])),
        used_margin=Decimal(str(equity["utilised"]["debits"])),
    )


def parse_instrument(row: Mapping[str, Any]) -> Instrument:
    kind = str(row.get("instrument_type", "EQ"))
    segment = {"EQ": Segment.EQUITY, "FUT": Segment.FUTURES, "CE": Segment.OPTIONS, "PE": Segment.OPTIONS}.get(
        kind, Segment.EQUITY
    )
    if str(row.get("segment", "")) == "INDICES":
        segment = Segment.INDEX
    return Instrument(
        exchange=str(row["exchange"]),
        symbol=str(row["tradingsymbol"]),
        segment=segment,
        tick_size=Decimal(str(row["tick_size"])),
        lot_size=int(row["lot_size"]),
        currency="INR",
        timezone="Asia/Kolkata",
        session_open=time(9, 15),
        session_close=time(15, 30),
        calendar="XBOM",
        kite_token=int(row["instrument_token"]),
    )


def parse_tick(payload: Mapping[str, Any], instrument_key: str) -> Tick:
    depth = payload.get("depth") or {}

    def levels(side: str) -> tuple[DepthLevel, ...]:
        return tuple(
            DepthLevel(float(level["price"]), int(level["quantity"]), int(level["orders"]))
            for level in depth.get(side, [])
            if level["quantity"] > 0
        )

    return Tick(
        instrument_key=instrument_key,
        last_price=float(payload["last_price"]),
        last_quantity=int(payload.get("last_traded_quantity") or 0),
        volume=int(payload.get("volume_traded") or 0),
        # The SDK builds exchange_timestamp with datetime.fromtimestamp (local time, naive);
        # .timestamp() on that naive value maps back to the original epoch.
        exchange_at_ns=int(payload["exchange_timestamp"].timestamp()) * 1_000_000_000
        if payload.get("exchange_timestamp")
        else 0,
        bids=levels("buy"),
        asks=levels("sell"),
    )


def parse_candles(records: list[Mapping[str, Any]], instrument_key: str) -> BarColumns:
    count = len(records)

    def column(name: str) -> npt.NDArray[np.float64]:
        return np.array([float(record[name]) for record in records], dtype=np.float64)

    return BarColumns(
        instrument_key=np.array([instrument_key] * count, dtype=object),
        bar_at=np.array([to_utc_ns(record["date"]) for record in records], dtype=np.int64),
        open=column("open"),
        high=column("high"),
        low=column("low"),
        close=column("close"),
        volume=column("volume"),
    )
