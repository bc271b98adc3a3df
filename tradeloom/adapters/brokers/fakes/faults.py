"""The fault switchboard: tests arm faults per operation; the fake servers consume them."""

from __future__ import annotations

import enum
import threading
from collections import defaultdict, deque


class Fault(enum.StrEnum):
    HTTP_429 = "http_429"
    HTTP_500 = "http_500"
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    TIMEOUT_BEFORE = "timeout_before"  # slow response; the request is NOT applied
    TIMEOUT_AFTER = "timeout_after"  # applied, then a response slower than the client waits
    DROP_CONNECTION = "drop_connection"  # applied, then the TCP connection closes without a reply
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 - a fault name, not a credential
    REJECT = "reject"
    PARTIAL_FILL = "partial_fill"
    DELAYED_ACK = "delayed_ack"
    DUPLICATE_UPDATES = "duplicate_updates"
    OUT_OF_ORDER_UPDATES = "out_of_order_updates"
    DROP_STREAM = "drop_stream"

    @property
    def http_status(self) -> int | None:
        return {"http_429": 429, "http_500": 500, "http_502": 502, "http_503": 503}.get(self.value)


OPERATIONS = ("place", "modify", "cancel", "read", "stream", "login")


class FaultSwitchboard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, deque[Fault | None]] = defaultdict(deque)  # None: let one request through
        self.slow_seconds = 1.5
        self.fired: list[tuple[str, Fault]] = []

    def arm(self, operation: str, fault: Fault, times: int = 1, after: int = 0) -> None:
        """Fail the next `times` requests of `operation` with `fault`, after letting `after` more through
        (queued behind what is already armed: a schedule that does not depend on timing)."""
        if operation not in OPERATIONS:
            raise ValueError(f"operation={operation!r}, expected one of {OPERATIONS}")
        if times < 1 or after < 0:
            raise ValueError(f"times={times!r} must be >= 1 and after={after!r} >= 0")
        with self._lock:
            self._armed[operation].extend([None] * after + [fault] * times)

    def take(self, operation: str, allowed: frozenset[Fault] | None = None) -> Fault | None:
        with self._lock:
            queue = self._armed[operation]
            if not queue:
                return None
            head = queue[0]
            if head is None:  # a request let through
                queue.popleft()
                return None
            if allowed is not None and head not in allowed:
                return None
            queue.popleft()
            self.fired.append((operation, head))
            return head

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
