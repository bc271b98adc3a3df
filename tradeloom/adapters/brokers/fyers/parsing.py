"""Explicit mapping tables between our enums and Fyers' codes, and payload → domain parsers."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import numpy as np

from tradeloom.broker import BrokerOrder, BrokerPosition, Funds
from tradeloom.domain import Fill, Instrument, OrderIntent, OrderState, OrderType, ProductType, Segment, Side, Timeframe
from tradeloom.errors import InputError
from tradeloom.quality import BarColumns

log = logging.getLogger(__name__)
IST = timezone(timedelta(hours=5, minutes=30))

ORDER_TYPE_TO_FYERS: dict[OrderType, int] = {
    OrderType.LIMIT: 1,
    OrderType.MARKET: 2,
    OrderType.STOP: 3,
    OrderType.STOP_LIMIT: 4,
}
ORDER_TYPE_FROM_FYERS = {code: ours for ours, code in ORDER_TYPE_TO_FYERS.items()}
PRODUCT_TO_FYERS: dict[ProductType, str] = {ProductType.INTRADAY: "INTRADAY", ProductType.DELIVERY: "CNC"}
PRODUCT_FROM_FYERS = {code: ours for ours, code in PRODUCT_TO_FYERS.items()} | {"MARGIN": ProductType.DELIVERY}
SIDE_TO_FYERS: dict[Side, int] = {Side.BUY: 1, Side.SELL: -1}
SIDE_FROM_FYERS = {code: ours for ours, code in SIDE_TO_FYERS.items()}
# Fyers order status codes; a partial fill is "pending" (6) with filledQty > 0.
STATUS_FROM_FYERS: dict[int, OrderState] = {
    1: OrderState.CANCELLED,
    2: OrderState.FILLED,
    4: OrderState.SENT,  # transit
    5: OrderState.REJECTED,
    6: OrderState.ACKNOWLEDGED,
    7: OrderState.EXPIRED,
}
TIMEFRAME_TO_FYERS: dict[Timeframe, str] = {Timeframe.MINUTE: "1", Timeframe.HOUR: "60", Timeframe.DAY: "1D"}
_TAG_PREFIX = re.compile(r"^\d+:")


class SymbolMap:
    def __init__(self, overrides: Mapping[str, str]) -> None:
        self._to_fyers = dict(overrides)
        self._from_fyers = {fyers: ours for ours, fyers in overrides.items()}

    def to_fyers(self, instrument_key: str) -> str:
        if instrument_key in self._to_fyers:
            return self._to_fyers[instrument_key]
        exchange, _, symbol = instrument_key.partition(":")
        if not exchange or not symbol:
            raise InputError(f"instrument_key={instrument_key!r}, expected 'EXCHANGE:SYMBOL' such as 'NSE:INFY'")
        return f"{exchange}:{symbol}-EQ"

    def from_fyers(self, symbol: str) -> str:
        return self._from_fyers.get(symbol) or symbol.removesuffix("-EQ")

    def add(self, instrument_key: str, fyers_symbol: str) -> None:
        self._to_fyers[instrument_key] = fyers_symbol
        self._from_fyers[fyers_symbol] = instrument_key


def client_tag(raw: Any) -> str | None:
    """Our client order id from `orderTag` (the API may prefix it with "<n>:")."""
    if not isinstance(raw, str) or not raw:
        return None
    tag = _TAG_PREFIX.sub("", raw)
    return tag if tag.startswith("TL") else None


def order_body(intent: OrderIntent, symbols: SymbolMap) -> dict[str, Any]:
    if intent.quantity <= 0:
        raise InputError(f"quantity={intent.quantity}, expected a positive integer")
    if intent.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and intent.limit_price is None:
        raise InputError(f"limit_price=None for a {intent.order_type.value} order, expected a price")
    if intent.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and intent.stop_price is None:
        raise InputError(f"stop_price=None for a {intent.order_type.value} order, expected a trigger price")
    if not intent.client_order_id.isalnum():
        raise InputError(f"client_order_id={intent.client_order_id!r}, expected alphanumerics (Fyers orderTag)")
    return {
        "symbol": symbols.to_fyers(intent.instrument_key),
        "qty": intent.quantity,
        "type": ORDER_TYPE_TO_FYERS[intent.order_type],
        "side": SIDE_TO_FYERS[intent.side],
        "productType": PRODUCT_TO_FYERS[intent.product],
        "limitPrice": float(intent.limit_price or 0),
        "stopPrice": float(intent.stop_price or 0),
        "validity": "DAY",
        "disclosedQty": 0,
        "offlineOrder": False,
        "orderTag": intent.client_order_id,
    }


def to_utc_ns(value: Any) -> int:
    """Fyers order times are exchange-local strings like "05-Jan-2024 09:20:01"; epochs pass through."""
    if isinstance(value, int | float) and value > 0:
        return int(value) * 1_000_000_000
    if not isinstance(value, str) or not value:
        return 0
    try:
        parsed = datetime.strptime(value, "%d-%b-%Y %H:%M:%S").replace(tzinfo=IST)
    except ValueError:
        log.warning("fyers time %r not understood", value)
        return 0
    return int(parsed.timestamp() * 1_000_000_000)


def _decimal(value: Any) -> Decimal | None:
    if value is None or float(value) == 0.0:
        return None
    return Decimal(str(value))


def order_state(status: int, filled: int) -> OrderState:
    state = STATUS_FROM_FYERS.get(status)
    if state is None:
        log.warning("fyers order status %r unknown; treated as acknowledged", status)
        state = OrderState.ACKNOWLEDGED
    if state is OrderState.ACKNOWLEDGED and filled > 0:
        return OrderState.PARTIALLY_FILLED
    return state


def parse_order(payload: Mapping[str, Any], symbols: SymbolMap) -> BrokerOrder:
    """An order from the order book, or from the order socket after the SDK's field mapping."""
    filled = int(payload.get("filledQty") or 0)
    return BrokerOrder(
        broker_order_id=str(payload["id"]),
        client_order_id=client_tag(payload.get("orderTag")),
        instrument_key=symbols.from_fyers(str(payload["symbol"])),
        side=SIDE_FROM_FYERS[int(payload["side"])],
        quantity=int(payload["qty"]),
        filled_quantity=filled,
        state=order_state(int(payload["status"]), filled),
        order_type=ORDER_TYPE_FROM_FYERS[int(payload["type"])],
        product=PRODUCT_FROM_FYERS.get(str(payload.get("productType")), ProductType.INTRADAY),
        limit_price=_decimal(payload.get("limitPrice")),
        stop_price=_decimal(payload.get("stopPrice")),
        average_price=_decimal(payload.get("tradedPrice")),
        status_message=str(payload.get("message") or ""),
        updated_at_ns=to_utc_ns(payload.get("orderDateTime")),
    )


def parse_fill(payload: Mapping[str, Any], symbols: SymbolMap) -> Fill:
    return Fill(
        client_order_id=client_tag(payload.get("orderTag")) or "",
        instrument_key=symbols.from_fyers(str(payload["symbol"])),
        side=SIDE_FROM_FYERS[int(payload["side"])],
        quantity=int(payload["tradedQty"]),
        price=Decimal(str(payload["tradePrice"])),
        filled_at_ns=to_utc_ns(payload.get("orderDateTime")),
        fill_id=str(payload["tradeNumber"]),
    )


def parse_position(payload: Mapping[str, Any], symbols: SymbolMap) -> BrokerPosition:
    return BrokerPosition(
        instrument_key=symbols.from_fyers(str(payload["symbol"])),
        product=PRODUCT_FROM_FYERS.get(str(payload.get("productType")), ProductType.INTRADAY),
        quantity=int(payload["netQty"]),
        average_price=Decimal(str(payload.get("netAvg") or 0)),
        realized_pnl=Decimal(str(payload.get("realized_profit") or 0)),
    )


def parse_funds(rows: list[Mapping[str, Any]]) -> Funds:
    by_title = {str(row["title"]): Decimal(str(row["equityAmount"])) for row in rows}
    return Funds(available_cash=by_title["Available Balance"], used_margin=by_title.get("Utilized Amount", Decimal(0)))


def parse_candles(candles: list[list[Any]], instrument_key: str) -> BarColumns:
    array = np.array(candles, dtype=np.float64).reshape(-1, 6)
    return BarColumns(
        instrument_key=np.array([instrument_key] * len(array), dtype=object),
        bar_at=array[:, 0].astype(np.int64) * 1_000_000_000,
        open=array[:, 1].copy(),
        high=array[:, 2].copy(),
        low=array[:, 3].copy(),
        close=array[:, 4].copy(),
        volume=array[:, 5].copy(),
    )


# Symbol master CSV columns (no header), Fyers docs "Symbol Master": the ones we read.
MASTER_LOT_SIZE, MASTER_TICK_SIZE, MASTER_TICKER, MASTER_INSTRUMENT_TYPE = 3, 4, 9, 2
# Exchange instrument types of the capital-market segment we trade: 0 = EQ.
MASTER_EQUITY_TYPES = frozenset({"0"})


def parse_master_row(row: list[str], symbols: SymbolMap) -> Instrument | None:
    """One symbol-master row as an NSE/BSE equity instrument carrying its Fyers symbol; None for others."""
    if len(row) <= MASTER_TICKER or row[MASTER_INSTRUMENT_TYPE].strip() not in MASTER_EQUITY_TYPES:
        return None
    ticker = row[MASTER_TICKER].strip()
    key = symbols.from_fyers(ticker)
    exchange, _, symbol = key.partition(":")
    if not exchange or not symbol:
        return None
    try:
        tick, lot = Decimal(row[MASTER_TICK_SIZE].strip()), int(float(row[MASTER_LOT_SIZE]))
    except (ArithmeticError, ValueError):
        log.warning("fyers symbol master: row for %r has tick %r / lot %r; skipped", ticker,
                    row[MASTER_TICK_SIZE], row[MASTER_LOT_SIZE])
        return None
    if tick <= 0 or lot <= 0:
        return None
    return Instrument(exchange=exchange, symbol=symbol, segment=Segment.EQUITY, tick_size=tick, lot_size=lot,
                      currency="INR", timezone="Asia/Kolkata", session_open=time(9, 15), session_close=time(15, 30),
                      calendar="XBOM", fyers_symbol=ticker)
