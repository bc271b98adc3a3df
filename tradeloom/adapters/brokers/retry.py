"""Bounded retries for reads and cancels (never for placements: those reconcile by client order id), and the
verdict on a modify whose answer was lost."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from tenacity import Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt, wait_exponential

from tradeloom.broker import BrokerOrder
from tradeloom.domain import OrderType
from tradeloom.errors import TransientBrokerError

T = TypeVar("T")
log = logging.getLogger(__name__)


def retry_transient(call: Callable[[], T], attempts: int, backoff_seconds: float, max_backoff_seconds: float) -> T:
    """Run `call`, retrying only `TransientBrokerError`, with exponential back-off capped per wait."""
    retrying = Retrying(
        retry=retry_if_exception_type(TransientBrokerError),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_seconds, max=max_backoff_seconds),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    return retrying(call)


def modify_outcome(found: BrokerOrder, error: TransientBrokerError, *, quantity: int | None,
                   limit_price: Decimal | None, stop_price: Decimal | None,
                   order_type: OrderType | None) -> BrokerOrder:
    """After a modify whose answer was lost: the order read back when it shows every requested change (the
    venue applied it), else TransientBrokerError, so the caller retries later instead of believing an order
    it did not change (a stop left at 10 against a position of 5 flips the position when it fills)."""
    wanted = {"quantity": (quantity, found.quantity), "limit_price": (limit_price, found.limit_price),
              "stop_price": (stop_price, found.stop_price), "order_type": (order_type, found.order_type)}
    missing = {name: (want, seen) for name, (want, seen) in wanted.items() if want is not None and want != seen}
    if missing:
        shown = ", ".join(f"{name} {seen!r} (asked {want!r})" for name, (want, seen) in missing.items())
        raise TransientBrokerError(f"modify of {found.broker_order_id} not applied after {type(error).__name__}: "
                                   f"the venue shows {shown}") from error
    return found
