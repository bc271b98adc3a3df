"""The Fyers order socket (the SDK's `FyersOrderSocket`) behind the port's order callback.

The SDK hard-codes the socket URL and keeps one instance per process (a singleton); we point the
instance at the configured URL before connecting. Its connect() waits 2 s by design.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fyers_apiv3.FyersWebsocket.order_ws import FyersOrderSocket

from tradeloom.adapters.brokers.fyers import parsing
from tradeloom.adapters.brokers.fyers.config import FyersConfig
from tradeloom.adapters.brokers.updates import OrderUpdateFilter
from tradeloom.broker import OrderCallback

log = logging.getLogger(__name__)


class _OrderSocket(FyersOrderSocket):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's socket, re-reading the access token before every (re)connect: the SDK's reconnects reuse the
    token it was built with, which the daily rollover invalidates (updates then stop for good)."""

    token_source: Callable[[], str] | None = None

    def connect(self) -> None:
        if self.token_source is not None:
            self._FyersOrderSocket__access_token = self.token_source()
        super().connect()


class FyersOrderStream:
    def __init__(
        self,
        config: FyersConfig,
        symbols: parsing.SymbolMap,
        token_source: Callable[[], str],
        on_order: OrderCallback | None,
    ) -> None:
        self._config = config
        self._symbols = symbols
        self._token_source = token_source
        self._on_order = on_order
        self.updates = OrderUpdateFilter()
        self.callback_errors = 0
        self._socket: Any = None

    def start(self) -> None:
        socket = _OrderSocket(
            access_token=f"{self._config.client_id}:{self._token_source()}",
            write_to_file=True,
            log_path=str(self._config.log_dir),
            on_orders=self._orders,
            on_error=self._error,
            on_connect=self._connected,
            on_close=lambda message: log.info("fyers order socket closed"),
            reconnect=True,
        )
        socket._FyersOrderSocket__url = self._config.order_socket_url  # the SDK offers no parameter for it
        socket.token_source = lambda: f"{self._config.client_id}:{self._token_source()}"
        socket.max_reconnect_attempts = 50  # the SDK's own cap (its default gives up after 5)
        self._socket = socket
        socket.connect()

    def _connected(self) -> None:
        self._socket.subscribe(data_type="OnOrders")

    def stop(self) -> None:
        socket = self._socket
        if socket is not None:
            socket.restart_flag = False
            ws = getattr(socket, "_FyersOrderSocket__ws_object", None)
            if ws is not None:
                ws.close()
            socket._FyersOrderSocket__ws_object = None
            self._socket = None

    def _error(self, message: Any) -> None:
        log.warning("fyers order socket error: %s", type(message).__name__)

    def _orders(self, message: dict[str, Any]) -> None:
        try:
            update = parsing.parse_order(message["orders"], self._symbols)
        except Exception:
            self.callback_errors += 1
            log.exception("fyers order socket: unparseable update")
            return
        if not self.updates.accept(update):
            log.info("fyers order socket: stale or duplicate update dropped")
            return
        if self._on_order is not None:
            try:
                self._on_order(update)
            except Exception:
                self.callback_errors += 1
                log.exception("fyers order socket: order callback failed")
