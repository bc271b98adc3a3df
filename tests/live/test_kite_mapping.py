"""Mapping tables and parsers against payloads shaped like the Kite Connect v3 documentation."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tradeloom.adapters.brokers.kite import parsing
from tradeloom.domain import IntentPurpose, OrderIntent, OrderState, OrderType, ProductType, Side
from tradeloom.errors import InputError

DATA = Path(__file__).resolve().parents[1] / "data" / "brokers" / "kite"


def test_kite_tables_round_trip_every_enum_value() -> None:
    for ours in OrderType:
        assert parsing.ORDER_TYPE_FROM_KITE[parsing.ORDER_TYPE_TO_KITE[ours]] is ours
    for product in ProductType:
        assert parsing.PRODUCT_FROM_KITE[parsing.PRODUCT_TO_KITE[product]] is product
    for side in Side:
        assert parsing.SIDE_FROM_KITE[parsing.SIDE_TO_KITE[side]] is side
    assert parsing.ORDER_TYPE_TO_KITE[OrderType.STOP] == "SL-M"
    assert parsing.PRODUCT_TO_KITE[ProductType.INTRADAY] == "MIS"


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("OPEN", 0, OrderState.ACKNOWLEDGED),
        ("OPEN", 3, OrderState.PARTIALLY_FILLED),
        ("COMPLETE", 10, OrderState.FILLED),
        ("CANCELLED", 3, OrderState.CANCELLED),
        ("REJECTED", 0, OrderState.REJECTED),
        ("TRIGGER PENDING", 0, OrderState.ACKNOWLEDGED),
        ("PUT ORDER REQ RECEIVED", 0, OrderState.SENT),
        ("SOMETHING NEW", 0, OrderState.ACKNOWLEDGED),
    ],
)
def test_kite_order_state_status_and_fill_mapped(status: str, filled: int, expected: OrderState) -> None:
    assert parsing.order_state(status, filled) is expected


def test_kite_parse_order_documented_payload_fields_mapped() -> None:
    payload = json.loads((DATA / "order_update.json").read_text())["data"]
    order = parsing.parse_order(payload)
    assert order.broker_order_id == payload["order_id"]
    assert order.client_order_id == payload["tag"]
    assert order.instrument_key == "NSE:INFY"
    assert order.side is Side.SELL and order.order_type is OrderType.LIMIT and order.product is ProductType.DELIVERY
    assert order.state is OrderState.PARTIALLY_FILLED
    assert order.limit_price == Decimal("1500.5") and order.average_price == Decimal("1500.55")
    # 2024-01-05 10:15:30 IST is 04:45:30 UTC.
    assert order.updated_at_ns == 1704429930 * 1_000_000_000


def test_kite_order_params_tag_carries_client_order_id() -> None:
    intent = OrderIntent(
        "TLabc123",
        "NSE:INFY",
        Side.BUY,
        5,
        OrderType.STOP_LIMIT,
        IntentPurpose.STOP_LOSS,
        limit_price=Decimal("99.5"),
        stop_price=Decimal("100"),
    )
    params = parsing.order_params(intent, "regular")
    assert params["tag"] == "TLabc123"
    assert (params["order_type"], params["price"], params["trigger_price"]) == ("SL", 99.5, 100.0)
    assert (params["exchange"], params["tradingsymbol"], params["transaction_type"]) == ("NSE", "INFY", "BUY")


@pytest.mark.parametrize(
    "bad",
    [
        OrderIntent("TLx", "INFY", Side.BUY, 1, OrderType.MARKET, IntentPurpose.ENTRY),
        OrderIntent("TLx", "NSE:INFY", Side.BUY, 0, OrderType.MARKET, IntentPurpose.ENTRY),
        OrderIntent("TLx", "NSE:INFY", Side.BUY, 1, OrderType.LIMIT, IntentPurpose.ENTRY),
        OrderIntent("TL-not-alnum", "NSE:INFY", Side.BUY, 1, OrderType.MARKET, IntentPurpose.ENTRY),
    ],
)
def test_kite_order_params_invalid_intent_input_error(bad: OrderIntent) -> None:
    with pytest.raises(InputError):
        parsing.order_params(bad, "regular")
