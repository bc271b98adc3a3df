"""Bounded retries for reads and cancels (never for placements: those reconcile by client order id)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt, wait_exponential

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
