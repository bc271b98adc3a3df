from __future__ import annotations

from decimal import Decimal

import pytest

from tradeloom.adapters.brokers.rate_limit import TokenBucket
from tradeloom.adapters.brokers.updates import OrderUpdateFilter
from tradeloom.broker import BrokerOrder
from tradeloom.domain import OrderState, OrderType, ProductType, Side
from tradeloom.errors import ConfigError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_token_bucket_burst_then_waits_at_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        bucket.acquire()
    assert clock.sleeps == []
    for _ in range(20):
        bucket.acquire()
    # 20 more requests at 10/s need 2 s of (simulated) waiting.
    assert sum(clock.sleeps) == pytest.approx(2.0)
    assert clock.now == pytest.approx(2.0)


def test_token_bucket_try_acquire_refills_with_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, capacity=1, clock=clock, sleep=clock.sleep)
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    clock.now += 0.5
    assert bucket.try_acquire()


def test_token_bucket_zero_rate_config_error() -> None:
    with pytest.raises(ConfigError, match="rate"):
        TokenBucket(0)


def _order(state: OrderState, filled: int = 0, price: str = "100") -> BrokerOrder:
    return BrokerOrder(
        "1",
        "TLabc",
        "NSE:INFY",
        Side.BUY,
        10,
        filled,
        state,
        OrderType.LIMIT,
        ProductType.INTRADAY,
        limit_price=Decimal(price),
    )


def test_update_filter_duplicates_and_stale_updates_dropped() -> None:
    updates = OrderUpdateFilter()
    assert updates.accept(_order(OrderState.SENT))
    assert updates.accept(_order(OrderState.ACKNOWLEDGED))
    assert not updates.accept(_order(OrderState.ACKNOWLEDGED))  # duplicate
    assert updates.accept(_order(OrderState.PARTIALLY_FILLED, 4))
    assert not updates.accept(_order(OrderState.ACKNOWLEDGED))  # arrived late
    assert updates.accept(_order(OrderState.PARTIALLY_FILLED, 4, price="101"))  # a modification is news
    assert updates.accept(_order(OrderState.FILLED, 10))
    assert not updates.accept(_order(OrderState.PARTIALLY_FILLED, 6))  # terminal never goes back
    assert updates.dropped == 3
