"""A token bucket: brokers publish request limits and their SDKs do not enforce them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tradeloom.errors import ConfigError

# Float refills can land a hair under a whole token; without slack the wait would shrink below the
# clock's resolution and spin forever.
_EPSILON = 1e-9


class TokenBucket:
    """`rate` tokens per second, at most `capacity` banked; `acquire` blocks until one is free.

    Clock and sleep are injectable so tests can drive time without waiting.
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ConfigError(f"rate_limit: rate={rate!r}, expected a positive number of requests per second")
        self.rate = rate
        self.capacity = capacity if capacity is not None else rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self) -> bool:
        with self._lock:
            self._refill()
            if self._tokens >= 1 - _EPSILON:
                self._tokens = max(0.0, self._tokens - 1)
                return True
            return False

    def acquire(self) -> None:
        while True:
            with self._lock:
                self._refill()
                if self._tokens >= 1 - _EPSILON:
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                wait = (1 - self._tokens) / self.rate
            self.waited_seconds += wait
            self._sleep(wait)
