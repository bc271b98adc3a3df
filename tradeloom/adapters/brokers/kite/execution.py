"""`KiteBroker`: the broker port over the real `kiteconnect` SDK (REST)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_exceptions

from tradeloom.adapters.brokers.kite import parsing
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.adapters.brokers.kite.errors import translate
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

T = TypeVar("T")
log = logging.getLogger(__name__)


def token_provider_for(config: KiteConfig) -> TokenProvider:
    if config.access_token is not None:
        return static_token(config.access_token)
    if config.token_file is not None:
        return TokenFile(config.token_file).read
    raise ConfigError("kite: access_token and token_file are both unset; expected one of them")


class KiteBroker:
    """Zerodha Kite Connect behind `tradeloom.broker.Broker` (and the optional market data part)."""

    name = "kite"

    def __init__(self, config: KiteConfig, token_provider: TokenProvider | None = None) -> None:
        self.config = config
        self._token_provider = token_provider or token_provider_for(config)
        self._token = self._token_provider()
        self._client = KiteConnect(
            api_key=config.api_key,
            access_token=self._token.get_secret_value(),
            root=config.root,
            timeout=config.timeout_seconds,
        )
        self.order_bucket = RateLimiter.per_second(config.orders_per_second, config.orders_per_minute)
        self.read_bucket = RateLimiter.per_second(config.reads_per_second)
        self.history_bucket = RateLimiter.per_second(config.history_per_second)
        self._token_lock = threading.Lock()
        self._keys_by_token: dict[int, str] = {}
        self._tokens_by_key: dict[str, int] = {}
        self._stream: Any = None

    def __repr__(self) -> str:
        return f"KiteBroker(api_key={self.config.api_key!r}, root={self.config.root!r})"

    # -- plumbing ---------------------------------------------------------------------------------
    def _refresh_token(self) -> bool:
        """Re-read the session token (the login helper may have written today's); True if it changed."""
        with self._token_lock:
            fresh = self._token_provider()
            if fresh.get_secret_value() == self._token.get_secret_value():
                return False
            self._token = fresh
            self._client.set_access_token(fresh.get_secret_value())
            log.info("kite: access token rolled over")
            return True

    def current_token(self) -> str:
        return self._token.get_secret_value()

    def _call(self, action: str, call: Callable[[], T], bucket: RateLimiter) -> T:
        """One SDK call with the rate limit and error translation; an auth failure re-reads the token
        once (a rejected session means nothing was done, so one more try is not a blind retry)."""
        for attempt in (1, 2):
            bucket.acquire()
            try:
                return call()
            except kite_exceptions.TokenException as error:
                if attempt == 1 and self._refresh_token():
                    continue
                raise translate(error, action) from error
            except Exception as error:
                raise translate(error, action) from error
        raise AssertionError("unreachable")

    def _read(self, action: str, call: Callable[[], T], bucket: RateLimiter | None = None) -> T:
        config = self.config
        return retry_transient(
            lambda: self._call(action, call, bucket or self.read_bucket),
            config.read_retry_attempts,
            config.backoff_seconds,
            config.max_backoff_seconds,
        )

    # -- orders -----------------------------------------------------------------------------------
    def place(self, intent: OrderIntent) -> BrokerOrder:
        params = parsing.order_params(intent, self.config.variety)
        log.info(
            "kite place", extra={"client_order_id": intent.client_order_id, "instrument_key": intent.instrument_key}
        )
        try:
            order_id = self._call("place order", lambda: self._client.place_order(**params), self.order_bucket)
        except TransientBrokerError as error:
            # The request may have reached the venue: look it up by tag instead of sending it again.
            log.warning(
                "kite place: outcome unknown, reconciling by tag",
                extra={"client_order_id": intent.client_order_id, "error": str(error)},
            )
            found = self.order_by_client_id(intent.client_order_id)
            if found is not None:
                return found
            raise PlacementUnconfirmed(
                f"kite place order: client_order_id={intent.client_order_id!r} not found after {error}; "
                "expected to reconcile by client order id before any new attempt"
            ) from error
        return BrokerOrder.just_sent(intent, str(order_id))

    def modify(
        self,
        broker_order_id: str,
        *,
        quantity: int | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        order_type: OrderType | None = None,
    ) -> BrokerOrder:
        params: dict[str, Any] = {"variety": self.config.variety, "order_id": broker_order_id}
        if quantity is not None:
            params["quantity"] = quantity
        if limit_price is not None:
            params["price"] = float(limit_price)
        if stop_price is not None:
            params["trigger_price"] = float(stop_price)
        if order_type is not None:
            params["order_type"] = parsing.ORDER_TYPE_TO_KITE[order_type]
        try:
            self._call("modify order", lambda: self._client.modify_order(**params), self.order_bucket)
        except TransientBrokerError as error:
            # A modify is safe to repeat only after checking it did not land: the venue's view decides.
            log.warning("kite modify: outcome unknown for %s; reading the order back", broker_order_id)
            return modify_outcome(self.order(broker_order_id), error, quantity=quantity, limit_price=limit_price,
                                  stop_price=stop_price, order_type=order_type)
        return self.order(broker_order_id)

    def cancel(self, broker_order_id: str) -> BrokerOrder:
        # Cancelling twice is harmless at the venue, so transient failures are retried.
        def attempt() -> Any:
            return self._call(
                "cancel order",
                lambda: self._client.cancel_order(self.config.variety, broker_order_id),
                self.order_bucket,
            )

        config = self.config
        retry_transient(attempt, config.read_retry_attempts, config.backoff_seconds, config.max_backoff_seconds)
        return self.order(broker_order_id)

    def order(self, broker_order_id: str) -> BrokerOrder:
        history = self._read("order history", lambda: self._client.order_history(broker_order_id))
        if not history:
            raise InputError(f"broker_order_id={broker_order_id!r} has no history at kite; expected a known order")
        return parsing.parse_order(history[-1])

    def orders_today(self) -> list[BrokerOrder]:
        return [parsing.parse_order(item) for item in self._read("orders", self._client.orders)]

    def open_orders(self) -> list[BrokerOrder]:
        return [order for order in self.orders_today() if not order.state.is_terminal]

    def order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        matches = [order for order in self.orders_today() if order.client_order_id == client_order_id]
        if len(matches) > 1:
            log.error("kite: %d orders carry client_order_id %s", len(matches), client_order_id)
        return matches[0] if matches else None

    def positions(self) -> list[BrokerPosition]:
        payload = self._read("positions", self._client.positions)
        return [parsing.parse_position(item) for item in payload["net"]]

    def fills_today(self) -> list[Fill]:
        # Kite's trades carry no tag: trades first, then the orders that name them. An order placed and filled
        # between the two reads is then in the orders and not yet in the trades (the next read has it); read the
        # other way round, its trade came with no client order id, and was recorded so, once, for good.
        trades = self._read("trades", self._client.trades)
        tags = {order.broker_order_id: order.client_order_id or "" for order in self.orders_today()}
        return [parsing.parse_fill(item, tags) for item in trades]

    def funds(self) -> Funds:
        return parsing.parse_funds(self._read("margins", self._client.margins))

    def profile(self) -> dict[str, str]:
        """Who the session belongs to: an authenticated call that proves the access token works today."""
        payload = self._read("profile", self._client.profile)
        return {"user_id": str(payload.get("user_id") or ""), "broker": str(payload.get("broker") or "ZERODHA")}

    # -- market data ------------------------------------------------------------------------------
    def instruments(self, exchange: str | None = None) -> list[Instrument]:
        rows = self._read("instruments", lambda: self._client.instruments(exchange))
        instruments = [parsing.parse_instrument(row) for row in rows]
        for instrument in instruments:
            if instrument.kite_token is not None:
                self._keys_by_token[instrument.kite_token] = instrument.key
                self._tokens_by_key[instrument.key] = instrument.kite_token
        return instruments

    def use_instruments(self, instruments: Iterable[Instrument]) -> None:
        """Take instrument tokens from our own instrument master (no download of Kite's)."""
        for instrument in instruments:
            if instrument.kite_token is not None:
                self._keys_by_token[instrument.kite_token] = instrument.key
                self._tokens_by_key[instrument.key] = instrument.kite_token

    def instrument_token(self, instrument_key: str) -> int:
        if not self._tokens_by_key:
            self.instruments()
        try:
            return self._tokens_by_key[instrument_key]
        except KeyError:
            raise InputError(f"instrument_key={instrument_key!r} is not in kite's instrument master") from None

    def historical_bars(self, instrument_key: str, timeframe: Timeframe, start: datetime, end: datetime) -> BarColumns:
        token = self.instrument_token(instrument_key)
        interval = parsing.TIMEFRAME_TO_KITE[timeframe]
        fmt = "%Y-%m-%d %H:%M:%S"
        # Kite reads from/to in exchange time.
        start_ist, end_ist = start.astimezone(parsing.IST).strftime(fmt), end.astimezone(parsing.IST).strftime(fmt)
        records = self._read(
            "historical data", lambda: self._client.historical_data(token, start_ist, end_ist, interval),
            self.history_bucket,
        )
        return parsing.parse_candles(records, instrument_key)

    def stream(
        self,
        instrument_keys: Sequence[str],
        on_order: OrderCallback | None = None,
        on_tick: TickCallback | None = None,
    ) -> None:
        from tradeloom.adapters.brokers.kite.data import KiteStream

        tokens = [self.instrument_token(key) for key in instrument_keys]
        self._stream = KiteStream(self.config, self._fresh_token, dict(self._keys_by_token), on_order, on_tick)
        self._stream.start(tokens)

    def _fresh_token(self) -> str:
        try:
            self._refresh_token()
        except TokenExpiredError:
            log.error("kite stream: token file unreadable; reconnecting with the old token")
        return self.current_token()

    def stop_stream(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream = None
