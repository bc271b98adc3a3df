"""The fake brokers' fault switchboard: faults fire in the order armed, `after` lets requests through first."""

from __future__ import annotations

import pytest

from tradeloom.adapters.brokers.fakes.faults import Fault, FaultSwitchboard


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
