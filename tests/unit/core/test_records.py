"""`fast_init` keeps every behaviour of the frozen dataclass it speeds up."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from tradeloom.domain import IntentPurpose, OrderIntent, OrderType, Side
from tradeloom.records import fast_init


@dataclass(frozen=True)
class Plain:
    a: int
    b: str = "x"
    c: list[int] = field(default_factory=list)


@fast_init
@dataclass(frozen=True)
class Fast:
    a: int
    b: str = "x"
    c: list[int] = field(default_factory=list)


@pytest.mark.parametrize("args, kwargs", [((1,), {}), ((1, "y"), {}), ((1,), {"c": [2]}), ((), {"a": 3, "b": "z"})])
def test_fast_init_same_values_as_dataclass_init(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    fast, plain = Fast(*args, **kwargs), Plain(*args, **kwargs)  # type: ignore[arg-type]
    assert dataclasses.astuple(fast) == dataclasses.astuple(plain)
    assert repr(fast) == repr(plain).replace("Plain", "Fast")


def test_fast_init_frozen_equal_hashable_replace_and_fresh_factory() -> None:
    one = Fast(1, c=[1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 2  # type: ignore[misc]
    assert one == Fast(1, c=[1]) and one != Fast(2, c=[1])
    assert dataclasses.replace(one, b="q") == Fast(1, "q", [1])
    assert Fast(1).c is not Fast(1).c  # each instance gets its own default list
    intent = OrderIntent("TL1", "NSE:A", Side.BUY, 5, OrderType.MARKET, IntentPurpose.ENTRY)
    assert hash(intent) == hash(OrderIntent("TL1", "NSE:A", Side.BUY, 5, OrderType.MARKET, IntentPurpose.ENTRY))
    assert dataclasses.replace(intent, quantity=7).quantity == 7


def test_fast_init_missing_or_unknown_argument_raises_type_error() -> None:
    with pytest.raises(TypeError):
        Fast()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Fast(1, d=2)  # type: ignore[call-arg]


def test_fast_init_refuses_classes_it_cannot_keep_correct() -> None:
    @dataclass
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class Posted:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (Mutable, Posted):
        with pytest.raises(TypeError, match="fast_init needs"):
            fast_init(cls)
