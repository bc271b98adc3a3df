from __future__ import annotations

from decimal import Decimal

import pytest

from tradeloom.adapters.brokers.rate_limit import RateLimiter
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


def test_no_one_second_window_holds_more_than_the_per_second_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter.per_second(10, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(30):
        limiter.acquire()
        stamps.append(clock.now)
    assert stamps[:10] == [0.0] * 10  # the first ten at once
    # Any window of one second holds at most ten (a bucket that starts full let twenty through).
    assert max(sum(1 for t in stamps if start <= t < start + 1.0) for start in stamps) == 10
    assert clock.now == pytest.approx(2.0)


def test_a_minute_cap_holds_beside_the_per_second_one() -> None:
    clock = FakeClock()
    limiter = RateLimiter.per_second(10, per_minute=25, clock=clock, sleep=clock.sleep)
    for _ in range(26):
        limiter.acquire()
    assert clock.now == pytest.approx(60.0)  # the 26th waits for the first to leave the minute


def test_try_acquire_frees_with_time_and_fractional_rates_space_requests() -> None:
    clock = FakeClock()
    limiter = RateLimiter.per_second(0.5, clock=clock, sleep=clock.sleep)  # one per two seconds
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.now += 1.0
    assert not limiter.try_acquire()
    clock.now += 1.0
    assert limiter.try_acquire()


def test_rate_limit_bad_config_names_the_value() -> None:
    with pytest.raises(ConfigError, match="per_second=0"):
        RateLimiter.per_second(0)
    with pytest.raises(ConfigError, match=r"\(0, 1.0\)"):
        RateLimiter([(0, 1.0)])


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
