"""Shared set-up for the drift, report and DAG tests: real AAPL daily bars and a small journal."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tradeloom.adapters.db import Database
from tradeloom.adapters.sources import bundled_batches

STRATEGY = "direction_daily"
JOURNAL_TABLES = ("fills", "order_events", "orders", "decisions", "equity_snapshots", "drift_runs", "daily_reports")


def load_aapl(db: Database) -> datetime:
    """Ingest the bundled bokeh daily bars (AAPL among them); returns the last AAPL bar time."""
    from pipelines.ingest import ingest

    batch = list(bundled_batches())[2]
    ingest(batch, db, register_instruments=True)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select max(bar_at) from bars_1d join instruments using (instrument_id) where symbol = 'AAPL'")
        row = cur.fetchone()
    assert row is not None and row[0] is not None
    last: datetime = row[0].astimezone(UTC)
    return last


def clear_journal(db: Database) -> None:
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute(f"truncate {', '.join(JOURNAL_TABLES)} restart identity cascade")


def aapl_closes(db: Database, end: datetime, days: int) -> list[tuple[datetime, float]]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select bar_at, close from bars_1d join instruments using (instrument_id) where symbol = 'AAPL' "
                    "and bar_at < %s and bar_at >= %s order by bar_at", (end, end - timedelta(days=days)))
        return [(row[0], float(row[1])) for row in cur.fetchall()]


def write_journal(db: Database, day_end: datetime, *, prophetic: bool, slippage_bps: float,
                  fill_fraction: float) -> int:
    """Decisions on each AAPL bar of the last 30 days (signals right or wrong about the next bar), and on the
    last day orders + fills priced `slippage_bps` off the decision bar's close. Returns the decision count."""
    closes = aapl_closes(db, day_end + timedelta(days=1), 40)
    decisions = 0
    with db.transaction() as conn, conn.cursor() as cur:
        for (bar_at, close), (_, next_close) in itertools.pairwise(closes):
            direction = 1 if next_close > close else -1
            signal = direction if prophetic else -direction
            record = {"instruments": {"NASDAQ:AAPL": {"signal": signal, "confidence": 0.6}}}
            cur.execute("insert into decisions (strategy, mode, bar_at, model_name, model_version, record) "
                        "values (%s, 'paper', %s, %s, '1', %s)", (STRATEGY, bar_at, STRATEGY, json.dumps(record)))
            decisions += 1
        bar_at, close = closes[-2]
        for index in range(4):
            price = Decimal(str(round(close * (1 + slippage_bps / 1e4), 6)))
            order_id = f"demo-{index}"
            filled = int(100 * fill_fraction)
            cur.execute(
                "insert into orders (client_order_id, broker, strategy, mode, instrument_key, side, quantity, "
                "filled_quantity, order_type, product, purpose, state, bar_at, created_at) values "
                "(%s, 'paper', %s, 'paper', 'NASDAQ:AAPL', 1, 100, %s, 'market', 'CNC', 'entry', %s, %s, %s)",
                (order_id, STRATEGY, filled, "filled" if filled == 100 else "partially_filled", bar_at,
                 day_end - timedelta(hours=2)))
            if filled:
                cur.execute("insert into fills (fill_id, client_order_id, broker, instrument_key, side, quantity, "
                            "price, filled_at) values (%s, %s, 'paper', 'NASDAQ:AAPL', 1, %s, %s, %s)",
                            (f"fill-{index}", order_id, filled, price, day_end - timedelta(hours=1)))
        for offset, equity in ((30, 100_000), (1, 101_250)):
            cur.execute("insert into equity_snapshots (strategy, mode, snapshot_at, equity, cash, gross_exposure, "
                        "net_exposure, realized_pnl) values (%s, 'paper', %s, %s, %s, 0, 0, %s)",
                        (STRATEGY, day_end - timedelta(hours=offset), equity, equity, equity - 100_000))
    return decisions
