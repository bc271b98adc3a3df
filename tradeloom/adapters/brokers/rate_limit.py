"""Request limits: brokers publish them (per second, per minute) and their SDKs do not enforce them."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from tradeloom.errors import ConfigError

# Float sums of times can land a hair past a window's edge: a wait this small counts as none, or a frozen test
# clock would spin forever.
_EPSILON = 1e-9


class RateLimiter:
    """At most `count` requests in any `seconds`-long window, for every (count, seconds) given; `acquire`
    blocks until a request fits all of them. A sliding window, not a token bucket: a bucket that starts full
    lets twice its rate through in the first second, which is what a venue's per-second limit refuses.

    Clock and sleep are injectable so tests can drive time without waiting.
    """

    def __init__(
        self,
        limits: Sequence[tuple[int, float]],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not limits:
            raise ConfigError("rate_limit: limits=[], expected at least one (count, seconds) pair")
        for count, seconds in limits:
            if count < 1 or not seconds > 0:
                raise ConfigError(f"rate_limit: ({count!r}, {seconds!r}), expected a count >= 1 per a positive "
                                  "number of seconds")
        self.limits = tuple((int(count), float(seconds)) for count, seconds in limits)
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()  # times of the requests inside the longest window
        self._longest = max(seconds for _, seconds in self.limits)
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    @classmethod
    def per_second(cls, per_second: float, per_minute: int | None = None, *,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> RateLimiter:
        """`per_second` requests a second (a fraction means one per 1/rate seconds) and optionally a minute cap."""
        if not per_second > 0:
            raise ConfigError(f"rate_limit: per_second={per_second!r}, expected a positive number")
        limits = [(int(per_second), 1.0)] if per_second >= 1 else [(1, 1.0 / per_second)]
        if per_minute is not None:
            limits.append((per_minute, 60.0))
        return cls(limits, clock, sleep)

    def _wait_needed(self, now: float) -> float:
        while self._sent and self._sent[0] <= now - self._longest:
            self._sent.popleft()
        wait = 0.0
        for count, seconds in self.limits:
            inside = [stamp for stamp in self._sent if stamp > now - seconds]
            if len(inside) >= count:
                wait = max(wait, inside[-count] + seconds - now)
        return wait

    def try_acquire(self) -> bool:
        with self._lock:
            now = self._clock()
            if self._wait_needed(now) > _EPSILON:
                return False
            self._sent.append(now)
            return True

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= _EPSILON:
                    self._sent.append(now)
                    return
            self.waited_seconds += wait
            self._sleep(wait)
