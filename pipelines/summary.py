"""What is in the store: rows per instrument and timeframe, first/last bar, gaps against the session."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np

from tradeloom.adapters.db import Database
from tradeloom.adapters.store import load_instruments
from tradeloom.calendars import count_gaps, expected_bar_times
from tradeloom.domain import Timeframe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SummaryRow:
    instrument: str
    timeframe: str
    rows: int
    first_at: datetime
    last_at: datetime
    missing_bars: int
    gaps: int
    is_synthetic: bool


def _holidays(calendar: str | None, start: datetime, end: datetime) -> frozenset[date]:
    from pipelines.validate_frames import holidays  # pandas: only when a calendar is asked for

    days = holidays(calendar, start.year, end.year)
    return frozenset(day for day in days if start.date() <= day <= end.date())


def summarise(db: Database) -> list[SummaryRow]:
    out: list[SummaryRow] = []
    with db.transaction() as conn, conn.cursor() as cur:
        by_key = {instrument.key: instrument for instrument in load_instruments(conn)}
        for timeframe in Timeframe:
            cur.execute(
                f"""
                select i.exchange || ':' || i.symbol,
                       array_agg(extract(epoch from b.bar_at)::bigint order by b.bar_at)
                from {timeframe.table} b join instruments i using (instrument_id)
                group by i.instrument_id, i.exchange, i.symbol order by i.exchange, i.symbol
                """
            )
            for key, epochs in cur.fetchall():
                instrument = by_key[str(key)]
                present = np.asarray(epochs, dtype=np.int64) * 1_000_000_000
                first = datetime.fromtimestamp(present[0] / 1e9, tz=UTC)
                last = datetime.fromtimestamp(present[-1] / 1e9, tz=UTC)
                expected = expected_bar_times(
                    instrument, timeframe, first, last, _holidays(instrument.calendar, first, last)
                )
                missing, gaps = count_gaps(present, expected)
                out.append(SummaryRow(instrument.key, timeframe.value, len(present), first, last, missing, gaps,
                                      instrument.is_synthetic))
    return out
