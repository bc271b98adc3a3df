"""The real kiteconnect SDK against the fake Kite server: orders, reads, login, and the fault matrix."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from executor.login import kite_login
from executor.oms import Lineage, ManagedOrder, OrderManager
from tests.live.conftest import FAST, IntentFactory
from tests.live.test_rate_limit_and_updates import FakeClock
from tradeloom.adapters.brokers.fakes.faults import Fault
from tradeloom.adapters.brokers.fakes.kite_server import FakeKiteServer
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.adapters.brokers.kite.execution import KiteBroker
from tradeloom.adapters.brokers.rate_limit import RateLimiter
from tradeloom.broker import Broker, MarketDataBroker, PlacementUnconfirmed, TokenExpiredError
from tradeloom.domain import (
    Fill,
    IntentPurpose,
    OrderIntent,
    OrderState,
    OrderType,
    ProductType,
    Side,
    Timeframe,
    client_order_id,
)
from tradeloom.errors import OrderRejectedError, TransientBrokerError


def _posts(server: FakeKiteServer) -> int:
    return sum(1 for method, path in server.requests if method == "POST" and path.startswith("/orders"))


def test_kite_broker_satisfies_both_ports(kite: KiteBroker) -> None:
    assert isinstance(kite, Broker)
    assert isinstance(kite, MarketDataBroker)


def test_kite_market_order_fill_position_and_funds_reported(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory
) -> None:
    placed = kite.place(intent(quantity=10))
    assert placed.state is OrderState.SENT
    order = kite.order_by_client_id(placed.client_order_id or "")
    assert order is not None and order.state is OrderState.FILLED and order.filled_quantity == 10
    (fill,) = kite.fills_today()
    assert (fill.client_order_id, fill.quantity, fill.price) == (placed.client_order_id, 10, Decimal("1000"))
    (position,) = kite.positions()
    assert (position.instrument_key, position.quantity) == ("NSE:INFY", 10)
    funds = kite.funds()
    assert funds.used_margin == Decimal("10000") and funds.available_cash == Decimal("990000")
    assert kite_server.exchange.count_by_tag()[placed.client_order_id or ""] == 1


def test_kite_limit_rests_modify_then_cancel(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory
) -> None:
    placed = kite.place(intent(side=Side.SELL, order_type=OrderType.LIMIT, limit_price=Decimal("1010")))
    assert [o.broker_order_id for o in kite.open_orders()] == [placed.broker_order_id]
    modified = kite.modify(placed.broker_order_id, limit_price=Decimal("1020"), quantity=12)
    assert (modified.limit_price, modified.quantity, modified.state) == (Decimal("1020"), 12, OrderState.ACKNOWLEDGED)
    cancelled = kite.cancel(placed.broker_order_id)
    assert cancelled.state is OrderState.CANCELLED
    assert kite.open_orders() == []


def test_kite_stop_order_triggers_when_price_crosses(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory
) -> None:
    placed = kite.place(intent(side=Side.SELL, order_type=OrderType.STOP, stop_price=Decimal("990")))
    assert kite.order(placed.broker_order_id).state is OrderState.ACKNOWLEDGED
    kite_server.exchange.set_price("NSE:INFY", Decimal("989"))
    filled = kite.order(placed.broker_order_id)
    assert filled.state is OrderState.FILLED and filled.average_price == Decimal("989")


@pytest.mark.parametrize(
    "fault", [Fault.HTTP_429, Fault.HTTP_500, Fault.HTTP_502, Fault.HTTP_503, Fault.TIMEOUT_BEFORE]
)
def test_kite_place_fault_not_applied_unconfirmed_without_resend(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory, fault: Fault
) -> None:
    kite_server.faults.arm("place", fault)
    order = intent()
    with pytest.raises(PlacementUnconfirmed):
        kite.place(order)
    assert _posts(kite_server) == 1  # reconciled by tag, never re-sent
    assert kite_server.exchange.count_by_tag()[order.client_order_id] == 0


@pytest.mark.parametrize("fault", [Fault.TIMEOUT_AFTER, Fault.DROP_CONNECTION])
def test_kite_place_fault_after_apply_found_by_tag(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory, fault: Fault
) -> None:
    kite_server.faults.arm("place", fault)
    order = intent()
    placed = kite.place(order)
    assert placed.client_order_id == order.client_order_id and placed.state is OrderState.FILLED
    assert _posts(kite_server) == 1
    assert kite_server.exchange.count_by_tag()[order.client_order_id] == 1


def test_kite_place_rejection_reported_as_rejected_state(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory
) -> None:
    kite_server.faults.arm("place", Fault.REJECT)
    placed = kite.place(intent())
    found = kite.order(placed.broker_order_id)
    assert found.state is OrderState.REJECTED and "RMS" in found.status_message


def test_kite_place_invalid_symbol_order_rejected_error(kite: KiteBroker, intent: IntentFactory) -> None:
    with pytest.raises(OrderRejectedError, match="tradingsymbol"):
        kite.place(intent(key="NSE:NOPE"))


def test_kite_delayed_ack_sent_until_released(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory
) -> None:
    kite_server.faults.arm("place", Fault.DELAYED_ACK)
    placed = kite.place(intent())
    assert kite.order(placed.broker_order_id).state is OrderState.SENT
    kite_server.exchange.release_pending()
    assert kite.order(placed.broker_order_id).state is OrderState.FILLED


def test_kite_partial_fill_then_rest_two_fills(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory
) -> None:
    kite_server.faults.arm("place", Fault.PARTIAL_FILL)
    placed = kite.place(intent(quantity=10))
    partial = kite.order(placed.broker_order_id)
    assert (partial.state, partial.filled_quantity) == (OrderState.PARTIALLY_FILLED, 5)
    kite_server.exchange.fill_remaining(placed.broker_order_id)
    assert kite.order(placed.broker_order_id).state is OrderState.FILLED
    assert [fill.quantity for fill in kite.fills_today()] == [5, 5]


@pytest.mark.parametrize("fault", [Fault.HTTP_503, Fault.HTTP_502, Fault.TIMEOUT_BEFORE, Fault.HTTP_429])
def test_kite_cancel_transient_fault_retried_and_cancelled(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory, fault: Fault
) -> None:
    placed = kite.place(intent(order_type=OrderType.LIMIT, limit_price=Decimal("900")))
    kite_server.faults.arm("cancel", fault)
    assert kite.cancel(placed.broker_order_id).state is OrderState.CANCELLED


def test_kite_cancel_filled_order_rejected_error(kite: KiteBroker, intent: IntentFactory) -> None:
    placed = kite.place(intent())
    with pytest.raises(OrderRejectedError, match="cannot be cancelled"):
        kite.cancel(placed.broker_order_id)


@pytest.mark.parametrize("fault", [Fault.HTTP_500, Fault.TIMEOUT_BEFORE, Fault.DROP_CONNECTION])
def test_kite_modify_transient_fault_returns_venue_view(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory, fault: Fault
) -> None:
    placed = kite.place(intent(order_type=OrderType.LIMIT, limit_price=Decimal("900")))
    kite_server.faults.arm("modify", fault)
    if fault is Fault.DROP_CONNECTION:  # the venue applied it before the connection dropped: the order shows it
        seen = kite.modify(placed.broker_order_id, limit_price=Decimal("905"))
        assert seen.limit_price == Decimal("905") and seen.state is OrderState.ACKNOWLEDGED
        return
    with pytest.raises(TransientBrokerError, match=r"not applied .*limit_price Decimal\('900(\.0)?'\)"):
        kite.modify(placed.broker_order_id, limit_price=Decimal("905"))  # not applied: never reported as done
    assert kite.order(placed.broker_order_id).limit_price == Decimal("900")


def test_kite_read_transient_faults_retried_then_bounded(kite: KiteBroker, kite_server: FakeKiteServer) -> None:
    kite_server.faults.arm("read", Fault.HTTP_503, times=2)
    assert kite.orders_today() == []
    kite_server.faults.arm("read", Fault.HTTP_500, times=FAST["read_retry_attempts"])  # type: ignore[arg-type]
    with pytest.raises(TransientBrokerError, match="HTTP 500"):
        kite.positions()


def test_kite_token_expired_static_token_token_expired_error(
    kite: KiteBroker, kite_server: FakeKiteServer, intent: IntentFactory
) -> None:
    kite_server.expire_tokens()
    order = intent()
    with pytest.raises(TokenExpiredError, match="login kite"):
        kite.place(order)
    assert kite_server.exchange.count_by_tag()[order.client_order_id] == 0


def test_kite_daily_rollover_token_file_reread_without_restart(
    kite_server: FakeKiteServer, tmp_path: Path, intent: IntentFactory
) -> None:
    token_file = tmp_path / "secrets" / "kite_token.json"
    kite_login(
        kite_server.api_key,
        SecretStr(kite_server.api_secret),
        kite_server.new_request_token(),
        token_file,
        root=kite_server.root,
    )
    assert token_file.stat().st_mode & 0o777 == 0o600
    config = KiteConfig(
        api_key=kite_server.api_key,
        api_secret=SecretStr(kite_server.api_secret),
        token_file=token_file,
        root=kite_server.root,
        **FAST,
    )
    broker = KiteBroker(config)
    assert broker.orders_today() == []
    kite_server.expire_tokens()  # the morning session end
    with pytest.raises(TokenExpiredError):
        broker.orders_today()
    kite_login(
        kite_server.api_key,
        SecretStr(kite_server.api_secret),
        kite_server.new_request_token(),
        token_file,
        root=kite_server.root,
    )
    placed = broker.place(intent())  # the same broker object picks up the new token
    assert kite_server.exchange.count_by_tag()[placed.client_order_id or ""] == 1


def test_kite_login_wrong_secret_token_expired_error(kite_server: FakeKiteServer, tmp_path: Path) -> None:
    with pytest.raises(TokenExpiredError, match="checksum"):
        kite_login(
            kite_server.api_key,
            SecretStr("wrong"),
            kite_server.new_request_token(),
            tmp_path / "t.json",
            root=kite_server.root,
        )
    assert not (tmp_path / "t.json").exists()


def test_kite_instruments_and_history_bars_parsed(kite: KiteBroker) -> None:
    instruments = {item.key: item for item in kite.instruments()}
    assert instruments["NSE:INFY"].kite_token == 408065 and instruments["NSE:INFY"].tick_size == Decimal("0.05")
    start = datetime(2024, 1, 2, 3, 45, tzinfo=UTC)  # 09:15 IST
    bars = kite.historical_bars("NSE:INFY", Timeframe.MINUTE, start, datetime(2024, 1, 2, 4, 15, tzinfo=UTC))
    assert len(bars) == 30
    assert bars.bar_at[0] == int(start.timestamp()) * 1_000_000_000
    assert np.all(np.diff(bars.bar_at) == 60 * 1_000_000_000)
    assert np.all(bars.high >= np.maximum(bars.open, bars.close)) and np.all(
        bars.low <= np.minimum(bars.open, bars.close)
    )
    assert set(bars.instrument_key) == {"NSE:INFY"}


def test_kite_rate_limit_applies_to_orders(kite: KiteBroker, intent: IntentFactory) -> None:
    clock = FakeClock()  # frozen except for the bucket's own sleeps: no wall-clock dependence
    kite.order_bucket = RateLimiter.per_second(10, clock=clock, sleep=clock.sleep)
    for _ in range(12):
        kite.place(intent(order_type=OrderType.LIMIT, limit_price=Decimal("900")))
    # 12 orders at 10 a second: the 11th waits for the first to leave its second, the 12th goes with it.
    assert clock.sleeps == pytest.approx([1.0])
    assert kite.history_bucket.limits == ((3, 1.0),) and kite.order_bucket.limits == ((10, 1.0),)


class _Journal:
    """The order manager's journal port, in memory (what it saved and which events it recorded)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def save_order(self, order: ManagedOrder) -> None:
        pass

    def record_fill(self, fill: Fill, broker: str) -> None:
        pass

    def record_event(self, kind: str, detail: dict[str, object], actor: str = "executor") -> None:
        self.events.append((kind, detail))

    def sync(self) -> None:
        pass


def test_kite_partly_filled_target_resizes_the_stop_through_the_sdk_so_the_stop_cannot_flip_the_position(
    kite: KiteBroker, kite_server: FakeKiteServer
) -> None:
    """A bracket at the venue: the target fills 5 of 10 on arrival. The order manager cuts the stop to 5 with a
    real `modify_order`; when the stop triggers it sells 5, and the account ends flat instead of short 5."""
    journal = _Journal()
    manager = OrderManager(kite, journal)
    lineage = Lineage("brk", "live", 1)

    def leg(purpose: IntentPurpose, order_type: OrderType, **price: Decimal) -> OrderIntent:
        return OrderIntent(client_order_id("brk", "NSE:INFY", 1, purpose), "NSE:INFY", Side.SELL, 10, order_type,
                           purpose, product=ProductType.INTRADAY, parent_client_order_id=entry.client_order_id,
                           **price)  # type: ignore[arg-type]

    entry = OrderIntent(client_order_id("brk", "NSE:INFY", 1, IntentPurpose.ENTRY), "NSE:INFY", Side.BUY, 10,
                        OrderType.MARKET, IntentPurpose.ENTRY, product=ProductType.INTRADAY)
    stop = leg(IntentPurpose.STOP_LOSS, OrderType.STOP, stop_price=Decimal("990"))
    target = leg(IntentPurpose.TAKE_PROFIT, OrderType.LIMIT, limit_price=Decimal("1000"))
    manager.submit_all([entry, stop, target], lineage)
    kite_server.faults.arm("place", Fault.PARTIAL_FILL, times=2)  # the stop rests; the target fills in part
    manager.poll()  # the entry filled: both legs go out
    manager.poll()  # the target's partial fill arrives
    venue_stop = kite_server.exchange.orders[str(manager.orders[stop.client_order_id].broker_order_id)]
    assert manager.orders[target.client_order_id].filled_quantity == 5
    assert venue_stop.quantity == 5 and manager.orders[stop.client_order_id].intent.quantity == 5
    assert [kind for kind, _ in journal.events] == ["protection_resized"]
    assert any(method == "PUT" for method, _ in kite_server.requests)
    kite_server.exchange.set_price("NSE:INFY", Decimal("989"))
    manager.poll()
    assert manager.orders[stop.client_order_id].state is OrderState.FILLED
    assert manager.orders[target.client_order_id].state is OrderState.CANCELLED  # OCO
    assert sum(p.quantity for p in kite.positions()) == 0


@pytest.mark.parametrize("fault", [Fault.HTTP_503, Fault.HTTP_429])
def test_kite_stop_resize_that_failed_is_retried_at_the_next_check_and_never_flips_the_position(
    kite: KiteBroker, kite_server: FakeKiteServer, fault: Fault
) -> None:
    """As above, but the first modify of the stop fails and is not applied: the order manager must not take the
    stop as cut; the next check (the trader's bar close) cuts it, and the stop's fill leaves the account flat."""
    journal = _Journal()
    manager = OrderManager(kite, journal)

    def leg(purpose: IntentPurpose, order_type: OrderType, **price: Decimal) -> OrderIntent:
        return OrderIntent(client_order_id("brk", "NSE:INFY", 1, purpose), "NSE:INFY", Side.SELL, 10, order_type,
                           purpose, product=ProductType.INTRADAY, parent_client_order_id=entry.client_order_id,
                           **price)  # type: ignore[arg-type]

    entry = OrderIntent(client_order_id("brk", "NSE:INFY", 1, IntentPurpose.ENTRY), "NSE:INFY", Side.BUY, 10,
                        OrderType.MARKET, IntentPurpose.ENTRY, product=ProductType.INTRADAY)
    stop = leg(IntentPurpose.STOP_LOSS, OrderType.STOP, stop_price=Decimal("990"))
    target = leg(IntentPurpose.TAKE_PROFIT, OrderType.LIMIT, limit_price=Decimal("1000"))
    manager.submit_all([entry, stop, target], Lineage("brk", "live", 1))
    kite_server.faults.arm("place", Fault.PARTIAL_FILL, times=2)
    kite_server.faults.arm("modify", fault)  # the first resize is refused before the venue applies it
    manager.poll()
    manager.poll()
    venue_stop = kite_server.exchange.orders[str(manager.orders[stop.client_order_id].broker_order_id)]
    assert venue_stop.quantity == 10 and manager.orders[stop.client_order_id].intent.quantity == 10
    assert "protection_resized" not in [kind for kind, _ in journal.events]
    held = sum(p.quantity for p in kite.positions() if p.instrument_key == "NSE:INFY")
    assert manager.fit_protection({"NSE:INFY": held}) == 1  # the bar-close check tries again
    venue_stop = kite_server.exchange.orders[venue_stop.order_id]
    assert venue_stop.quantity == 5 and manager.orders[stop.client_order_id].intent.quantity == 5
    kite_server.exchange.set_price("NSE:INFY", Decimal("989"))
    manager.poll()
    assert manager.orders[stop.client_order_id].state is OrderState.FILLED
    assert sum(p.quantity for p in kite.positions()) == 0


def test_kite_fill_of_an_order_placed_between_the_reads_keeps_its_client_order_id(
    kite: KiteBroker, intent: IntentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kite's trades carry no tag: the adapter names each trade's order from the day's orders. An order placed
    and filled while the adapter reads must never come back as a fill without its client order id (the order
    manager records a fill id once: it would stay unattributed)."""
    first = kite.place(intent(quantity=3))
    late: list[str] = []
    read_orders = kite._client.orders

    def orders_then_a_new_fill() -> object:
        answer = read_orders()
        if not late:  # a fill lands at the broker just after the orders were read
            late.append(kite.place(intent(quantity=4, key="NSE:TCS")).client_order_id or "")
        return answer

    monkeypatch.setattr(kite._client, "orders", orders_then_a_new_fill)
    fills = kite.fills_today()
    assert late and all(fill.client_order_id for fill in fills), fills
    assert first.client_order_id in {fill.client_order_id for fill in fills}
    monkeypatch.undo()
    assert {fill.client_order_id for fill in kite.fills_today()} == {first.client_order_id, late[0]}
