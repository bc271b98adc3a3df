"""The fake brokers' fault switchboard: faults fire in the order armed, `after` lets requests through first."""

from __future__ import annotations

import socket
import struct
import urllib.request

import pytest

from tradeloom.adapters.brokers.fakes.faults import Fault, FaultSwitchboard
from tradeloom.adapters.brokers.fakes.http import HttpServerThread, Response


def test_arm_after_lets_requests_through_then_fires_in_order() -> None:
    board = FaultSwitchboard()
    board.arm("place", Fault.HTTP_429, after=2)
    board.arm("place", Fault.REJECT, after=1)
    taken = [board.take("place") for _ in range(6)]
    assert taken == [None, None, Fault.HTTP_429, None, Fault.REJECT, None]
    assert board.fired == [("place", Fault.HTTP_429), ("place", Fault.REJECT)]


def test_take_fault_not_allowed_here_waits_for_a_request_it_applies_to() -> None:
    board = FaultSwitchboard()
    board.arm("stream", Fault.DROP_STREAM)
    assert board.take("stream", frozenset({Fault.DUPLICATE_UPDATES})) is None
    assert board.take("stream") is Fault.DROP_STREAM
    assert board.take("cancel") is None  # other operations are unaffected


def test_arm_bad_arguments_named() -> None:
    board = FaultSwitchboard()
    with pytest.raises(ValueError, match="operation='modify-ish'"):
        board.arm("modify-ish", Fault.HTTP_500)
    with pytest.raises(ValueError, match="after=-1"):
        board.arm("place", Fault.HTTP_500, after=-1)


def test_fake_http_server_takes_a_client_reset_mid_request_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    """A client killed mid-request (the crash soak's kill -9) resets its socket: no traceback on stderr, and the
    server keeps serving."""
    server = HttpServerThread(lambda request: Response(200, b"ok"))
    port = server.start()
    try:
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"GET /partial HTTP/1.1\r\nHost: x")  # no end of headers: the server is reading
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # linger 0: RST, as a killed process's socket
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/after", timeout=5) as answer:
            assert answer.read() == b"ok"
    finally:
        server.stop()
    assert "Traceback" not in capfd.readouterr().err
