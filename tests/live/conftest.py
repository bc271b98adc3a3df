"""Fixtures for the broker tests: fake servers on 127.0.0.1 and the real SDK adapters pointed at them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tradeloom.adapters.brokers.fakes.fyers_server import FakeFyersServer
from tradeloom.adapters.brokers.fakes.kite_server import FakeKiteServer
from tradeloom.adapters.brokers.fyers.config import FyersConfig
from tradeloom.adapters.brokers.fyers.execution import FyersBroker
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.adapters.brokers.kite.execution import KiteBroker
from tradeloom.domain import IntentPurpose, OrderIntent, OrderType, Side, client_order_id

# Short client timeouts so slow-reply faults (1.5 s at the server) trip them quickly.
FAST = {"timeout_seconds": 0.5, "backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "read_retry_attempts": 3}


@pytest.fixture
def kite_server() -> Iterator[FakeKiteServer]:
    with FakeKiteServer() as server:
        yield server


@pytest.fixture
def kite_config(kite_server: FakeKiteServer, tmp_path: Path) -> KiteConfig:
    return KiteConfig(
        api_key=kite_server.api_key,
        api_secret=SecretStr(kite_server.api_secret),
        access_token=SecretStr(kite_server.issue_access_token()),
        root=kite_server.root,
        ws_root=kite_server.ws_root,
        **FAST,
    )


@pytest.fixture
def kite(kite_config: KiteConfig) -> KiteBroker:
    return KiteBroker(kite_config)


@pytest.fixture
def fyers_server() -> Iterator[FakeFyersServer]:
    with FakeFyersServer() as server:
        yield server


@pytest.fixture
def fyers_config(fyers_server: FakeFyersServer, tmp_path: Path) -> FyersConfig:
    return FyersConfig(
        client_id=fyers_server.client_id,
        secret_key=SecretStr("fyers_secret_do_not_log"),
        access_token=SecretStr(fyers_server.issue_access_token()),
        api_root=fyers_server.api_root,
        data_root=fyers_server.data_root,
        order_socket_url=fyers_server.order_socket_url,
        log_dir=tmp_path / "fyers-logs",
        **FAST,
    )


@pytest.fixture
def fyers(fyers_config: FyersConfig) -> FyersBroker:
    return FyersBroker(fyers_config)


IntentFactory = Callable[..., OrderIntent]


@pytest.fixture
def intent() -> IntentFactory:
    counter = iter(range(1, 10_000))

    def make(
        side: Side = Side.BUY,
        quantity: int = 10,
        order_type: OrderType = OrderType.MARKET,
        key: str = "NSE:INFY",
        **prices: object,
    ) -> OrderIntent:
        cid = client_order_id("test", key, next(counter), IntentPurpose.ENTRY)
        return OrderIntent(cid, key, side, quantity, order_type, IntentPurpose.ENTRY, **prices)  # type: ignore[arg-type]

    return make
