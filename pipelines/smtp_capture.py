"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what arrives: the demo's and the tests' inbox."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tradeloom.errors import ConfigError


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    content: bytes


@dataclass
class Capture:
    port: int
    messages: list[Received] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        with self._arrived:
            self.messages.append(Received(str(envelope.mail_from), tuple(envelope.rcpt_tos),
                                          content if isinstance(content, bytes) else str(content).encode()))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConfigError(f"SMTP capture on port {self.port}: {len(self.messages)} messages arrived "
                                      f"within {timeout:.0f}s; expected {count}")
                self._arrived.wait(left)
            return list(self.messages)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def captured_smtp(port: int = 0) -> Iterator[Capture]:
    """An aiosmtpd server on 127.0.0.1:`port` (0 = a free port) for the duration of the block."""
    from aiosmtpd.controller import Controller

    capture = Capture(port or _free_port())
    controller = Controller(capture, hostname="127.0.0.1", port=capture.port, decode_data=False)
    controller.start()
    try:
        yield capture
    finally:
        controller.stop()
