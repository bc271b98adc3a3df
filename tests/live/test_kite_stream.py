"""KiteTicker (Twisted) against the fake ticker socket. The reactor cannot restart within a process,
so every test here shares it (it runs in a daemon thread for the rest of the pytest session) and
streams are closed, never stopped."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from executor.login import kite_login
from tests.live.conftest import FAST, IntentFactory
from tradeloom.adapters.brokers.fakes.faults import Fault
from tradeloom.adapters.brokers.fakes.kite_server import FakeKiteServer, TickSpec
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.adapters.brokers.kite.execution import KiteBroker
from tradeloom.broker import BrokerOrder, Tick
from tradeloom.domain import OrderState


def _wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_kite_stream_full_mode_depth_updates_and_token_rollover(
    kite_server: FakeKiteServer, tmp_path: Path, intent: IntentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "kite_token.json"
    kite_login(
        kite_server.api_key,
        SecretStr(kite_server.api_secret),
        kite_server.new_request_token(),
        token_file,
        root=kite_server.root,
    )
    first_token = token_file.read_text()
    config = KiteConfig(
        api_key=kite_server.api_key,
        api_secret=SecretStr(kite_server.api_secret),
        token_file=token_file,
        root=kite_server.root,
        ws_root=kite_server.ws_root,
        **FAST,
    )
    broker = KiteBroker(config)
    ticks: list[Tick] = []
    updates: list[BrokerOrder] = []
    broker.stream(["NSE:INFY", "NSE:TCS"], on_order=updates.append, on_tick=ticks.append)
    try:
        assert _wait_for(lambda: kite_server.subscriptions.get(408065) == "full")
        assert kite_server.subscriptions.get(2953217) == "full"

        # Full-mode packet: prices in paise on the wire, 5+5 depth.
        bids = tuple((Decimal("1000.95") - Decimal("0.05") * i, 10 * (i + 1), i + 1) for i in range(5))
        asks = tuple((Decimal("1001.05") + Decimal("0.05") * i, 7 * (i + 1), i + 2) for i in range(5))
        kite_server.send_ticks(
            [
                TickSpec(408065, Decimal("1001.00"), last_quantity=3, volume=12345, bids=bids, asks=asks),
                TickSpec(999999, Decimal("5")),
            ]
        )  # an unsubscribed token is ignored
        assert _wait_for(lambda: len(ticks) >= 1)
        tick = ticks[0]
        assert (tick.instrument_key, tick.last_price, tick.last_quantity, tick.volume) == ("NSE:INFY", 1001.0, 3, 12345)
        assert [level.price for level in tick.bids] == pytest.approx([1000.95, 1000.90, 1000.85, 1000.80, 1000.75])
        assert [level.quantity for level in tick.asks] == [7, 14, 21, 28, 35]
        assert tick.asks[0].orders == 2 and tick.exchange_at_ns > 0

        # Order updates over the socket: duplicates and a late partial fill are filtered out.
        kite_server.faults.arm("stream", Fault.DUPLICATE_UPDATES, times=2)
        kite_server.faults.arm("stream", Fault.OUT_OF_ORDER_UPDATES)
        kite_server.faults.arm("place", Fault.PARTIAL_FILL)
        placed = broker.place(intent(quantity=10))
        kite_server.exchange.fill_remaining(placed.broker_order_id)
        assert _wait_for(lambda: any(u.state is OrderState.FILLED for u in updates))
        time.sleep(0.2)
        assert [u.state for u in updates if u.broker_order_id == placed.broker_order_id] == [
            OrderState.SENT,
            OrderState.ACKNOWLEDGED,
            OrderState.FILLED,
        ]

        # Daily rollover: the old session dies, the socket drops, the operator logs in again;
        # the ticker reconnects with the token it re-reads from the file.
        kite_server.expire_tokens()
        kite_login(
            kite_server.api_key,
            SecretStr(kite_server.api_secret),
            kite_server.new_request_token(),
            token_file,
            root=kite_server.root,
        )
        assert token_file.read_text() != first_token
        connects = kite_server.stream_connections
        kite_server.drop_streams()
        assert _wait_for(lambda: kite_server.stream_connections > connects, seconds=20)
        assert _wait_for(lambda: broker._stream is not None and broker._stream.is_connected())
        ticks.clear()
        kite_server.send_ticks([TickSpec(2953217, Decimal("3500.5"))])
        assert _wait_for(lambda: len(ticks) >= 1)
        assert ticks[0].instrument_key == "NSE:TCS"
    finally:
        broker.stop_stream()
    # The ticker URL carries the access token: it must not reach any log line.
    for token in (broker.current_token(), first_token.split('"')[3]):
        assert token not in caplog.text


def test_kite_stream_starts_afresh_after_the_sdk_gives_up_reconnecting(
    kite_server: FakeKiteServer, tmp_path: Path
) -> None:
    """The session expires and the operator logs in late: the SDK's reconnects fail until it gives up; the
    stream then starts a new connection with the token read afresh, and ticks flow again."""
    token_file = tmp_path / "kite_token.json"
    kite_login(kite_server.api_key, SecretStr(kite_server.api_secret), kite_server.new_request_token(), token_file,
               root=kite_server.root)
    config = KiteConfig(api_key=kite_server.api_key, api_secret=SecretStr(kite_server.api_secret),
                        token_file=token_file, root=kite_server.root, ws_root=kite_server.ws_root,
                        reconnect_max_tries=1, **FAST)
    broker = KiteBroker(config)
    ticks: list[Tick] = []
    broker.stream(["NSE:INFY"], on_tick=ticks.append)
    try:
        assert _wait_for(lambda: kite_server.subscriptions.get(408065) == "full")
        kite_server.expire_tokens()
        kite_server.drop_streams()
        stream = broker._stream
        assert stream is not None
        assert _wait_for(lambda: not stream.is_connected())
        time.sleep(3.0)  # the SDK's one retry is refused (expired token) and it gives up
        kite_login(kite_server.api_key, SecretStr(kite_server.api_secret), kite_server.new_request_token(),
                   token_file, root=kite_server.root)
        assert _wait_for(lambda: stream.restarts >= 1 and stream.is_connected(), seconds=30)
        kite_server.send_ticks([TickSpec(408065, Decimal("1002.5"))])
        assert _wait_for(lambda: any(t.last_price == 1002.5 for t in ticks))
    finally:
        broker.stop_stream()
