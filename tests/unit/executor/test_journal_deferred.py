"""The journal's deferred block: held-back records keep their order and their moment's state, and a sync
inside the block (the write-ahead sync before a send) writes everything held back first."""

from __future__ import annotations

import json
from pathlib import Path

from executor.journal import Journal
from executor.oms import Lineage, ManagedOrder
from tradeloom.domain import IntentPurpose, OrderIntent, OrderState, OrderType, Side


def _no_database() -> None:
    raise RuntimeError("no database in this test")


def _lines(journal: Journal) -> list[dict[str, object]]:
    return [json.loads(line) for line in journal.path.read_text(encoding="utf-8").splitlines()]


def _order(client_id: str) -> ManagedOrder:
    intent = OrderIntent(client_id, "NSE:INFY", Side.BUY, 5, OrderType.MARKET, IntentPurpose.ENTRY)
    return ManagedOrder(intent, Lineage("s", "paper", 1), "paper")


def test_deferred_records_are_written_in_order_with_the_state_they_had(tmp_path: Path) -> None:
    journal = Journal(tmp_path, _no_database, strategy="s", mode="paper")  # type: ignore[arg-type]
    order = _order("A")
    with journal.deferred():
        journal.save_order(order)  # NEW
        journal.record_event("note", {"n": 1})
        assert _lines(journal) == []  # held back
        journal.sync()  # the write-ahead sync writes what is held back, then fsyncs
        assert [line["kind"] for line in _lines(journal)] == ["order", "event"]
        order.state = OrderState.SENT
        journal.save_order(order)
        order.state, order.broker_order_id = OrderState.ACKNOWLEDGED, "B1"
        journal.save_order(order)
        with journal.deferred():  # nested: written by the outer block
            journal.record_event("inner", {})
        assert len(_lines(journal)) == 2
    lines = _lines(journal)
    states = [(line["data"]["state"], line["data"]["broker_order_id"]) for line in lines if line["kind"] == "order"]
    assert states == [("new", None), ("sent", None), ("acknowledged", "B1")]
    assert [line["kind"] for line in lines] == ["order", "event", "order", "order", "event"]
    assert journal.pending == 5
    journal.save_order(order)  # outside a block: written at once
    assert len(_lines(journal)) == 6


def test_a_failure_inside_the_block_still_writes_what_was_held(tmp_path: Path) -> None:
    journal = Journal(tmp_path, _no_database, strategy="s", mode="paper")  # type: ignore[arg-type]
    try:
        with journal.deferred():
            journal.save_order(_order("A"))
            raise RuntimeError("broker blew up")
    except RuntimeError:
        pass
    assert [line["data"]["client_order_id"] for line in _lines(journal)] == ["A"]
