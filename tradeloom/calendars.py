"""Trading sessions: which timestamps an instrument is expected to have bars at."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from tradeloom.domain import Instrument, Timeframe

NS = 1_000_000_000


def expected_bar_times(
    instrument: Instrument,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    holidays: frozenset[date] = frozenset(),
) -> npt.NDArray[np.int64]:
    """UTC epoch-ns open times of every bar the instrument's session implies in [start, end].

    Daily bars are stamped at 00:00 UTC of the trading date. Intraday bars start at the session
    open and step by the timeframe until the close, on the instrument's trading days.
    """
    tz = ZoneInfo(instrument.timezone)
    out: list[int] = []
    # Daily bars are stamped at 00:00 UTC of their date, so walk UTC dates for them, local dates otherwise.
    walk_zone = UTC if timeframe is Timeframe.DAY else tz
    day = start.astimezone(walk_zone).date()
    last = end.astimezone(walk_zone).date()
    step = timedelta(seconds=timeframe.seconds)
    while day <= last:
        if day.weekday() in instrument.trading_days and day not in holidays:
            if timeframe is Timeframe.DAY:
                stamp = datetime(day.year, day.month, day.day, tzinfo=UTC)
                if start <= stamp <= end:
                    out.append(int(stamp.timestamp()) * NS)
            else:
                opens = datetime.combine(day, instrument.session_open, tzinfo=tz)
                closes = datetime.combine(day, instrument.session_close, tzinfo=tz)
                if closes <= opens:  # overnight sessions (FX): run to the next day's close
                    closes += timedelta(days=1)
                moment = opens
                while moment < closes:
                    if start <= moment <= end:
                        out.append(int(moment.timestamp()) * NS)
                    moment += step
        day += timedelta(days=1)
    return np.unique(np.asarray(out, dtype=np.int64))


def session_close_ns(instrument: Instrument, trading_date: date) -> int:
    """UTC epoch-ns of the instrument's session close on `trading_date`: when its daily bar is final."""
    closes = datetime.combine(trading_date, instrument.session_close, tzinfo=ZoneInfo(instrument.timezone))
    return int(closes.timestamp()) * NS


def count_gaps(present_ns: npt.NDArray[np.int64], expected_ns: npt.NDArray[np.int64]) -> tuple[int, int]:
    """(missing bars, runs of consecutive missing bars) between the first and last present bar."""
    if present_ns.size == 0:
        return 0, 0
    window = expected_ns[(expected_ns >= present_ns.min()) & (expected_ns <= present_ns.max())]
    missing = ~np.isin(window, present_ns)
    if not missing.any():
        return 0, 0
    starts = np.flatnonzero(missing & ~np.concatenate(([False], missing[:-1])))
    return int(missing.sum()), int(starts.size)


def session_context(
    instruments: list[Instrument], bar_at_ns: int, bar_seconds: int
) -> tuple[int, npt.NDArray[np.float64]]:
    """(session day as YYYYMMDD in the first instrument's zone, minutes from this bar's close to each
    instrument's session close; NaN for sessions without a daily close, e.g. FX)."""
    closes_at = datetime.fromtimestamp((bar_at_ns + bar_seconds * NS) / NS, tz=UTC)
    first = closes_at.astimezone(ZoneInfo(instruments[0].timezone)) if instruments else closes_at
    minutes = np.full(len(instruments), np.nan)
    for i, instrument in enumerate(instruments):
        if instrument.session_close <= instrument.session_open:
            continue
        local = closes_at.astimezone(ZoneInfo(instrument.timezone))
        close = datetime.combine(local.date(), instrument.session_close, tzinfo=local.tzinfo)
        minutes[i] = (close - local).total_seconds() / 60.0
    return first.year * 10000 + first.month * 100 + first.day, minutes
