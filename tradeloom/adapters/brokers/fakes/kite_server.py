"""A fake Kite Connect server: REST at the host root, the ticker WebSocket, Kite's wire formats.

Formats follow the Kite Connect v3 documentation: JSON envelopes ``{"status": "success", "data": ...}``,
errors ``{"status": "error", "message": ..., "error_type": ...}`` (the SDK raises TypeError without
``error_type``), the instrument master as CSV, and binary ticks (big-endian, prices in paise,
full mode 184 bytes with 5+5 depth levels).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import struct
import threading
import zlib
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from types import TracebackType
from typing import Any

from websockets.sync.server import ServerConnection

from tradeloom.adapters.brokers.fakes.exchange import ExchangeError, FakeExchange, SimOrder
from tradeloom.adapters.brokers.fakes.faults import Fault, FaultSwitchboard
from tradeloom.adapters.brokers.fakes.http import HttpServerThread, Request, Response, WebSocketServerThread
from tradeloom.domain import OrderState, OrderType, ProductType, Side

IST = timezone(timedelta(hours=5, minutes=30))
KITE_ORDER_TYPE = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.STOP: "SL-M",
    OrderType.STOP_LIMIT: "SL",
}
KITE_PRODUCT = {ProductType.INTRADAY: "MIS", ProductType.DELIVERY: "CNC"}
KITE_SIDE = {Side.BUY: "BUY", Side.SELL: "SELL"}


@dataclass(frozen=True)
class Listing:
    instrument_token: int
    tradingsymbol: str
    exchange: str = "NSE"
    tick_size: str = "0.05"
    lot_size: int = 1
    name: str = ""


DEFAULT_LISTINGS = (
    Listing(408065, "INFY", name="INFOSYS"),
    Listing(738561, "RELIANCE", name="RELIANCE INDUSTRIES"),
    Listing(2953217, "TCS", name="TATA CONSULTANCY SERV LT"),
)


@dataclass(frozen=True)
class TickSpec:
    """What a test wants broadcast as one full-mode packet."""

    instrument_token: int
    last_price: Decimal
    last_quantity: int = 1
    volume: int = 0
    exchange_at: datetime = field(default_factory=lambda: datetime.now(IST))
    bids: tuple[tuple[Decimal, int, int], ...] = ()  # (price, quantity, orders), best first
    asks: tuple[tuple[Decimal, int, int], ...] = ()


def _paise(price: Decimal) -> int:
    return int((price * 100).to_integral_value())


def encode_full_packet(tick: TickSpec) -> bytes:
    """One 184-byte full-mode packet (layout of the Kite WebSocket documentation)."""
    ltp = _paise(tick.last_price)
    epoch = int(tick.exchange_at.timestamp())
    head = struct.pack(
        ">IIIIIIIIIIIIIIII",
        tick.instrument_token,
        ltp,
        tick.last_quantity,
        ltp,
        tick.volume,
        0,
        0,
        ltp,
        ltp,
        ltp,
        ltp,  # open high low close
        epoch,
        0,
        0,
        0,
        epoch,
    )
    depth = b""
    for side in (tick.bids, tick.asks):
        levels = list(side)[:5] + [(Decimal(0), 0, 0)] * (5 - min(5, len(side)))
        for price, quantity, orders in levels:
            depth += struct.pack(">IIHxx", quantity, _paise(price), orders)
    packet = head + depth
    if len(packet) != 184:
        raise ValueError(f"full-mode packet of {len(packet)} bytes, expected 184")
    return packet


def encode_message(packets: list[bytes]) -> bytes:
    body = b"".join(struct.pack(">H", len(packet)) + packet for packet in packets)
    return struct.pack(">H", len(packets)) + body


def _in_session(at: datetime, step_minutes: int) -> bool:
    """NSE hours as Kite's history serves them: weekdays, 09:15 to 15:30 IST (day candles on weekdays)."""
    if at.weekday() >= 5:
        return False
    return step_minutes >= 1440 or time(9, 15) <= at.time() < time(15, 30)


class FakeKiteServer:
    def __init__(
        self,
        api_key: str = "kite_fake_key",
        api_secret: str = "kite_fake_secret_do_not_log",  # noqa: S107 - a fake's credential
        listings: tuple[Listing, ...] = DEFAULT_LISTINGS,
        prices: dict[str, Decimal] | None = None,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.listings = listings
        default_prices = {f"{item.exchange}:{item.tradingsymbol}": Decimal("1000") for item in listings}
        self.exchange = FakeExchange(prices or default_prices, id_prefix="2501010000")
        self.faults = FaultSwitchboard()
        self.access_tokens: set[str] = set()
        self.request_tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []  # (method, path) seen, for tests
        self.subscriptions: dict[int, str] = {}
        self._http = HttpServerThread(self._route)
        self._ws = WebSocketServerThread(self._ws_connect, self._ws_message, refuse_in_handshake=True)
        self._held_update: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._trade_ids = itertools.count(1)
        self.exchange.listeners.append(self._publish_order)
        self.http_port = 0
        self.ws_port = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> FakeKiteServer:
        self.http_port = self._http.start()
        self.ws_port = self._ws.start()
        return self

    def stop(self) -> None:
        self._http.stop()
        self._ws.stop()

    def __enter__(self) -> FakeKiteServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_root(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    # -- test controls --------------------------------------------------------------------------
    def new_request_token(self) -> str:
        token = secrets.token_hex(8)
        self.request_tokens.add(token)
        return token

    def issue_access_token(self) -> str:
        token = "kat_" + secrets.token_hex(12)
        self.access_tokens.add(token)
        return token

    def expire_tokens(self) -> None:
        """The daily session end: every access token stops working."""
        self.access_tokens.clear()

    def send_ticks(self, ticks: list[TickSpec]) -> int:
        return self._ws.broadcast(encode_message([encode_full_packet(tick) for tick in ticks]))

    def drop_streams(self) -> None:
        self._ws.drop_all()

    @property
    def stream_connections(self) -> int:
        return self._ws.connect_count

    # -- wire formats ---------------------------------------------------------------------------
    def _listing(self, instrument_key: str) -> Listing:
        exchange, symbol = instrument_key.split(":", 1)
        return next(item for item in self.listings if item.exchange == exchange and item.tradingsymbol == symbol)

    def order_payload(self, order: SimOrder) -> dict[str, Any]:
        exchange, symbol = order.instrument_key.split(":", 1)
        if order.state is OrderState.SENT:
            status = "OPEN PENDING"
        elif order.state in (OrderState.ACKNOWLEDGED, OrderState.PARTIALLY_FILLED):
            stop_waiting = order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and not order.triggered
            status = "TRIGGER PENDING" if stop_waiting else "OPEN"
        else:
            status = {
                OrderState.FILLED: "COMPLETE",
                OrderState.CANCELLED: "CANCELLED",
                OrderState.REJECTED: "REJECTED",
                OrderState.EXPIRED: "LAPSED",
            }[order.state]
        stamp = datetime.fromtimestamp(order.updated_ns / 1e9, IST).strftime("%Y-%m-%d %H:%M:%S")
        created = datetime.fromtimestamp(order.created_ns / 1e9, IST).strftime("%Y-%m-%d %H:%M:%S")
        pending = 0 if order.state.is_terminal else order.quantity - order.filled_quantity
        cancelled = order.quantity - order.filled_quantity if order.state is OrderState.CANCELLED else 0
        return {
            "account_id": "AB1234",
            "placed_by": "AB1234",
            "order_id": order.order_id,
            "exchange_order_id": None if order.state is OrderState.SENT else f"13{order.order_id[-8:]}",
            "parent_order_id": None,
            "status": status,
            "status_message": order.message or None,
            "status_message_raw": order.message or None,
            "order_timestamp": created,
            "exchange_update_timestamp": stamp,
            "exchange_timestamp": stamp,
            "variety": "regular",
            "modified": False,
            "exchange": exchange,
            "tradingsymbol": symbol,
            "instrument_token": self._listing(order.instrument_key).instrument_token,
            "order_type": KITE_ORDER_TYPE[order.order_type],
            "transaction_type": KITE_SIDE[order.side],
            "validity": "DAY",
            "validity_ttl": 0,
            "product": KITE_PRODUCT[order.product],
            "quantity": order.quantity,
            "disclosed_quantity": 0,
            "price": float(order.limit_price or 0),
            "trigger_price": float(order.trigger_price or 0),
            "average_price": float(order.average_price or 0),
            "filled_quantity": order.filled_quantity,
            "pending_quantity": pending,
            "cancelled_quantity": cancelled,
            "market_protection": 0,
            "meta": {},
            "tag": order.tag,
            "tags": [order.tag] if order.tag else [],
            "guid": f"g{order.order_id}",
        }

    def _trade_payload(self, index: int) -> dict[str, Any]:
        fill = self.exchange.fills[index]
        exchange, symbol = fill.instrument_key.split(":", 1)
        stamp = datetime.fromtimestamp(fill.at_ns / 1e9, IST).strftime("%Y-%m-%d %H:%M:%S")
        return {
            "trade_id": fill.fill_id,
            "order_id": fill.order_id,
            "exchange": exchange,
            "tradingsymbol": symbol,
            "instrument_token": self._listing(fill.instrument_key).instrument_token,
            "product": KITE_PRODUCT[fill.product],
            "average_price": float(fill.price),
            "quantity": fill.quantity,
            "exchange_order_id": f"13{fill.order_id[-8:]}",
            "transaction_type": KITE_SIDE[fill.side],
            "fill_timestamp": stamp,
            "order_timestamp": stamp,
            "exchange_timestamp": stamp,
        }

    # -- HTTP ------------------------------------------------------------------------------------
    @staticmethod
    def _ok(data: Any, delay: float = 0.0) -> Response:
        return Response.json(200, {"status": "success", "data": data}, delay_seconds=delay)

    @staticmethod
    def _error(status: int, error_type: str, message: str) -> Response:
        return Response.json(status, {"status": "error", "message": message, "data": None, "error_type": error_type})

    def _fault_response(self, fault: Fault) -> Response | None:
        if fault is Fault.HTTP_502:
            # What a gateway in front of the API sends: HTML, not the JSON envelope.
            return Response(502, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if fault.http_status is not None:
            kind = "NetworkException" if fault.http_status in (429, 503) else "GeneralException"
            text = "Too many requests" if fault.http_status == 429 else "Something went wrong"
            return self._error(fault.http_status, kind, text)
        if fault is Fault.TOKEN_EXPIRED:
            return self._error(403, "TokenException", "Incorrect `api_key` or `access_token`.")
        if fault is Fault.TIMEOUT_BEFORE:
            return Response.json(
                504,
                {"status": "error", "message": "Gateway timeout", "error_type": "NetworkException"},
                delay_seconds=self.faults.slow_seconds,
            )
        return None

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        prefix = f"token {self.api_key}:"
        return header.startswith(prefix) and header[len(prefix) :] in self.access_tokens

    def _route(self, request: Request) -> Response:
        with self._lock:
            self.requests.append((request.method, request.path))
        parts = [part for part in request.path.split("/") if part]
        if request.method == "POST" and parts == ["session", "token"]:
            return self._login(request)
        if not self._authorised(request):
            return self._error(403, "TokenException", "Incorrect `api_key` or `access_token`.")
        if parts[:1] == ["orders"] and request.method in ("POST", "PUT", "DELETE"):
            operation = {"POST": "place", "PUT": "modify", "DELETE": "cancel"}[request.method]
        else:
            operation = "read"
        fault = self.faults.take(operation, allowed=_HTTP_FAULTS)
        if fault is not None:
            response = self._fault_response(fault)
            if response is not None:
                return response
        try:
            response = self._dispatch(request, parts, operation)
        except ExchangeError as error:
            return self._error(400, "InputException", str(error))
        if fault is Fault.TIMEOUT_AFTER:
            return Response(response.status, response.body, delay_seconds=self.faults.slow_seconds)
        if fault is Fault.DROP_CONNECTION:
            return Response(0, b"", drop=True)
        return response

    def _login(self, request: Request) -> Response:
        form = request.form
        fault = self.faults.take("login")
        if fault is not None and (response := self._fault_response(fault)) is not None:
            return response
        expected = hashlib.sha256((self.api_key + form.get("request_token", "") + self.api_secret).encode()).hexdigest()
        if form.get("api_key") != self.api_key or form.get("request_token") not in self.request_tokens:
            return self._error(403, "TokenException", "Token is invalid or has expired.")
        if form.get("checksum") != expected:
            return self._error(403, "TokenException", "Invalid checksum")
        self.request_tokens.discard(form["request_token"])
        token = self.issue_access_token()
        now = datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S")
        return self._ok(
            {
                "user_type": "individual",
                "email": "trader@example.com",
                "user_name": "Test Trader",
                "user_shortname": "Trader",
                "broker": "ZERODHA",
                "exchanges": ["NSE", "BSE"],
                "products": ["CNC", "MIS"],
                "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
                "avatar_url": None,
                "user_id": "AB1234",
                "api_key": self.api_key,
                "access_token": token,
                "public_token": secrets.token_hex(8),
                "refresh_token": "",
                "enctoken": "",
                "login_time": now,
                "meta": {},
            }
        )

    def _dispatch(self, request: Request, parts: list[str], operation: str) -> Response:
        exchange = self.exchange
        if operation == "place":
            return self._place(request)
        if operation == "modify":
            form = request.form
            order = exchange.modify(
                parts[2],
                quantity=int(form["quantity"]) if "quantity" in form else None,
                limit_price=Decimal(form["price"]) if "price" in form else None,
                trigger_price=Decimal(form["trigger_price"]) if "trigger_price" in form else None,
                order_type=_ORDER_TYPE_FROM_KITE[form["order_type"]] if "order_type" in form else None,
            )
            return self._ok({"order_id": order.order_id})
        if operation == "cancel":
            return self._ok({"order_id": exchange.cancel(parts[2]).order_id})
        if parts == ["orders"]:
            return self._ok([self.order_payload(order) for order in list(exchange.orders.values())])
        if len(parts) == 2 and parts[0] == "orders":
            known = exchange.orders.get(parts[1])
            if known is None:
                return self._error(400, "InputException", "Couldn't find that `order_id`.")
            return self._ok([self.order_payload(known)])
        if parts == ["trades"]:
            return self._ok([self._trade_payload(i) for i in range(len(exchange.fills))])
        if parts == ["portfolio", "positions"]:
            net = [self._position_payload(position) for position in exchange.positions()]
            return self._ok({"net": net, "day": net})
        if parts == ["user", "profile"]:
            return self._ok({"user_id": "AB1234", "user_type": "individual", "email": "trader@example.com",
                             "user_name": "Test Trader", "user_shortname": "Trader", "broker": "ZERODHA",
                             "exchanges": ["NSE", "BSE"], "products": ["CNC", "MIS"],
                             "order_types": ["MARKET", "LIMIT", "SL", "SL-M"], "avatar_url": None, "meta": {}})
        if parts[:2] == ["user", "margins"]:
            return self._ok(self._margins())
        if parts[:1] == ["instruments"] and (len(parts) <= 2):
            return Response(200, self._instrument_csv(parts[1] if len(parts) == 2 else None), content_type="text/csv")
        if parts[:2] == ["instruments", "historical"]:
            return self._ok({"candles": self._candles(int(parts[2]), parts[3], request.query)})
        return self._error(404, "GeneralException", f"route {request.method} {request.path} not found")

    def _place(self, request: Request) -> Response:
        form = request.form
        key = f"{form.get('exchange')}:{form.get('tradingsymbol')}"
        if not any(f"{item.exchange}:{item.tradingsymbol}" == key for item in self.listings):
            return self._error(400, "InputException", f"Invalid `tradingsymbol` {key}.")
        quantity = int(form.get("quantity", "0"))
        if quantity <= 0:
            return self._error(400, "InputException", "Invalid `quantity`.")
        tag = form.get("tag")
        if tag is not None and (len(tag) > 20 or not tag.isalnum()):
            return self._error(400, "InputException", "Tag length should be less than 20 characters and alphanumeric.")
        fault = self.faults.take("place", allowed=_ORDER_FAULTS)
        order = self.exchange.submit(
            key,
            Side.BUY if form["transaction_type"] == "BUY" else Side.SELL,
            quantity,
            _ORDER_TYPE_FROM_KITE[form["order_type"]],
            ProductType.INTRADAY if form["product"] == "MIS" else ProductType.DELIVERY,
            Decimal(form["price"]) if form.get("price") else None,
            Decimal(form["trigger_price"]) if form.get("trigger_price") else None,
            tag,
            reject_reason="RMS:Margin Exceeds, Required:1000, Available:0" if fault is Fault.REJECT else None,
            delay_ack=fault is Fault.DELAYED_ACK,
            partial=fault is Fault.PARTIAL_FILL,
        )
        return self._ok({"order_id": order.order_id})

    def _position_payload(self, position: Any) -> dict[str, Any]:
        exchange, symbol = position.instrument_key.split(":", 1)
        last = float(self.exchange.prices.get(position.instrument_key, Decimal(0)))
        return {
            "tradingsymbol": symbol,
            "exchange": exchange,
            "instrument_token": self._listing(position.instrument_key).instrument_token,
            "product": KITE_PRODUCT[position.product],
            "quantity": position.quantity,
            "overnight_quantity": 0,
            "multiplier": 1,
            "average_price": float(position.average_price),
            "close_price": 0,
            "last_price": last,
            "value": float(position.sell_value - position.buy_value),
            "pnl": float(position.realized_pnl),
            "m2m": 0,
            "unrealised": 0,
            "realised": float(position.realized_pnl),
            "buy_quantity": position.buy_quantity,
            "buy_value": float(position.buy_value),
            "sell_quantity": position.sell_quantity,
            "sell_value": float(position.sell_value),
            "day_buy_quantity": position.buy_quantity,
            "day_sell_quantity": position.sell_quantity,
        }

    def _margins(self) -> dict[str, Any]:
        used = sum((abs(p.quantity) * p.average_price for p in self.exchange.positions()), Decimal(0))
        cash = Decimal("1000000")
        segment = {
            "enabled": True,
            "net": float(cash - used),
            "available": {
                "adhoc_margin": 0,
                "cash": float(cash),
                "opening_balance": float(cash),
                "live_balance": float(cash - used),
                "collateral": 0,
                "intraday_payin": 0,
            },
            "utilised": {
                "debits": float(used),
                "exposure": 0,
                "m2m_realised": 0,
                "m2m_unrealised": 0,
                "option_premium": 0,
                "payout": 0,
                "span": 0,
                "holding_sales": 0,
                "turnover": 0,
                "liquid_collateral": 0,
                "stock_collateral": 0,
                "delivery": 0,
            },
        }
        return {"equity": segment, "commodity": {**segment, "net": 0.0}}

    def _instrument_csv(self, exchange: str | None) -> bytes:
        lines = [
            "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,"
            "instrument_type,segment,exchange"
        ]
        for item in self.listings:
            if exchange is None or item.exchange == exchange:
                lines.append(
                    f"{item.instrument_token},{item.instrument_token >> 8},{item.tradingsymbol},"
                    f'"{item.name}",0,,0,{item.tick_size},{item.lot_size},EQ,{item.exchange},{item.exchange}'
                )
        return ("\n".join(lines) + "\n").encode()

    def _candles(self, token: int, interval: str, query: dict[str, str]) -> list[list[Any]]:
        step = {"minute": 1, "5minute": 5, "15minute": 15, "60minute": 60, "day": 1440}[interval]
        start = datetime.strptime(query["from"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
        end = datetime.strptime(query["to"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
        candles: list[list[Any]] = []
        at, price = start, 1000.0 + token % 100
        while at < end and len(candles) < 5000:
            if not _in_session(at, step):
                at += timedelta(minutes=step)
                continue
            # crc32, not hash(): the same candles in every process (hash() of text is salted per process).
            open_, close = price, price + ((zlib.crc32(f"{token}{at.isoformat()}".encode()) % 21) - 10) * 0.05
            candles.append(
                [
                    at.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    round(open_, 2),
                    round(max(open_, close) + 0.5, 2),
                    round(min(open_, close) - 0.5, 2),
                    round(close, 2),
                    1000 + len(candles),
                ]
            )
            price, at = close, at + timedelta(minutes=step)
        return candles

    # -- WebSocket ---------------------------------------------------------------------------------
    def _ws_connect(self, connection: ServerConnection) -> bool:
        if connection.request is None:
            return False
        query = dict(part.split("=", 1) for part in connection.request.path.split("?", 1)[-1].split("&") if "=" in part)
        return query.get("api_key") == self.api_key and query.get("access_token") in self.access_tokens

    def _ws_message(self, connection: ServerConnection, message: str | bytes) -> None:
        try:
            payload = json.loads(message)
        except ValueError:
            return
        action, value = payload.get("a"), payload.get("v")
        if action == "subscribe":
            for token in value:
                self.subscriptions.setdefault(int(token), "quote")
        elif action == "mode":
            for token in value[1]:
                self.subscriptions[int(token)] = value[0]
        elif action == "unsubscribe":
            for token in value:
                self.subscriptions.pop(int(token), None)

    def _publish_order(self, order: SimOrder) -> None:
        update = {"type": "order", "id": "", "data": self.order_payload(order)}
        fault = self.faults.take("stream")
        if fault is Fault.DROP_STREAM:
            self._ws.drop_all()
            return
        if fault is Fault.OUT_OF_ORDER_UPDATES:
            self._held_update = update  # sent after the next update
            return
        self._ws.broadcast(json.dumps(update))
        if fault is Fault.DUPLICATE_UPDATES:
            self._ws.broadcast(json.dumps(update))
        if self._held_update is not None:
            held, self._held_update = self._held_update, None
            self._ws.broadcast(json.dumps(held))


_ORDER_TYPE_FROM_KITE = {code: ours for ours, code in KITE_ORDER_TYPE.items()}
_HTTP_FAULTS = frozenset(
    {
        Fault.HTTP_429,
        Fault.HTTP_500,
        Fault.HTTP_502,
        Fault.HTTP_503,
        Fault.TOKEN_EXPIRED,
        Fault.TIMEOUT_BEFORE,
        Fault.TIMEOUT_AFTER,
        Fault.DROP_CONNECTION,
    }
)
_ORDER_FAULTS = frozenset({Fault.REJECT, Fault.DELAYED_ACK, Fault.PARTIAL_FILL})
