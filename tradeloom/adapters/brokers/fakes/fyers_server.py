"""A fake Fyers API v3 server: REST under `/api/v3` and `/data`, and the order WebSocket.

Bodies follow the Fyers v3 documentation: ``{"s": "ok", "code": ..., "message": ..., ...}`` on
success and ``{"s": "error", "code": <negative>, "message": ...}`` on failure; order status codes
1 cancelled, 2 traded, 4 transit, 5 rejected, 6 pending, 7 expired; order types 1 limit, 2 market,
3 stop (SL-M), 4 stop-limit. The order socket pushes ``{"s": "ok", "orders": {...}}`` with the raw
field names that the SDK's `map.json` translates.
"""

from __future__ import annotations

import json
import threading
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
FYERS_TYPE = {OrderType.LIMIT: 1, OrderType.MARKET: 2, OrderType.STOP: 3, OrderType.STOP_LIMIT: 4}
FYERS_STATUS = {
    OrderState.CANCELLED: 1,
    OrderState.FILLED: 2,
    OrderState.SENT: 4,
    OrderState.REJECTED: 5,
    OrderState.ACKNOWLEDGED: 6,
    OrderState.PARTIALLY_FILLED: 6,
    OrderState.EXPIRED: 7,
}
FYERS_PRODUCT = {ProductType.INTRADAY: "INTRADAY", ProductType.DELIVERY: "CNC"}
AUTH_ERROR = {"s": "error", "code": -16, "message": "Could not authenticate the user"}


def _stamp(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, IST).strftime("%d-%b-%Y %H:%M:%S")


class FakeFyersServer:
    def __init__(self, client_id: str = "XY12345-100", prices: dict[str, Decimal] | None = None) -> None:
        self.client_id = client_id
        self.exchange = FakeExchange(
            prices or {"NSE:INFY-EQ": Decimal("1500"), "NSE:SBIN-EQ": Decimal("600")}, id_prefix="2401010000"
        )
        self.faults = FaultSwitchboard()
        self.access_tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self._http = HttpServerThread(self._route)
        self._ws = WebSocketServerThread(self._ws_connect, self._ws_message)
        self._held: str | None = None
        self._lock = threading.Lock()
        self.exchange.listeners.append(self._publish_order)
        self.http_port = 0
        self.ws_port = 0
        self.subscribed: list[str] = []
        # Symbol-master overrides by Fyers symbol (tests change them to see a refresh update rows).
        self.tick_sizes: dict[str, str] = {}
        self.lot_sizes: dict[str, int] = {}

    def start(self) -> FakeFyersServer:
        self.http_port = self._http.start()
        self.ws_port = self._ws.start()
        return self

    def stop(self) -> None:
        self._http.stop()
        self._ws.stop()

    def __enter__(self) -> FakeFyersServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def api_root(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v3"

    @property
    def data_root(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/data"

    @property
    def symbol_master_root(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/sym_details"

    @property
    def order_socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/trade/v3"

    def issue_access_token(self) -> str:
        import secrets

        token = "fat_" + secrets.token_hex(12)
        self.access_tokens.add(token)
        return token

    def expire_tokens(self) -> None:
        self.access_tokens.clear()

    def drop_streams(self) -> None:
        self._ws.drop_all()

    # -- wire formats ------------------------------------------------------------------------------
    def order_payload(self, order: SimOrder) -> dict[str, Any]:
        symbol = order.instrument_key.split(":", 1)[1]
        return {
            "clientId": self.client_id,
            "id": order.order_id,
            "exchOrdId": f"11{order.order_id[-8:]}",
            "qty": order.quantity,
            "remainingQuantity": order.quantity - order.filled_quantity,
            "filledQty": order.filled_quantity,
            "status": FYERS_STATUS[order.state],
            "slNo": int(order.order_id[-5:]),
            "message": order.message,
            "segment": 10,
            "limitPrice": float(order.limit_price or 0),
            "stopPrice": float(order.trigger_price or 0),
            "productType": FYERS_PRODUCT[order.product],
            "type": FYERS_TYPE[order.order_type],
            "side": int(order.side),
            "disclosedQty": 0,
            "orderValidity": "DAY",
            "orderDateTime": _stamp(order.created_ns),
            "parentId": "",
            "tradedPrice": float(order.average_price or 0),
            "source": "API",
            "fyToken": "10100000001594",
            "offlineOrder": False,
            "pan": "",
            "exchange": 10,
            "instrument": 0,
            "symbol": order.instrument_key,
            "ex_sym": symbol.removesuffix("-EQ"),
            "description": symbol,
            "orderNumStatus": f"{order.order_id}:{FYERS_STATUS[order.state]}",
            "orderTag": order.tag or "",
            "takeProfit": 0,
            "stopLoss": 0,
        }

    def _socket_order(self, order: SimOrder) -> dict[str, Any]:
        payload = self.order_payload(order)
        return {
            "client_id": payload["clientId"],
            "id": payload["id"],
            "id_exchange": payload["exchOrdId"],
            "qty": payload["qty"],
            "qty_remaining": payload["remainingQuantity"],
            "qty_filled": payload["filledQty"],
            "price_limit": payload["limitPrice"],
            "price_stop": payload["stopPrice"],
            "price_traded": payload["tradedPrice"],
            "ord_type": payload["type"],
            "symbol": payload["symbol"],
            "oms_msg": payload["message"],
            "time_oms": payload["orderDateTime"],
            "validity": "DAY",
            "product_type": payload["productType"],
            "tran_side": payload["side"],
            "org_ord_status": payload["status"],
            "ordertag": payload["orderTag"],
            "exchange": 10,
            "segment": 10,
        }

    def _trade_payload(self, index: int) -> dict[str, Any]:
        fill = self.exchange.fills[index]
        order = self.exchange.orders[fill.order_id]
        return {
            "clientId": self.client_id,
            "orderDateTime": _stamp(fill.at_ns),
            "orderNumber": fill.order_id,
            "exchangeOrderNo": f"11{fill.order_id[-8:]}",
            "exchange": 10,
            "side": int(fill.side),
            "segment": 10,
            "orderType": FYERS_TYPE[order.order_type],
            "fyToken": "10100000001594",
            "productType": FYERS_PRODUCT[fill.product],
            "tradedQty": fill.quantity,
            "tradePrice": float(fill.price),
            "tradeValue": float(fill.price * fill.quantity),
            "tradeNumber": fill.fill_id,
            "row": index,
            "symbol": fill.instrument_key,
            "orderTag": fill.tag or "",
        }

    # -- HTTP ----------------------------------------------------------------------------------------
    def _fault_response(self, fault: Fault) -> Response | None:
        if fault is Fault.HTTP_502:
            return Response(502, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if fault.http_status == 429:
            return Response.json(429, {"s": "error", "code": 429, "message": "request limit reached"})
        if fault.http_status is not None:
            return Response.json(
                fault.http_status, {"s": "error", "code": fault.http_status, "message": "Internal server error"}
            )
        if fault is Fault.TOKEN_EXPIRED:
            return Response.json(401, AUTH_ERROR)
        if fault is Fault.TIMEOUT_BEFORE:
            return Response.json(
                504, {"s": "error", "code": 504, "message": "timeout"}, delay_seconds=self.faults.slow_seconds
            )
        return None

    def _route(self, request: Request) -> Response:
        with self._lock:
            self.requests.append((request.method, request.path))
        if request.path.startswith("/sym_details/"):
            # The symbol master is public: no session header.
            return self._symbol_master(request.path.rsplit("/", 1)[-1])
        header = request.headers.get("authorization", "")
        if not (header.startswith(self.client_id + ":") and header.split(":", 1)[1] in self.access_tokens):
            return Response.json(401, AUTH_ERROR)
        is_order_op = request.path == "/api/v3/orders/sync" and request.method in ("POST", "PATCH", "DELETE")
        operation = {"POST": "place", "PATCH": "modify", "DELETE": "cancel"}[request.method] if is_order_op else "read"
        fault = self.faults.take(operation, allowed=_HTTP_FAULTS)
        if fault is not None and (early := self._fault_response(fault)) is not None:
            return early
        try:
            response = self._dispatch(request, operation)
        except ExchangeError as error:
            response = Response.json(400, {"s": "error", "code": -52, "message": str(error)})
        if fault is Fault.TIMEOUT_AFTER:
            return Response(response.status, response.body, delay_seconds=self.faults.slow_seconds)
        if fault is Fault.DROP_CONNECTION:
            return Response(0, b"", drop=True)
        return response

    def _dispatch(self, request: Request, operation: str) -> Response:
        exchange, body = self.exchange, request.json_body or {}
        if operation == "place":
            return self._place(body)
        if operation == "modify":
            order = exchange.modify(
                str(body["id"]),
                quantity=body.get("qty"),
                limit_price=Decimal(str(body["limitPrice"])) if body.get("limitPrice") else None,
                trigger_price=Decimal(str(body["stopPrice"])) if body.get("stopPrice") else None,
                order_type=_TYPE_FROM_FYERS[body["type"]] if body.get("type") else None,
            )
            return Response.json(
                200, {"s": "ok", "code": 1102, "message": "Successfully modified order", "id": order.order_id}
            )
        if operation == "cancel":
            order = exchange.cancel(str(body["id"]))
            return Response.json(
                200, {"s": "ok", "code": 1103, "message": "Successfully cancelled order", "id": order.order_id}
            )
        path = request.path
        if path == "/api/v3/orders":
            orders = [self.order_payload(order) for order in list(exchange.orders.values())]
            if "id" in request.query:
                orders = [order for order in orders if order["id"] == request.query["id"]]
            return Response.json(200, {"s": "ok", "code": 200, "message": "", "orderBook": orders})
        if path == "/api/v3/tradebook":
            trades = [self._trade_payload(i) for i in range(len(exchange.fills))]
            return Response.json(200, {"s": "ok", "code": 200, "message": "", "tradeBook": trades})
        if path == "/api/v3/positions":
            return Response.json(
                200,
                {
                    "s": "ok",
                    "code": 200,
                    "message": "",
                    "netPositions": self._positions(),
                    "overall": {"count_open": 0, "count_total": 0, "pl_realized": 0, "pl_total": 0, "pl_unrealized": 0},
                },
            )
        if path == "/api/v3/profile":
            return Response.json(200, {"s": "ok", "code": 200, "message": "", "data": {
                "fy_id": "XY1234", "name": "TEST TRADER", "display_name": None, "email_id": "trader@example.com",
                "PAN": "ABCDE1234F", "pin_change_date": "", "pwd_change_date": None, "mobile_number": "9999999999",
                "totp": False, "pwd_to_expire": 90, "ddpi_enabled": False, "mtf_enabled": False}})
        if path == "/api/v3/funds":
            return Response.json(200, {"s": "ok", "code": 200, "message": "", "fund_limit": self._funds()})
        if path == "/data/history":
            return Response.json(200, {"s": "ok", "candles": self._candles(request.query)})
        return Response.json(404, {"s": "error", "code": -404, "message": f"{request.method} {path} not found"})

    def _place(self, body: dict[str, Any]) -> Response:
        symbol = str(body.get("symbol", ""))
        if symbol not in self.exchange.prices:
            return Response.json(400, {"s": "error", "code": -50, "message": f"Invalid symbol {symbol}"})
        if int(body.get("qty", 0)) <= 0:
            return Response.json(400, {"s": "error", "code": -50, "message": "Invalid quantity"})
        fault = self.faults.take("place", allowed=_ORDER_FAULTS)
        order = self.exchange.submit(
            symbol,
            Side(int(body["side"])),
            int(body["qty"]),
            _TYPE_FROM_FYERS[int(body["type"])],
            ProductType.INTRADAY if body.get("productType") == "INTRADAY" else ProductType.DELIVERY,
            Decimal(str(body["limitPrice"])) if body.get("limitPrice") else None,
            Decimal(str(body["stopPrice"])) if body.get("stopPrice") else None,
            body.get("orderTag") or None,
            reject_reason="RMS: insufficient funds" if fault is Fault.REJECT else None,
            delay_ack=fault is Fault.DELAYED_ACK,
            partial=fault is Fault.PARTIAL_FILL,
        )
        return Response.json(
            200,
            {
                "s": "ok",
                "code": 1101,
                "message": f"Order submitted successfully. Your Order Ref. No.{order.order_id}",
                "id": order.order_id,
            },
        )

    def _positions(self) -> list[dict[str, Any]]:
        rows = []
        for position in self.exchange.positions():
            rows.append(
                {
                    "symbol": position.instrument_key,
                    "id": f"{position.instrument_key}-{FYERS_PRODUCT[position.product]}",
                    "netQty": position.quantity,
                    "qty": abs(position.quantity),
                    "avgPrice": float(position.average_price),
                    "netAvg": float(position.average_price),
                    "side": 1 if position.quantity > 0 else (-1 if position.quantity < 0 else 0),
                    "productType": FYERS_PRODUCT[position.product],
                    "realized_profit": float(position.realized_pnl),
                    "unrealized_profit": 0.0,
                    "pl": float(position.realized_pnl),
                    "buyQty": position.buy_quantity,
                    "sellQty": position.sell_quantity,
                    "buyAvg": 0.0,
                    "sellAvg": 0.0,
                    "ltp": float(self.exchange.prices[position.instrument_key]),
                    "segment": 10,
                    "exchange": 10,
                }
            )
        return rows

    def _funds(self) -> list[dict[str, Any]]:
        used = float(sum((abs(p.quantity) * p.average_price for p in self.exchange.positions()), Decimal(0)))
        total = 1_000_000.0
        return [
            {"id": 1, "title": "Total Balance", "equityAmount": total, "commodityAmount": 0},
            {"id": 2, "title": "Utilized Amount", "equityAmount": used, "commodityAmount": 0},
            {"id": 10, "title": "Available Balance", "equityAmount": total - used, "commodityAmount": 0},
        ]

    def _candles(self, query: dict[str, str]) -> list[list[float]]:
        step = 86400 if query.get("resolution") in ("D", "1D", "Day") else int(query.get("resolution", "1")) * 60
        start, end = int(query["range_from"]), int(query["range_to"])
        candles, price = [], 1500.0
        for at in range(start - start % step, end, step):
            local = datetime.fromtimestamp(at, IST)
            if local.weekday() >= 5 or (step < 86400 and not time(9, 15) <= local.time() < time(15, 30)):
                continue  # NSE hours only, as the real history serves them
            close = price + ((at // step) % 7 - 3) * 0.05
            candles.append([at, price, max(price, close) + 0.5, min(price, close) - 0.5, close, 100.0])
            price = close
        return candles[:5000]

    def _symbol_master(self, name: str) -> Response:
        """`NSE_CM.csv` in Fyers' column order (no header): the equities this fake trades."""
        if name != "NSE_CM.csv":
            return Response(404, b"Not Found", content_type="text/plain")
        lines = []
        for number, symbol in enumerate(sorted(self.exchange.prices), start=1):
            ticker = symbol.split(":", 1)[1]
            scrip = 1000 + number
            lines.append(
                f"10100000{scrip:06d},{ticker.removesuffix('-EQ')} LIMITED,0,{self.lot_sizes.get(symbol, 1)},"
                f"{self.tick_sizes.get(symbol, '0.05')},INE{scrip:06d}01,0915-1530|1815-1915:,2024-01-01,,{symbol},"
                f"10,10,{scrip},{ticker.removesuffix('-EQ')},{scrip},-1.0,XX,10100000{scrip:06d},None,0,0.0"
            )
        return Response(200, ("\n".join(lines) + "\n").encode(), content_type="text/csv")

    # -- order socket -------------------------------------------------------------------------------
    def _ws_connect(self, connection: ServerConnection) -> bool:
        if connection.request is None:
            return False
        header = connection.request.headers.get("authorization", "")
        return header.startswith(self.client_id + ":") and header.split(":", 1)[1] in self.access_tokens

    def _ws_message(self, connection: ServerConnection, message: str | bytes) -> None:
        if message == "ping":
            connection.send("pong")
            return
        try:
            payload = json.loads(message)
        except ValueError:
            return
        if payload.get("T") == "SUB_ORD" and payload.get("SUB_T") == 1:
            self.subscribed.extend(payload.get("SLIST", []))

    def _publish_order(self, order: SimOrder) -> None:
        message = json.dumps({"s": "ok", "orders": self._socket_order(order)})
        fault = self.faults.take("stream")
        if fault is Fault.DROP_STREAM:
            self._ws.drop_all()
            return
        if fault is Fault.OUT_OF_ORDER_UPDATES:
            self._held = message
            return
        self._ws.broadcast(message)
        if fault is Fault.DUPLICATE_UPDATES:
            self._ws.broadcast(message)
        if self._held is not None:
            held, self._held = self._held, None
            self._ws.broadcast(held)


_TYPE_FROM_FYERS = {code: ours for ours, code in FYERS_TYPE.items()}
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
