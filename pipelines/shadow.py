"""The daily champion-vs-challenger comparison: what the live (or paper/replay) champion did and what the
@challenger shadow would have done on the same bars, read back from the journal. It feeds the promotion
decision (`tradeloom promote`) with trading evidence beyond the backtest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from tradeloom.adapters.db import Database


@dataclass(frozen=True)
class ModeDay:
    mode: str
    model_version: str
    decisions: int
    orders: int
    fills: int
    fees: float
    start_equity: float
    end_equity: float

    @property
    def pnl(self) -> float:
        return self.end_equity - self.start_equity


def compare_day(db: Database, strategy: str, day: date, timezone: str = "Asia/Kolkata") -> list[ModeDay]:
    """One row per journaled mode (live/paper/replay and shadow) for the exchange-local `day`."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, datetime.min.time(), tzinfo=zone)
    end = start + timedelta(days=1)
    rows: list[ModeDay] = []
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            """
            select d.mode, max(d.model_version), count(*),
                (select count(*) from orders o where o.strategy = %(s)s and o.mode = d.mode
                    and o.bar_at >= %(start)s and o.bar_at < %(end)s),
                (select count(*) from fills f join orders o using (client_order_id) where o.strategy = %(s)s
                    and o.mode = d.mode and f.filled_at >= %(start)s and f.filled_at < %(end)s),
                (select coalesce(sum(f.fees), 0) from fills f join orders o using (client_order_id)
                    where o.strategy = %(s)s and o.mode = d.mode
                    and f.filled_at >= %(start)s and f.filled_at < %(end)s),
                (select equity from equity_snapshots e where e.strategy = %(s)s and e.mode = d.mode
                    and e.snapshot_at >= %(start)s and e.snapshot_at < %(end)s order by snapshot_at limit 1),
                (select equity from equity_snapshots e where e.strategy = %(s)s and e.mode = d.mode
                    and e.snapshot_at >= %(start)s and e.snapshot_at < %(end)s order by snapshot_at desc limit 1)
            from decisions d where d.strategy = %(s)s and d.bar_at >= %(start)s and d.bar_at < %(end)s
            group by d.mode order by d.mode
            """,
            {"s": strategy, "start": start, "end": end},
        )
        for mode, version, decisions, orders, fills, fees, first, last in cur.fetchall():
            rows.append(ModeDay(str(mode), str(version), int(decisions), int(orders), int(fills), float(fees),
                                float(first or 0), float(last or 0)))
    return rows
