"""`FyersBroker`: the broker port over the real `fyers-apiv3` SDK (REST and the order socket).

The SDK never raises: every call returns a dict, ``{"s": "error", ...}`` on failure, and code -99
when no response arrived. Its base URLs are module attributes (`fyersModel.Config.API`/`DATA_API`),
so one process talks to one Fyers endpoint. It sets no HTTP timeout: we mount one on its session.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import requests
from fyers_apiv3 import fyersModel
from requests.adapters import HTTPAdapter

from tradeloom.adapters.brokers.fyers import parsing
from tradeloom.adapters.brokers.fyers.config import FyersConfig
from tradeloom.adapters.brokers.fyers.errors import AUTH_CODES, is_ok, translate
from tradeloom.adapters.brokers.rate_limit import RateLimiter
from tradeloom.adapters.brokers.retry import modify_outcome, retry_transient
from tradeloom.adapters.brokers.tokens import TokenFile, TokenProvider, static_token
from tradeloom.broker import (
    BrokerOrder,
    BrokerPosition,
    Funds,
    OrderCallback,
    PlacementUnconfirmed,
    TickCallback,
    TokenExpiredError,
)
from tradeloom.domain import Fill, Instrument, OrderIntent, OrderType, Timeframe
from tradeloom.errors import ConfigError, InputError, TransientBrokerError
from tradeloom.quality import BarColumns

log = logging.getLogger(__name__)


class _TimeoutAdapter(HTTPAdapter):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


def token_provider_for(config: FyersConfig) -> TokenProvider:
    if config.access_token is not None:
        return static_token(config.access_token)
    if config.token_file is not None:
        return TokenFile(config.token_file).read
    raise ConfigError("fyers: access_token and token_file are both unset; expected one of them")


class FyersBroker:
    """Fyers API v3 behind `tradeloom.broker.Broker`."""

    name = "fyers"

    def __init__(self, config: FyersConfig, token_provider: TokenProvider | None = None) -> None:
        self.config = config
        self.symbols = parsing.SymbolMap(config.symbols)
        self._token_provider = token_provider or token_provider_for(config)
        self._token = self._token_provider()
        self._lock = threading.Lock()
        fyersModel.Config.API = config.api_root
        fyersModel.Config.DATA_API = config.data_root
        config.log_dir.mkdir(parents=True, exist_ok=True)
        self._model = self._new_model()
        self.order_bucket = RateLimiter.per_second(config.orders_per_second, config.orders_per_minute)
        self.read_bucket = RateLimiter.per_second(config.reads_per_second)
        self._stream: Any = None

    def __repr__(self) -> str:
        return f"FyersBroker(client_id={self.config.client_id!r}, api_root={self.config.api_root!r})"

    def _new_model(self) -> Any:
        model = fyersModel.FyersModel(
            client_id=self.config.client_id,
            token=self._token.get_secret_value(),
            is_async=False,
            log_path=str(self.config.log_dir),
        )
        adapter = _TimeoutAdapter(self.config.timeout_seconds)
        model.service.session.mount("http://", adapter)
        model.service.session.mount("https://", adapter)
        return model

    def _refresh_token(self) -> bool:
        with self._lock:
            fresh = self._token_provider()
            if fresh.get_secret_value() == self._token.get_secret_value():
                return False
            self._token = fresh
            self._model.token = fresh.get_secret_value()
            self._model.header = f"{self.config.client_id}:{fresh.get_secret_value()}"
            log.info("fyers: access token rolled over")
            return True

    def current_token(self) -> str:
        return self._token.get_secret_value()

    def _fresh_token(self) -> str:
        """The token as the provider has it now (the order socket asks before every reconnect)."""
        try:
            self._refresh_token()
        except TokenExpiredError:
            log.error("fyers order socket: token unreadable; reconnecting with the old token")
        return self.current_token()

    def _call(self, action: str, call: Callable[[], Any], bucket: RateLimiter, is_order: bool) -> Mapping[str, Any]:
        for attempt in (1, 2):
            bucket.acquire()
            try:
                response = call()
            except Exception as error:
                raise TransientBrokerError(f"fyers {action}: malformed reply ({type(error).__name__})") from error
            if is_ok(response):
                return dict(response)
            if not isinstance(response, Mapping):
                raise TransientBrokerError(f"fyers {action}: reply of type {type(response).__name__}, expected a dict")
            # A dead session means nothing was done: re-read the token once (daily rollover).
            if attempt == 1 and int(response.get("code") or 0) in AUTH_CODES and self._refresh_token():
                continue
            raise translate(response, action, is_order)
        raise AssertionError("unreachable")

    def _read(self, action: str, call: Callable[[], Any]) -> Mapping[str, Any]:
        config = self.config
        return retry_transient(
            lambda: self._call(action, call, self.read_bucket, False),
            config.read_retry_attempts,
            config.backoff_seconds,
            config.max_backoff_seconds,
        )

    # -- orders ---------------------------------------------------------------------------------------
    def place(self, intent: OrderIntent) -> BrokerOrder:
        body = parsing.order_body(intent, self.symbols)
        log.info(
            "fyers place", extra={"client_order_id": intent.client_order_id, "instrument_key": intent.instrument_key}
        )
        try:
            response = self._call("place order", lambda: self._model.place_order(body), self.order_bucket, True)
        except TransientBrokerError as error:
            log.warning(
                "fyers place: outcome unknown, reconciling by tag",
                extra={"client_order_id": intent.client_order_id, "error": str(error)},
            )
            found = self.order_by_client_id(intent.client_order_id)
            if found is not None:
                return found
            raise PlacementUnconfirmed(
                f"fyers place order: client_order_id={intent.client_order_id!r} not found after {error}; "
                "expected to reconcile by client order id before any new attempt"
            ) from error
        return BrokerOrder.just_sent(intent, str(response["id"]))

    def modify(
        self,
        broker_order_id: str,
        *,
        quantity: int | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        order_type: OrderType | None = None,
    ) -> BrokerOrder:
        body: dict[str, Any] = {"id": broker_order_id}
        if quantity is not None:
            body["qty"] = quantity
        if limit_price is not None:
            body["limitPrice"] = float(limit_price)
        if stop_price is not None:
            body["stopPrice"] = float(stop_price)
        if order_type is not None:
            body["type"] = parsing.ORDER_TYPE_TO_FYERS[order_type]
        try:
            self._call("modify order", lambda: self._model.modify_order(body), self.order_bucket, True)
        except TransientBrokerError as error:
            log.warning("fyers modify: outcome unknown for %s; reading the order back", broker_order_id)
            return modify_outcome(self.order(broker_order_id), error, quantity=quantity, limit_price=limit_price,
                                  stop_price=stop_price, order_type=order_type)
        return self.order(broker_order_id)

    def cancel(self, broker_order_id: str) -> BrokerOrder:
        config = self.config
        retry_transient(
            lambda: self._call(
                "cancel order", lambda: self._model.cancel_order({"id": broker_order_id}), self.order_bucket, True
            ),
            config.read_retry_attempts,
            config.backoff_seconds,
            config.max_backoff_seconds,
        )
        return self.order(broker_order_id)

    def order(self, broker_order_id: str) -> BrokerOrder:
        for order in self.orders_today():
            if order.broker_order_id == broker_order_id:
                return order
        raise InputError(f"broker_order_id={broker_order_id!r} is not in fyers' order book; expected a known order")

    def orders_today(self) -> list[BrokerOrder]:
        response = self._read("orders", self._model.orderbook)
        return [parsing.parse_order(item, self.symbols) for item in response.get("orderBook") or []]

    def open_orders(self) -> list[BrokerOrder]:
        return [order for order in self.orders_today() if not order.state.is_terminal]

    def order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        matches = [order for order in self.orders_today() if order.client_order_id == client_order_id]
        if len(matches) > 1:
            log.error("fyers: %d orders carry client_order_id %s", len(matches), client_order_id)
        return matches[0] if matches else None

    def positions(self) -> list[BrokerPosition]:
        response = self._read("positions", self._model.positions)
        return [parsing.parse_position(item, self.symbols) for item in response.get("netPositions") or []]

    def fills_today(self) -> list[Fill]:
        response = self._read("tradebook", self._model.tradebook)
        return [parsing.parse_fill(item, self.symbols) for item in response.get("tradeBook") or []]

    def funds(self) -> Funds:
        return parsing.parse_funds(list(self._read("funds", self._model.funds)["fund_limit"]))

    def profile(self) -> dict[str, str]:
        """Who the session belongs to: an authenticated call that proves the access token works today."""
        data = self._read("profile", self._model.get_profile).get("data") or {}
        return {"user_id": str(data.get("fy_id") or ""), "broker": "FYERS"}

    def use_instruments(self, instruments: Iterable[Instrument]) -> None:
        """Take Fyers symbols from our own instrument master."""
        for instrument in instruments:
            if instrument.fyers_symbol:
                self.symbols.add(instrument.key, instrument.fyers_symbol)

    def symbol_master(self, segment: str = "NSE_CM") -> list[Instrument]:
        """The segment's equities from Fyers' public symbol master CSV (a plain download, no session)."""
        url = f"{self.config.symbol_master_root.rstrip('/')}/{segment}.csv"

        def download() -> str:
            self.read_bucket.acquire()
            try:
                # A plain request: the SDK session must not carry our session header to another host.
                response = requests.get(url, timeout=self.config.timeout_seconds)
            except requests.RequestException as error:
                raise TransientBrokerError(f"fyers symbol master {segment}: {type(error).__name__}") from error
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientBrokerError(f"fyers symbol master {segment}: HTTP {response.status_code}; retry later")
            if response.status_code != 200:
                raise InputError(f"fyers symbol master segment={segment!r}: HTTP {response.status_code} from {url}; "
                                 "expected a segment such as NSE_CM or BSE_CM")
            return str(response.text)

        config = self.config
        text = retry_transient(download, config.read_retry_attempts, config.backoff_seconds, config.max_backoff_seconds)
        instruments = [parsed for row in csv.reader(io.StringIO(text))
                       if (parsed := parsing.parse_master_row(row, self.symbols)) is not None]
        self.use_instruments(instruments)
        return instruments

    # -- market data -----------------------------------------------------------------------------------
    def historical_bars(self, instrument_key: str, timeframe: Timeframe, start: datetime, end: datetime) -> BarColumns:
        query = {
            "symbol": self.symbols.to_fyers(instrument_key),
            "resolution": parsing.TIMEFRAME_TO_FYERS[timeframe],
            "date_format": "0",
            "range_from": str(int(start.timestamp())),
            "range_to": str(int(end.timestamp())),
            "cont_flag": "1",
        }
        response = self._read("history", lambda: self._model.history(query))
        return parsing.parse_candles(list(response.get("candles") or []), instrument_key)

    def stream(
        self,
        instrument_keys: Sequence[str],
        on_order: OrderCallback | None = None,
        on_tick: TickCallback | None = None,
    ) -> None:
        """Order updates from the Fyers order socket. Ticks: the Fyers data socket resolves symbols
        over the internet and is not wired yet (a later step); a tick callback is refused."""
        if on_tick is not None:
            raise ConfigError(
                "fyers stream: on_tick given, but the Fyers data socket is not wired yet; "
                "expected on_tick=None (take ticks from the Kite feed or replay)"
            )
        from tradeloom.adapters.brokers.fyers.data import FyersOrderStream

        self._stream = FyersOrderStream(self.config, self.symbols, self._fresh_token, on_order)
        self._stream.start()

    def stop_stream(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream = None
