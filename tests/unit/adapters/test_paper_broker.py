"""The paper broker: fills from the bars it is fed, positions with their average price, order snapshots,
and an account that continues after a restart from its state file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tradeloom.adapters.brokers.paper import PaperBroker
from tradeloom.domain import IntentPurpose, OrderIntent, OrderState, OrderType, ProductType, Side
from tradeloom.errors import OrderRejectedError

KEYS = ("NSE:INFY", "NSE:TCS")


def _market(client_id: str, key: str, side: Side, quantity: int) -> OrderIntent:
    return OrderIntent(client_id, key, side, quantity, OrderType.MARKET, IntentPurpose.ENTRY,
                       product=ProductType.INTRADAY)


def _bar(broker: PaperBroker, t: int, infy: float, tcs: float) -> list[str]:
    prices = np.array([infy, tcs])
    return [sim.client_order_id for sim in broker.on_bar(t, prices, prices + 1, prices - 1, prices,
                                                         np.full(2, 1e6))]


def test_positions_average_price_and_snapshots_follow_fills(tmp_path: Path) -> None:
    broker = PaperBroker(KEYS, cash=1_000_000.0, state_path=tmp_path / "paper.json")
    seen: list[tuple[str, OrderState]] = []
    broker.set_order_callback(lambda order: seen.append((order.client_order_id, order.state)))
    broker.place(_market("A", "NSE:INFY", Side.BUY, 10))
    broker.place(_market("B", "NSE:TCS", Side.BUY, 5))
    assert broker.positions() == []
    assert _bar(broker, 1, 100.0, 200.0) == ["A", "B"]
    assert seen == [("A", OrderState.FILLED), ("B", OrderState.FILLED)]  # in submission order
    broker.place(_market("C", "NSE:INFY", Side.BUY, 30))
    _bar(broker, 2, 110.0, 210.0)
    positions = {p.instrument_key: p for p in broker.positions()}
    assert positions["NSE:INFY"].quantity == 40
    assert positions["NSE:INFY"].average_price == Decimal(10 * 100 + 30 * 110) / 40
    assert positions["NSE:TCS"].average_price == Decimal(200)
    order = broker.order_by_client_id("C")
    assert order is not None and order.filled_quantity == 30 and order.average_price == Decimal(110)
    broker.place(_market("D", "NSE:INFY", Side.SELL, 25))
    _bar(broker, 3, 120.0, 220.0)
    # Average cost: a sale reduces the position and keeps its average.
    assert {p.instrument_key: (p.quantity, p.average_price) for p in broker.positions()}["NSE:INFY"] == (
        15, Decimal(10 * 100 + 30 * 110) / 40)

    restarted = PaperBroker(KEYS, cash=0.0, state_path=tmp_path / "paper.json")
    assert {(p.instrument_key, p.quantity, p.average_price) for p in restarted.positions()} == {
        (p.instrument_key, p.quantity, p.average_price) for p in broker.positions()}
    assert restarted.funds() == broker.funds()
    assert [f.fill_id for f in restarted.fills_today()] == [f.fill_id for f in broker.fills_today()]
    snapshot = restarted.order_by_client_id("D")
    assert snapshot is not None and snapshot.state is OrderState.FILLED and snapshot.filled_quantity == 25


def test_working_order_snapshot_and_cancel(tmp_path: Path) -> None:
    broker = PaperBroker(KEYS, cash=1_000_000.0)
    limit = OrderIntent("L", "NSE:INFY", Side.BUY, 10, OrderType.LIMIT, IntentPurpose.ENTRY,
                        limit_price=Decimal(50), product=ProductType.INTRADAY)
    placed = broker.place(limit)
    assert placed.state is OrderState.ACKNOWLEDGED and placed.quantity == 10
    _bar(broker, 1, 100.0, 200.0)  # far above the limit: still working
    assert [o.client_order_id for o in broker.open_orders()] == ["L"]
    cancelled = broker.cancel(placed.broker_order_id)
    assert cancelled.state is OrderState.CANCELLED and broker.open_orders() == []


def test_average_cost_restarts_at_the_fill_price_through_flat() -> None:
    broker = PaperBroker(KEYS, cash=1_000_000.0)
    broker.place(_market("A", "NSE:INFY", Side.BUY, 10))
    _bar(broker, 1, 100.0, 200.0)
    broker.place(_market("B", "NSE:INFY", Side.SELL, 10))
    _bar(broker, 2, 90.0, 200.0)
    assert broker.positions() == []
    broker.place(_market("C", "NSE:INFY", Side.BUY, 4))
    _bar(broker, 3, 95.0, 200.0)
    assert [(p.quantity, p.average_price) for p in broker.positions()] == [(4, Decimal(95))]


def _fingerprint(broker: PaperBroker) -> tuple[object, ...]:
    return (sorted((p.instrument_key, p.quantity, p.average_price) for p in broker.positions()), broker.funds(),
            [(f.fill_id, f.quantity, f.price) for f in broker.fills_today()],
            sorted((o.client_order_id, o.state, o.filled_quantity) for o in broker.orders_today()))


def test_placements_between_bars_are_logged_not_rewritten_and_survive_a_restart(tmp_path: Path) -> None:
    """A placement appends one line to the account's log instead of rewriting the account; a restart before
    the next bar replays the log, so the restarted account trades exactly like one that never stopped."""
    state = tmp_path / "paper.json"
    broker = PaperBroker(KEYS, cash=1_000_000.0, state_path=state)
    twin = PaperBroker(KEYS, cash=1_000_000.0)  # the same orders and bars, never restarted
    for account in (broker, twin):
        account.place(_market("A", "NSE:INFY", Side.BUY, 10))
        _bar(account, 1, 100.0, 200.0)
    broker.checkpoint()
    snapshot = state.read_bytes()
    for account in (broker, twin):
        account.place(_market("B", "NSE:TCS", Side.BUY, 5))
        account.place(_market("C", "NSE:INFY", Side.SELL, 4))
        account.cancel("P-C")
        _bar(account, 2, 101.0, 201.0)  # B fills
        account.place(_market("D", "NSE:INFY", Side.SELL, 3))
    assert state.read_bytes() == snapshot  # the account file is untouched until the next checkpoint
    assert len(state.with_suffix(".log").read_text(encoding="utf-8").splitlines()) == 5

    restarted = PaperBroker(KEYS, cash=0.0, state_path=state)  # replays placements, the cancel and the bar
    assert _fingerprint(restarted) == _fingerprint(twin)
    assert [p.quantity for p in restarted.positions()] == [10, 5]
    for account in (restarted, twin):
        _bar(account, 3, 102.0, 202.0)  # D fills
    assert _fingerprint(restarted) == _fingerprint(twin)
    restarted.checkpoint()
    assert state.with_suffix(".log").read_text(encoding="utf-8") == ""  # the snapshot includes it all
    assert _fingerprint(PaperBroker(KEYS, cash=0.0, state_path=state)) == _fingerprint(twin)


def test_log_lines_already_in_the_snapshot_and_a_torn_last_line_are_skipped(tmp_path: Path) -> None:
    state = tmp_path / "paper.json"
    broker = PaperBroker(KEYS, cash=1_000_000.0, state_path=state)
    broker.place(_market("A", "NSE:INFY", Side.BUY, 10))
    logged = state.with_suffix(".log").read_text(encoding="utf-8")
    _bar(broker, 1, 100.0, 200.0)
    broker.checkpoint()
    # A crash between the snapshot's replace and the log's truncation leaves lines the snapshot includes;
    # a crash in the middle of a write leaves half a line.
    state.with_suffix(".log").write_text(logged + '{"sequence": 3, "op": "pla', encoding="utf-8")
    restarted = PaperBroker(KEYS, cash=0.0, state_path=state)
    assert _fingerprint(restarted) == _fingerprint(broker)
    assert [p.quantity for p in restarted.positions()] == [10]
    assert state.with_suffix(".log").read_text(encoding="utf-8") == logged  # the torn tail is cut off
    restarted.place(_market("B", "NSE:TCS", Side.BUY, 5))  # so the next line is a whole one
    assert _fingerprint(PaperBroker(KEYS, cash=0.0, state_path=state)) == _fingerprint(restarted)


def test_a_working_order_is_resized_down_and_the_resize_survives_a_restart(tmp_path: Path) -> None:
    """`modify(quantity=)` lowers a working order (what the order manager's `fit_protection` asks); prices
    and types cannot be modified, nor a quantity below the filled one; the resize is in the account's log."""
    state = tmp_path / "paper.json"
    broker = PaperBroker(KEYS, cash=1_000_000.0, state_path=state)
    broker.place(_market("A", "NSE:INFY", Side.BUY, 10))
    _bar(broker, 1, 100.0, 200.0)
    stop = OrderIntent("S", "NSE:INFY", Side.SELL, 10, OrderType.STOP, IntentPurpose.STOP_LOSS,
                       stop_price=Decimal(90), product=ProductType.INTRADAY)
    broker.place(stop)
    assert broker.modify("P-S", quantity=6).quantity == 6
    with pytest.raises(OrderRejectedError, match=r"only an order's quantity .*stop_price=Decimal\('95'\)"):
        broker.modify("P-S", stop_price=Decimal(95))
    with pytest.raises(OrderRejectedError, match="quantity 0"):
        broker.modify("P-S", quantity=0)
    with pytest.raises(OrderRejectedError, match="no paper order"):
        broker.modify("P-X", quantity=1)
    restarted = PaperBroker(KEYS, cash=0.0, state_path=state)  # replays the resize from the log
    assert {o.client_order_id: o.quantity for o in restarted.open_orders()} == {"S": 6}
    _bar(restarted, 2, 80.0, 200.0)  # gaps through the stop: sells 6, not 10
    assert [p.quantity for p in restarted.positions()] == [4]
    assert restarted.order_by_client_id("S") is not None
    assert restarted.order_by_client_id("S").state is OrderState.FILLED  # type: ignore[union-attr]


DAY = 86_400_000_000_000


def _stop(client_id: str, key: str, quantity: int, price: str) -> OrderIntent:
    return OrderIntent(client_id, key, Side.SELL, quantity, OrderType.STOP, IntentPurpose.STOP_LOSS,
                       stop_price=Decimal(price), product=ProductType.INTRADAY)


def test_a_new_day_starts_with_an_empty_order_and_trade_book_and_keeps_the_account(tmp_path: Path) -> None:
    path = tmp_path / "paper.json"
    broker = PaperBroker(KEYS, cash=1_000_000.0, state_path=path)
    broker.place(_market("A", "NSE:INFY", Side.BUY, 10))
    broker.place(_market("B", "NSE:TCS", Side.BUY, 5))
    _bar(broker, 1, 100.0, 200.0)
    broker.place(_market("C", "NSE:INFY", Side.BUY, 30))
    broker.place(_stop("S", "NSE:INFY", 40, "50"))  # still working tomorrow
    _bar(broker, 2, 110.0, 210.0)
    broker.checkpoint()
    yesterday = {(p.instrument_key, p.quantity, p.average_price) for p in broker.positions()}
    cash = broker.funds()
    assert len(broker.orders_today()) == 4 and len(broker.fills_today()) == 3

    _bar(broker, DAY + 1, 120.0, 220.0)  # the first bar of the next day
    assert [o.client_order_id for o in broker.orders_today()] == ["S"]
    assert broker.fills_today() == []
    assert broker.order_by_client_id("A") is None
    assert {(p.instrument_key, p.quantity, p.average_price) for p in broker.positions()} == yesterday
    assert broker.funds() == cash
    broker.place(_market("D", "NSE:TCS", Side.SELL, 5))
    _bar(broker, DAY + 2, 121.0, 221.0)
    assert [f.client_order_id for f in broker.fills_today()] == ["D"]

    # A restart from the snapshot plus the log (the rollover replayed at the same bar) gives the same account,
    # average costs included, although the fills they came from are gone.
    restarted = PaperBroker(KEYS, cash=0.0, state_path=path)
    assert [o.client_order_id for o in restarted.orders_today()] == ["S", "D"]
    assert [f.fill_id for f in restarted.fills_today()] == [f.fill_id for f in broker.fills_today()]
    assert {(p.instrument_key, p.quantity, p.average_price) for p in restarted.positions()} == {
        ("NSE:INFY", 40, Decimal(10 * 100 + 30 * 110) / 40)}
    restarted.checkpoint()
    again = PaperBroker(KEYS, cash=0.0, state_path=path)
    assert {(p.instrument_key, p.quantity, p.average_price) for p in again.positions()} == {
        ("NSE:INFY", 40, Decimal(10 * 100 + 30 * 110) / 40)}
    assert again.funds() == broker.funds()
    # The stop that carried over still protects the position.
    _bar(again, DAY + 3, 40.0, 221.0)
    assert again.positions() == [] and [f.client_order_id for f in again.fills_today()] == ["D", "S"]


def test_the_account_file_does_not_grow_with_the_days_traded(tmp_path: Path) -> None:
    path = tmp_path / "paper.json"
    broker = PaperBroker(KEYS, cash=1_000_000.0, state_path=path)
    sizes = []
    for day in range(6):
        for bar in range(20):
            t = day * DAY + bar + 1
            side = Side.BUY if bar % 2 == 0 else Side.SELL
            broker.place(_market(f"O{day}-{bar}", "NSE:INFY", side, 1))
            _bar(broker, t, 100.0 + bar, 200.0)
        broker.checkpoint()
        sizes.append(path.stat().st_size)
    assert max(sizes[1:]) <= sizes[0] * 1.2, sizes


def test_only_finished_orders_can_be_forgotten() -> None:
    broker = PaperBroker(KEYS, cash=1_000_000.0)
    broker.place(_stop("S", "NSE:INFY", 1, "50"))
    with pytest.raises(Exception, match="still works"):
        broker.sim.forget(["S"])


def test_a_bar_is_on_disk_before_its_fills_are_handed_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tradeloom.adapters.brokers import paper

    synced: list[str] = []
    real = paper.os.fdatasync

    def recording(fd: int) -> None:
        real(fd)
        synced.append((tmp_path / "paper.log").read_text(encoding="utf-8"))

    monkeypatch.setattr(paper.os, "fdatasync", recording)
    broker = PaperBroker(KEYS, cash=1_000_000.0, state_path=tmp_path / "paper.json")
    broker.place(_market("A", "NSE:INFY", Side.BUY, 10))
    assert _bar(broker, 7, 100.0, 200.0) == ["A"]
    assert len(synced) == 1 and '"op": "bar"' in synced[0] and '"bar_at_ns": 7' in synced[0]
    assert '"op": "place"' in synced[0]  # the placements logged before the bar went to disk with it


@pytest.mark.parametrize("checkpointed", [False, True])
def test_a_bar_shown_again_after_a_restart_is_not_matched_again(tmp_path: Path, checkpointed: bool) -> None:
    """A restart before the trader recorded bar 2 shows bar 2 again: the order decided at its close must wait
    for bar 3's open, not fill at bar 2's (from the log, or from the snapshot when the bar was checkpointed)."""
    state = tmp_path / "paper.json"
    broker = PaperBroker(KEYS, cash=1_000_000.0, state_path=state)
    _bar(broker, 1, 100.0, 200.0)
    _bar(broker, 2, 110.0, 210.0)
    if checkpointed:
        broker.checkpoint()
    broker.place(_market("A", "NSE:INFY", Side.BUY, 10))  # decided at bar 2's close
    restarted = PaperBroker(KEYS, cash=0.0, state_path=state)
    assert restarted.last_bar_at_ns == 2
    assert _bar(restarted, 2, 110.0, 210.0) == [] and _bar(restarted, 1, 100.0, 200.0) == []
    assert restarted.order_by_client_id("A").state is OrderState.ACKNOWLEDGED  # type: ignore[union-attr]
    assert _bar(restarted, 3, 120.0, 220.0) == ["A"]
    assert restarted.fills_today()[0].price == Decimal("120.0")
