"""KiteTicker in full mode (ticks + 5-level depth) and order updates, behind the port's callbacks.

The SDK runs Twisted's reactor in a daemon thread; a reactor cannot be restarted within a process,
so `stop()` closes the socket and leaves the reactor running, and a later stream reuses it.
On every reconnect the ticker re-reads the access token (daily rollover without a restart).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from kiteconnect import KiteTicker

from tradeloom.adapters.brokers.kite import parsing
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.adapters.brokers.updates import OrderUpdateFilter
from tradeloom.broker import OrderCallback, TickCallback

log = logging.getLogger(__name__)


def _reactor() -> Any:
    # Imported lazily (installing the reactor is a process-wide side effect), and as Any: the
    # pipeline venv that runs mypy has no Twisted.
    return importlib.import_module("twisted.internet.reactor")


class KiteStream:
    def __init__(
        self,
        config: KiteConfig,
        token_source: Callable[[], str],
        keys_by_token: dict[int, str],
        on_order: OrderCallback | None,
        on_tick: TickCallback | None,
    ) -> None:
        self._config = config
        self._token_source = token_source
        self._keys_by_token = keys_by_token
        self._on_order = on_order
        self._on_tick = on_tick
        self.updates = OrderUpdateFilter()
        self._tokens: list[int] = []
        self._ticker: Any = None
        self.callback_errors = 0
        self.connects = 0
        self.restarts = 0  # fresh connections after the SDK gave up reconnecting
        self._stopped = False

    def _socket_url(self, token: str) -> str:
        return f"{self._config.ws_root}?api_key={self._config.api_key}&access_token={token}"

    def start(self, instrument_tokens: list[int]) -> None:
        reactor = _reactor()

        self._tokens = list(instrument_tokens)
        ticker = KiteTicker(
            self._config.api_key,
            self._token_source(),
            root=self._config.ws_root,
            reconnect_max_delay=self._config.reconnect_max_delay_seconds,
            reconnect_max_tries=self._config.reconnect_max_tries,
        )
        ticker.on_ticks = self._ticks
        ticker.on_noreconnect = self._gave_up
        ticker.on_open = self._opened
        ticker.on_close = self._closed
        ticker.on_error = self._errored
        ticker.on_order_update = self._order_update
        self._ticker = ticker
        if reactor.running:
            # The reactor lives in another thread: schedule the connect there (Twisted is not thread-safe).
            reactor.callFromThread(ticker.connect, threaded=True)
        else:
            ticker.connect(threaded=True)

    def stop(self) -> None:
        reactor = _reactor()

        self._stopped = True
        if self._ticker is not None:
            reactor.callFromThread(self._ticker.close)

    def is_connected(self) -> bool:
        return bool(self._ticker is not None and self._ticker.is_connected())

    # -- SDK callbacks (reactor thread): never let an exception escape into Twisted -------------------
    def _opened(self, ws: Any) -> None:
        self.connects += 1
        if self._tokens:
            ws.subscribe(self._tokens)
            ws.set_mode(ws.MODE_FULL, self._tokens)

    def _closed(self, ws: Any, code: Any, reason: Any) -> None:
        factory = getattr(ws, "factory", None)
        if factory is None:
            return
        try:
            factory.setSessionParameters(
                url=self._socket_url(self._token_source()),
                origin=factory.origin,
                protocols=factory.protocols,
                useragent=factory.useragent,
                headers=factory.headers,
                proxy=factory.proxy,
            )
        except Exception:
            self.callback_errors += 1
            log.exception("kite stream: could not refresh the token before reconnecting")

    def _gave_up(self, ws: Any) -> None:
        """The SDK stops reconnecting after its tries (a login that came late, a long outage): without ticks
        there are no bars and no exits, so start a new connection (with the token read afresh) after a pause,
        for as long as the stream is wanted."""
        if self._stopped:
            return
        delay = self._config.reconnect_max_delay_seconds
        log.error("kite stream: reconnection attempts exhausted; a new connection in %s s", delay)
        _reactor().callLater(delay, self._restart)

    def _restart(self) -> None:
        if self._stopped:
            return
        self.restarts += 1
        try:
            self.start(self._tokens)
        except Exception:
            self.callback_errors += 1
            log.exception("kite stream: a new connection could not be started; trying again")
            _reactor().callLater(self._config.reconnect_max_delay_seconds, self._restart)

    def _errored(self, ws: Any, code: Any, reason: Any) -> None:
        log.warning("kite stream error code=%s", code)

    def _ticks(self, ws: Any, ticks: list[dict[str, Any]]) -> None:
        if self._on_tick is None:
            return
        for payload in ticks:
            key = self._keys_by_token.get(int(payload["instrument_token"]))
            if key is None:
                continue
            try:
                self._on_tick(parsing.parse_tick(payload, key))
            except Exception:
                self.callback_errors += 1
                log.exception("kite stream: tick for %s not handled", key)

    def _order_update(self, ws: Any, payload: dict[str, Any]) -> None:
        try:
            update = parsing.parse_order(payload)
        except Exception:
            self.callback_errors += 1
            log.exception("kite stream: unparseable order update")
            return
        if not self.updates.accept(update):
            log.info(
                "kite stream: stale or duplicate update dropped", extra={"broker_order_id": update.broker_order_id}
            )
            return
        if self._on_order is not None:
            try:
                self._on_order(update)
            except Exception:
                self.callback_errors += 1
                log.exception("kite stream: order callback failed")
