"""The real fyers-apiv3 SDK against the fake Fyers server: orders, reads, error dicts, the order socket."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.live.conftest import IntentFactory
from tradeloom.adapters.brokers.fakes.faults import Fault
from tradeloom.adapters.brokers.fakes.fyers_server import FakeFyersServer
from tradeloom.adapters.brokers.fyers import parsing
from tradeloom.adapters.brokers.fyers.config import FyersConfig
from tradeloom.adapters.brokers.fyers.execution import FyersBroker
from tradeloom.broker import Broker, BrokerOrder, PlacementUnconfirmed, TokenExpiredError
from tradeloom.domain import OrderState, OrderType, ProductType, Side, Timeframe
from tradeloom.errors import ConfigError, OrderRejectedError, TransientBrokerError


def _posts(server: FakeFyersServer) -> int:
    return sum(1 for method, path in server.requests if method == "POST" and path == "/api/v3/orders/sync")


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_fyers_tables_round_trip_and_tag_prefix_stripped() -> None:
    for ours in OrderType:
        assert parsing.ORDER_TYPE_FROM_FYERS[parsing.ORDER_TYPE_TO_FYERS[ours]] is ours
    for product in ProductType:
        assert parsing.PRODUCT_FROM_FYERS[parsing.PRODUCT_TO_FYERS[product]] is product
    assert parsing.ORDER_TYPE_TO_FYERS[OrderType.MARKET] == 2 and parsing.SIDE_TO_FYERS[Side.SELL] == -1
    assert parsing.client_tag("1:TLabc") == "TLabc" and parsing.client_tag("TLabc") == "TLabc"
    assert parsing.client_tag("2:Untagged") is None
    assert parsing.order_state(6, 2) is OrderState.PARTIALLY_FILLED and parsing.order_state(4, 0) is OrderState.SENT
    symbols = parsing.SymbolMap({"NSE:NIFTY50": "NSE:NIFTY50-INDEX"})
    assert symbols.to_fyers("NSE:INFY") == "NSE:INFY-EQ" and symbols.from_fyers("NSE:NIFTY50-INDEX") == "NSE:NIFTY50"


def test_fyers_market_order_fill_position_funds(
    fyers: FyersBroker, fyers_server: FakeFyersServer, intent: IntentFactory, fyers_config: FyersConfig
) -> None:
    assert isinstance(fyers, Broker)
    placed = fyers.place(intent(quantity=10))
    found = fyers.order_by_client_id(placed.client_order_id or "")
    assert found is not None and found.state is OrderState.FILLED and found.instrument_key == "NSE:INFY"
    (fill,) = fyers.fills_today()
    assert (fill.client_order_id, fill.quantity, fill.price) == (placed.client_order_id, 10, Decimal("1500"))
    (position,) = fyers.positions()
    assert (position.instrument_key, position.quantity) == ("NSE:INFY", 10)
    assert fyers.funds().available_cash == Decimal("985000")
    # The SDK's log files land in the configured directory, not the working directory.
    assert (fyers_config.log_dir / "fyersApi.log").exists()
    assert not Path("fyersApi.log").exists()


def test_fyers_limit_modify_cancel(fyers: FyersBroker, intent: IntentFactory) -> None:
    placed = fyers.place(intent(side=Side.SELL, order_type=OrderType.LIMIT, limit_price=Decimal("1510")))
    assert fyers.modify(placed.broker_order_id, limit_price=Decimal("1520")).limit_price == Decimal("1520")
    assert fyers.cancel(placed.broker_order_id).state is OrderState.CANCELLED
    with pytest.raises(OrderRejectedError, match="cannot be cancelled"):
        fyers.cancel(placed.broker_order_id)


@pytest.mark.parametrize(
    "fault", [Fault.HTTP_429, Fault.HTTP_500, Fault.HTTP_502, Fault.HTTP_503, Fault.TIMEOUT_BEFORE]
)
def test_fyers_place_fault_not_applied_unconfirmed_without_resend(
    fyers: FyersBroker, fyers_server: FakeFyersServer, intent: IntentFactory, fault: Fault
) -> None:
    fyers_server.faults.arm("place", fault)
    order = intent()
    with pytest.raises(PlacementUnconfirmed):
        fyers.place(order)
    assert _posts(fyers_server) == 1
    assert fyers_server.exchange.count_by_tag()[order.client_order_id] == 0


@pytest.mark.parametrize("fault", [Fault.TIMEOUT_AFTER, Fault.DROP_CONNECTION])
def test_fyers_place_fault_after_apply_found_by_tag(
    fyers: FyersBroker, fyers_server: FakeFyersServer, intent: IntentFactory, fault: Fault
) -> None:
    fyers_server.faults.arm("place", fault)
    order = intent()
    assert fyers.place(order).client_order_id == order.client_order_id
    assert _posts(fyers_server) == 1 and fyers_server.exchange.count_by_tag()[order.client_order_id] == 1


def test_fyers_reject_partial_delayed_ack_states(
    fyers: FyersBroker, fyers_server: FakeFyersServer, intent: IntentFactory
) -> None:
    fyers_server.faults.arm("place", Fault.REJECT)
    fyers_server.faults.arm("place", Fault.PARTIAL_FILL)
    fyers_server.faults.arm("place", Fault.DELAYED_ACK)
    rejected, partial, delayed = (fyers.place(intent()) for _ in range(3))
    assert fyers.order(rejected.broker_order_id).state is OrderState.REJECTED
    assert fyers.order(partial.broker_order_id).filled_quantity == 5
    assert fyers.order(delayed.broker_order_id).state is OrderState.SENT
    fyers_server.exchange.release_pending()
    assert fyers.order(delayed.broker_order_id).state is OrderState.FILLED


def test_fyers_invalid_symbol_rejected_and_reads_retried(
    fyers: FyersBroker, fyers_server: FakeFyersServer, intent: IntentFactory
) -> None:
    with pytest.raises(OrderRejectedError, match="-50"):
        fyers.place(intent(key="NSE:NOPE"))
    fyers_server.faults.arm("read", Fault.HTTP_502, times=2)
    assert fyers.positions() == []
    fyers_server.faults.arm("read", Fault.HTTP_503, times=3)
    with pytest.raises(TransientBrokerError, match="503"):
        fyers.funds()


def test_fyers_cancel_transient_retried(
    fyers: FyersBroker, fyers_server: FakeFyersServer, intent: IntentFactory
) -> None:
    placed = fyers.place(intent(order_type=OrderType.LIMIT, limit_price=Decimal("1400")))
    fyers_server.faults.arm("cancel", Fault.HTTP_503)
    fyers_server.faults.arm("cancel", Fault.TIMEOUT_BEFORE)
    assert fyers.cancel(placed.broker_order_id).state is OrderState.CANCELLED


def test_fyers_token_expired_error_and_rollover(
    fyers_server: FakeFyersServer, fyers_config: FyersConfig, intent: IntentFactory
) -> None:
    tokens = [fyers_config.access_token]
    broker = FyersBroker(fyers_config, token_provider=lambda: tokens[-1])  # type: ignore[arg-type,return-value]
    fyers_server.expire_tokens()
    with pytest.raises(TokenExpiredError, match="-16"):
        broker.orders_today()
    from pydantic import SecretStr

    tokens.append(SecretStr(fyers_server.issue_access_token()))
    assert broker.place(intent()).state is OrderState.SENT


def test_fyers_history_bars_epoch_times(fyers: FyersBroker) -> None:
    start = datetime(2024, 1, 2, 3, 45, tzinfo=UTC)
    bars = fyers.historical_bars("NSE:INFY", Timeframe.MINUTE, start, datetime(2024, 1, 2, 3, 55, tzinfo=UTC))
    assert len(bars) == 10 and bars.bar_at[0] == int(start.timestamp()) * 1_000_000_000


def test_fyers_stream_tick_callback_refused(fyers: FyersBroker) -> None:
    with pytest.raises(ConfigError, match="data socket"):
        fyers.stream(["NSE:INFY"], on_tick=lambda tick: None)


def test_fyers_order_socket_updates_deduplicated_and_ordered(
    fyers: FyersBroker, fyers_server: FakeFyersServer, intent: IntentFactory
) -> None:
    updates: list[BrokerOrder] = []
    fyers.stream(["NSE:INFY"], on_order=updates.append)
    try:
        assert _wait_for(lambda: "orders" in fyers_server.subscribed)
        # SENT and ACKNOWLEDGED arrive twice; the partial fill is held back until after the fill.
        fyers_server.faults.arm("stream", Fault.DUPLICATE_UPDATES, times=2)
        fyers_server.faults.arm("stream", Fault.OUT_OF_ORDER_UPDATES)
        fyers_server.faults.arm("place", Fault.PARTIAL_FILL)
        placed = fyers.place(intent(quantity=10))
        fyers_server.exchange.fill_remaining(placed.broker_order_id)
        assert _wait_for(lambda: any(u.state is OrderState.FILLED for u in updates))
        time.sleep(0.2)
        mine = [u for u in updates if u.broker_order_id == placed.broker_order_id]
        states = [u.state for u in mine]
        assert states == [OrderState.SENT, OrderState.ACKNOWLEDGED, OrderState.FILLED]
        assert mine[-1].client_order_id == placed.client_order_id
        assert fyers._stream.updates.dropped == 3  # two duplicates and one stale partial fill
    finally:
        fyers.stop_stream()


@pytest.mark.parametrize("fault", [Fault.HTTP_503, Fault.HTTP_429])
def test_fyers_modify_lost_and_not_applied_is_an_error_not_a_success(
    fyers: FyersBroker, fyers_server: FakeFyersServer, intent: IntentFactory, fault: Fault
) -> None:
    placed = fyers.place(intent(order_type=OrderType.LIMIT, limit_price=Decimal("1500")))
    fyers_server.faults.arm("modify", fault)
    with pytest.raises(TransientBrokerError, match="not applied"):
        fyers.modify(placed.broker_order_id, quantity=1)
    assert fyers.order(placed.broker_order_id).quantity == placed.quantity  # and the order is as it was


def test_fyers_order_socket_reconnects_with_the_rolled_over_token(tmp_path: Path) -> None:
    """The daily rollover: the session ends, the login helper writes today's token, the socket drops. Its
    reconnect must carry the new token (the SDK's own reuses the one it was built with and is refused), so
    order updates keep coming."""
    from pydantic import SecretStr

    from tradeloom.domain import IntentPurpose, OrderIntent, client_order_id

    with FakeFyersServer() as server:
        tokens = [SecretStr(server.issue_access_token())]
        config = FyersConfig(client_id=server.client_id, secret_key=SecretStr("s"), access_token=tokens[0],
                             api_root=server.api_root, data_root=server.data_root,
                             order_socket_url=server.order_socket_url, log_dir=tmp_path, timeout_seconds=0.5,
                             backoff_seconds=0.01, max_backoff_seconds=0.05, read_retry_attempts=3)
        broker = FyersBroker(config, token_provider=lambda: tokens[-1])
        updates: list[BrokerOrder] = []
        broker.stream(["NSE:INFY"], on_order=updates.append)
        try:
            assert _wait_for(lambda: server._ws.connect_count >= 1)
            server.expire_tokens()
            tokens.append(SecretStr(server.issue_access_token()))
            connects = server._ws.connect_count
            server.drop_streams()
            assert _wait_for(lambda: server._ws.connect_count > connects, seconds=20)
            time.sleep(0.5)  # subscribed again
            order_id = client_order_id("t", "NSE:INFY", 99, IntentPurpose.ENTRY)
            broker.place(OrderIntent(order_id, "NSE:INFY", Side.BUY, 1, OrderType.MARKET, IntentPurpose.ENTRY))
            assert _wait_for(lambda: any(u.client_order_id == order_id for u in updates))
        finally:
            broker.stop_stream()
