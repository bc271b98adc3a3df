"""Round trips from fills: the compiled pass against the per-fill loop it replaced, on random fill streams."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.backtest import trades_from_fills
from tradeloom.domain import IntentPurpose, Side
from tradeloom.engine import SimFill
from tradeloom.engine.metrics import Trade

KEYS = ("NSE:A", "NSE:B", "NSE:C")


def reference_trades(fills: Sequence[SimFill], keys: tuple[str, ...]) -> list[Trade]:
    """The loop as it was written before the kernel (one dict of open books per instrument)."""
    trades: list[Trade] = []
    books: dict[int, dict[str, float]] = {}
    for sim in fills:
        i, side, qty, price, fee = sim.index, int(sim.side), sim.quantity, sim.price, sim.fees
        book = books.setdefault(i, {"position": 0, "cash": 0.0, "fees": 0.0, "entry_qty": 0, "entry_value": 0.0,
                                    "exit_qty": 0, "exit_value": 0.0, "entry_at": sim.filled_at_ns, "side": side})
        book["cash"] -= side * qty * price + fee
        book["fees"] += fee
        if side == book["side"]:
            book["entry_qty"] += qty
            book["entry_value"] += qty * price
        else:
            book["exit_qty"] += qty
            book["exit_value"] += qty * price
        book["position"] += side * qty
        if book["position"] == 0:
            trades.append(Trade(
                keys[i], int(book["side"]), int(book["entry_qty"]), int(book["entry_at"]), sim.filled_at_ns,
                book["entry_value"] / book["entry_qty"], book["exit_value"] / max(book["exit_qty"], 1), book["cash"],
                book["fees"], book["cash"] / book["entry_value"] if book["entry_value"] else 0.0))
            del books[i]
    return trades


@st.composite
def fill_streams(draw: st.DrawFn) -> list[SimFill]:
    fills: list[SimFill] = []
    for number in range(draw(st.integers(0, 60))):
        i = draw(st.integers(0, len(KEYS) - 1))
        side = draw(st.sampled_from([Side.BUY, Side.SELL]))
        fills.append(SimFill(f"c{number}", KEYS[i], side, draw(st.integers(1, 30)),
                             draw(st.floats(0.01, 5_000.0, allow_nan=False)), draw(st.floats(0.0, 10.0)),
                             1_000 + number, number + 1, i, IntentPurpose.ENTRY))
    return fills


@settings(max_examples=300, deadline=None)
@given(fills=fill_streams())
def test_round_trips_random_fills_equal_per_fill_loop(fills: list[SimFill]) -> None:
    # Reversals through flat, partial exits and interleaved instruments all occur in these streams.
    assert trades_from_fills(fills, KEYS) == reference_trades(fills, KEYS)


def test_round_trips_partial_exit_then_flat_is_one_trade_with_weighted_prices() -> None:
    fills = [SimFill("a", "NSE:A", Side.BUY, 10, 100.0, 1.0, 1, 1, 0, IntentPurpose.ENTRY),
             SimFill("b", "NSE:A", Side.SELL, 4, 110.0, 0.5, 2, 2, 0, IntentPurpose.EXIT),
             SimFill("c", "NSE:B", Side.SELL, 3, 50.0, 0.0, 3, 3, 1, IntentPurpose.ENTRY),
             SimFill("d", "NSE:A", Side.SELL, 6, 120.0, 0.5, 4, 4, 0, IntentPurpose.EXIT)]
    [trade] = trades_from_fills(fills, KEYS)  # NSE:B is still open: no trade for it
    assert (trade.instrument_key, trade.side, trade.quantity) == ("NSE:A", 1, 10)
    assert (trade.entry_at_ns, trade.exit_at_ns) == (1, 4)
    assert trade.exit_price == (4 * 110.0 + 6 * 120.0) / 10
    assert np.isclose(trade.pnl, -1000.0 + 440.0 + 720.0 - 2.0)
    assert np.isclose(trade.fees, 2.0)
