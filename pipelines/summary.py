"""What is in the store: rows per instrument and timeframe, first/last bar, gaps against the session."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

import numpy as np

from tradeloom.adapters.db import Database
from tradeloom.calendars import count_gaps, expected_bar_times
from tradeloom.domain import Instrument, Segment, Timeframe

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
    if calendar is None:
        return frozenset()
    import exchange_calendars  # heavy: only when a calendar is asked for

    cal = exchange_calendars.get_calendar(calendar, start=start.date().isoformat(), end=end.date().isoformat())
    return frozenset(day.date() for day in cal.regular_holidays.holidays(start.date(), end.date())) | frozenset(
        day.date() for day in cal.adhoc_holidays if start.date() <= day.date() <= end.date()
    )


def load_instrument(row: tuple[object, ...]) -> Instrument:
    (exchange, symbol, segment, currency, tick, lot, tz, s_open, s_close, days, calendar, synthetic) = row
    assert isinstance(s_open, time) and isinstance(s_close, time)  # noqa: S101 - typed by the schema
    return Instrument(
        exchange=str(exchange), symbol=str(symbol), segment=Segment(str(segment)), currency=str(currency),
        tick_size=Decimal(str(tick)), lot_size=int(str(lot)), timezone=str(tz), session_open=s_open,
        session_close=s_close, trading_days=tuple(int(d) for d in days),  # type: ignore[attr-defined]
        calendar=None if calendar is None else str(calendar), is_synthetic=bool(synthetic),
    )


def summarise(db: Database) -> list[SummaryRow]:
    out: list[SummaryRow] = []
    with db.transaction() as conn, conn.cursor() as cur:
        for timeframe in Timeframe:
            cur.execute(
                f"""
                select i.exchange, i.symbol, i.segment, i.currency, i.tick_size, i.lot_size, i.timezone,
                       i.session_open, i.session_close, i.trading_days, i.calendar, i.is_synthetic,
                       array_agg(extract(epoch from b.bar_at)::bigint order by b.bar_at)
                from {timeframe.table} b join instruments i using (instrument_id)
                group by i.instrument_id order by i.exchange, i.symbol
                """
            )
            for *meta, epochs in cur.fetchall():
                instrument = load_instrument(tuple(meta))
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
