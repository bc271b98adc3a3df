"""The batch frame the data gate validates: rows of whole (instrument, UTC day) cells of one raw table, plus
helper columns for the checks Great Expectations has no built-in for (session windows, holes, staleness,
robust price jumps). Each helper column is then asserted by a GX expectation, so every check shows up in
Data Docs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import pandas as pd

from tradeloom.adapters.db import Connection
from tradeloom.adapters.store import load_instruments_by_id
from tradeloom.calendars import expected_bar_times
from tradeloom.domain import Instrument, Timeframe
from tradeloom.errors import InputError

log = logging.getLogger(__name__)

NS = 1_000_000_000
DAY_NS = 86_400 * NS
# Robust deviations are capped so a zero-spread series stays JSON-serialisable in Data Docs.
DEVIATION_CAP = 1e9
# Fewer returns than this per instrument give no trustworthy MAD: the jump check then abstains.
MIN_RETURNS_FOR_JUMPS = 20
# 1.4826 × MAD estimates the standard deviation of a normal sample.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class TableSpec:
    """How one raw table is validated: its time column, the grid its timestamps live on, how far back
    the checks need context (the previous bar for holes and jumps, enough returns for the MAD)."""

    table: str
    time_column: str
    grid: Timeframe
    lookback: timedelta
    is_order_book: bool = False

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """The table's own columns, kept in quarantine so a row can be restored."""
        values = (
            ("bid_prices", "bid_sizes", "ask_prices", "ask_sizes") if self.is_order_book
            else ("open", "high", "low", "close", "volume")
        )
        return ("instrument_id", self.time_column, *values, "ingest_batch_id")


SPECS: dict[str, TableSpec] = {
    "bars_1m": TableSpec("bars_1m", "bar_at", Timeframe.MINUTE, timedelta(days=4)),
    "bars_1h": TableSpec("bars_1h", "bar_at", Timeframe.HOUR, timedelta(days=14)),
    "bars_1d": TableSpec("bars_1d", "bar_at", Timeframe.DAY, timedelta(days=400)),
    # Snapshots arrive irregularly: sessions, holes and staleness are judged on the minute grid.
    "order_book_snapshots": TableSpec("order_book_snapshots", "snapshot_at", Timeframe.MINUTE, timedelta(days=1),
                                      is_order_book=True),
}


def table_spec(table: str) -> TableSpec:
    try:
        return SPECS[table]
    except KeyError:
        raise InputError(f"table={table!r} cannot be validated; expected one of {', '.join(SPECS)}") from None


@dataclass(frozen=True)
class Tolerance:
    max_missing_bars: int
    max_stale_bars: int
    jump_robust_deviations: float


# Defaults per raw table; `quality_tolerances` overrides them per instrument. Measured: the largest clean
# robust deviation is 48 on daily bars (MSFT's 2003 split, when no corporate action is recorded; AAPL's
# real −52 % day in 2000 is 34), 25 on hourly EURUSD, 10 on synthetic minutes; EURUSD misses 14 hours
# over Christmas.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "bars_1m": Tolerance(max_missing_bars=5, max_stale_bars=15, jump_robust_deviations=30.0),
    "bars_1h": Tolerance(max_missing_bars=24, max_stale_bars=24, jump_robust_deviations=40.0),
    "bars_1d": Tolerance(max_missing_bars=3, max_stale_bars=3, jump_robust_deviations=60.0),
    "order_book_snapshots": Tolerance(max_missing_bars=5, max_stale_bars=5, jump_robust_deviations=30.0),
}


@dataclass(frozen=True)
class Scope:
    """What one validation looks at. `frame` holds the cells' rows (is_context=False) and earlier rows of
    the same instruments (is_context=True) that only feed the hole and jump checks."""

    frame: pd.DataFrame
    instruments: dict[int, Instrument]
    tolerances: dict[int, Tolerance]
    splits: dict[int, dict[int, float]]


def load_scope(
    conn: Connection, spec: TableSpec, start: datetime | None, end: datetime | None, ingest_batch_id: int | None,
) -> Scope:
    """Rows of every (instrument, UTC day) cell touched by the selection, with lookback context."""
    time_column = spec.time_column
    conditions = ["true"]
    params: dict[str, object] = {"lookback": spec.lookback, "start": start, "end": end, "batch": ingest_batch_id}
    if start is not None:
        conditions.append(f"{time_column} >= %(start)s")
    if end is not None:
        conditions.append(f"{time_column} < %(end)s")
    if ingest_batch_id is not None:
        conditions.append("ingest_batch_id = %(batch)s")
    values = (
        "t.bid_prices, t.bid_sizes, t.ask_prices, t.ask_sizes" if spec.is_order_book
        else "t.open, t.high, t.low, t.close, t.volume"
    )
    # Whole cells are validated even when the selection covers part of one, so a cell's gate status
    # always describes every row it holds.
    sql = f"""
        with cells as (
            select distinct instrument_id, date_trunc('day', {time_column} at time zone 'UTC') as day
            from {spec.table} where {' and '.join(conditions)}
        ),
        bounds as (
            select instrument_id, min(day) as first_day, max(day) as last_day from cells group by instrument_id
        )
        select t.instrument_id, (extract(epoch from t.{time_column}) * 1e6)::bigint as at_us, {values},
               t.ingest_batch_id, c.day is null as is_context
        from bounds b
        join {spec.table} t on t.instrument_id = b.instrument_id
             and t.{time_column} >= (b.first_day - %(lookback)s) at time zone 'UTC'
             and t.{time_column} < (b.last_day + interval '1 day') at time zone 'UTC'
        left join cells c on c.instrument_id = t.instrument_id
             and c.day = date_trunc('day', t.{time_column} at time zone 'UTC')
        order by t.instrument_id, t.{time_column}
    """
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
        ids = sorted({int(row[0]) for row in rows})
        instruments = load_instruments_by_id(conn, ids)
        cur.execute(
            "select instrument_id, max_missing_bars, max_stale_bars, jump_robust_deviations from quality_tolerances"
            " where target_table = %s and instrument_id = any(%s)",
            (spec.table, ids),
        )
        default = DEFAULT_TOLERANCES[spec.table]
        overrides = {int(i): Tolerance(int(missing), int(stale), float(deviations))
                     for i, missing, stale, deviations in cur.fetchall()}
        cur.execute(
            "select instrument_id, (extract(epoch from ex_at) * 1e9)::bigint, split_ratio from corporate_actions"
            " where action = 'split' and instrument_id = any(%s)",
            (ids,),
        )
        splits: dict[int, dict[int, float]] = {}
        for instrument_id, ex_ns, ratio in cur.fetchall():
            splits.setdefault(int(instrument_id), {})[int(ex_ns)] = float(ratio)
    frame = _rows_to_frame(rows, spec)
    return Scope(frame, instruments, {i: overrides.get(i, default) for i in ids}, splits)


def _rows_to_frame(rows: list[tuple[object, ...]], spec: TableSpec) -> pd.DataFrame:
    columns: dict[str, object] = {
        "instrument_id": np.fromiter((int(str(row[0])) for row in rows), dtype=np.int64, count=len(rows)),
        spec.time_column: pd.to_datetime(
            np.fromiter((int(str(row[1])) for row in rows), dtype=np.int64, count=len(rows)), unit="us", utc=True
        ).as_unit("ns"),
    }
    if spec.is_order_book:
        def levels(position: int) -> npt.NDArray[np.float64]:
            return np.asarray([row[position] for row in rows], dtype=np.float64).reshape(len(rows), 5)

        bid_prices, bid_sizes, ask_prices, ask_sizes = levels(2), levels(3), levels(4), levels(5)
        prices = np.hstack([bid_prices, ask_prices])
        sizes = np.hstack([bid_sizes, ask_sizes])
        for position, name in enumerate(("bid_prices", "bid_sizes", "ask_prices", "ask_sizes"), start=2):
            columns[name] = pd.Series([list(row[position]) for row in rows], dtype=object)  # type: ignore[call-overload]
        with np.errstate(invalid="ignore"):
            columns.update({
                "best_bid": bid_prices[:, 0], "best_ask": ask_prices[:, 0],
                # NaN propagates through min/max so the not-null expectations catch it.
                "min_level_price": prices.min(axis=1) if len(rows) else prices[:, 0],
                "max_level_price": prices.max(axis=1) if len(rows) else prices[:, 0],
                "min_level_size": sizes.min(axis=1) if len(rows) else sizes[:, 0],
                "max_level_size": sizes.max(axis=1) if len(rows) else sizes[:, 0],
            })
        batch_at, context_at = 6, 7
    else:
        for position, name in enumerate(("open", "high", "low", "close", "volume"), start=2):
            columns[name] = np.fromiter((float(str(row[position])) for row in rows), dtype=np.float64,
                                        count=len(rows))
        batch_at, context_at = 7, 8
    columns["ingest_batch_id"] = pd.Series([row[batch_at] for row in rows], dtype="Int64")
    columns["is_context"] = np.fromiter((bool(row[context_at]) for row in rows), dtype=bool, count=len(rows))
    return pd.DataFrame(columns)


@lru_cache(maxsize=64)
def holidays(calendar: str | None, first_year: int, last_year: int) -> frozenset[date]:
    """Exchange holidays from exchange_calendars (whole years, cached: loading a calendar takes ~0.5 s)."""
    if calendar is None:
        return frozenset()
    import exchange_calendars  # heavy: only when a calendar is asked for

    lo, hi = date(first_year, 1, 1), date(last_year, 12, 31)
    cal = exchange_calendars.get_calendar(calendar, start=lo.isoformat(), end=hi.isoformat())
    # XBOM lists every holiday as ad hoc and has no regular-holiday rules (regular_holidays is None).
    rules = cal.regular_holidays
    regular = frozenset(day.date() for day in rules.holidays(lo, hi)) if rules is not None else frozenset()
    return regular | frozenset(day.date() for day in cal.adhoc_holidays if lo <= day.date() <= hi)


def session_grid(instrument: Instrument, grid: Timeframe, first_ns: int, last_ns: int) -> npt.NDArray[np.int64]:
    """Expected bar open times around [first_ns, last_ns]; a superset by a day on each side, because
    daily bars are stamped 00:00 UTC while the session calendar walks local dates."""
    start = datetime.fromtimestamp((first_ns - DAY_NS) / NS, tz=UTC)
    end = datetime.fromtimestamp((last_ns + DAY_NS) / NS, tz=UTC)
    return expected_bar_times(instrument, grid, start, end, holidays(instrument.calendar, start.year, end.year))


def _session_keys(times_ns: npt.NDArray[np.int64], instrument: Instrument) -> npt.NDArray[np.int64]:
    """Which session each intraday bar belongs to: the local date of (time − session open), which also
    keeps an overnight FX session together."""
    local = pd.to_datetime(times_ns, utc=True).tz_convert(instrument.timezone).tz_localize(None)
    offset = pd.Timedelta(hours=instrument.session_open.hour, minutes=instrument.session_open.minute)
    keys: npt.NDArray[np.int64] = (local - offset).to_numpy().astype("datetime64[D]").astype(np.int64)
    return keys


def robust_centre_and_scale(returns: npt.NDArray[np.float64]) -> tuple[float, float] | None:
    """Median and 1.4826 × MAD of the returns (1.2533 × mean absolute deviation when the MAD is zero);
    None when there are too few returns to trust."""
    if returns.size < MIN_RETURNS_FOR_JUMPS:
        return None
    centre = float(np.median(returns))
    spread = np.abs(returns - centre)
    scale = MAD_TO_SIGMA * float(np.median(spread))
    return centre, scale if scale > 0 else 1.2533 * float(np.mean(spread))


def robust_deviations(returns: npt.NDArray[np.float64], centre: float, scale: float) -> npt.NDArray[np.float64]:
    spread = np.abs(returns - centre)
    if scale == 0.0:
        return np.where(spread > 0, DEVIATION_CAP, 0.0)
    out: npt.NDArray[np.float64] = np.minimum(spread / scale, DEVIATION_CAP)
    return out


def jump_deviations(
    times: npt.NDArray[np.int64], prices: npt.NDArray[np.float64], opens: npt.NDArray[np.float64] | None,
    sessions: npt.NDArray[np.int64] | None, splits: dict[int, float], limit: float,
) -> npt.NDArray[np.float64]:
    """Robust deviation of each bar's log return. Intraday (`sessions` given), a session's first bar uses
    its own open→close return, since the overnight gap is real; a split on the bar's ex-date is added
    back; the bar right after a spike is measured against the price before the spike, so only the bad
    bar is flagged, not the return to normal."""
    n = prices.size
    deviations = np.zeros(n)
    if n < 2:
        return deviations
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(prices)
        returns = np.zeros(n)
        returns[1:] = np.diff(logs)
        # A split lands on the first bar at or after its ex time (daily bars are stamped 00:00 UTC, the
        # ex-date may be recorded in exchange time).
        for ex_ns, ratio in splits.items():
            index = int(np.searchsorted(times, ex_ns, "left"))
            if 0 < index < n and ex_ns > times[0]:
                returns[index] += np.log(ratio)
        first_of_session = np.zeros(n, dtype=bool)
        valid = np.ones(n, dtype=bool)
        if sessions is not None:
            first_of_session[0] = True
            first_of_session[1:] = sessions[1:] != sessions[:-1]
            if opens is not None:
                returns[first_of_session] = logs[first_of_session] - np.log(opens[first_of_session])
            else:  # order books have no open: a session's first snapshot has no return
                valid &= ~first_of_session
        else:
            valid[0] = False
        valid &= np.isfinite(returns)
        fit = robust_centre_and_scale(returns[valid])
        if fit is None:
            return deviations
        centre, scale = fit
        deviations[valid] = robust_deviations(returns[valid], centre, scale)
        flagged = deviations > limit
        reverting = flagged[:-1] & flagged[1:] & (np.sign(returns[:-1]) != np.sign(returns[1:]))
        for after in (np.flatnonzero(reverting) + 1).tolist():
            if after >= 2 and not first_of_session[after]:
                back = np.array([logs[after] - logs[after - 2]])
                deviations[after] = float(robust_deviations(back, centre, scale)[0]) if np.isfinite(back[0]) else 0.0
    return deviations


def add_checks(scope: Scope, spec: TableSpec, as_of_ns: int) -> pd.DataFrame:
    """The frame to validate: scope rows (context dropped) with the helper columns the suites assert.

    is_in_session         the timestamp lies on the instrument's session grid (trading day, hours, holidays)
    missing_bars_before   expected bars missing between the previous in-session row and this one
    stale_bars            on an instrument's last row: expected bars due by `as_of_ns` but not received
    jump_robust_deviations  robust deviation of the row's log return (close, or mid for order books)
    max_missing_bars, max_stale_bars, jump_limit: the instrument's tolerances
    """
    frame = scope.frame
    n = len(frame)
    times = pd.DatetimeIndex(frame[spec.time_column]).as_unit("ns").tz_convert(None).to_numpy().view(np.int64)
    ids = frame["instrument_id"].to_numpy()
    in_session = np.zeros(n, dtype=bool)
    missing = np.zeros(n, dtype=np.int64)
    stale = np.zeros(n, dtype=np.int64)
    jumps = np.zeros(n)
    limits = np.zeros(n)
    max_missing = np.zeros(n, dtype=np.int64)
    max_stale = np.zeros(n, dtype=np.int64)
    step_ns = spec.grid.seconds * NS
    if spec.is_order_book:
        prices = ((frame["best_bid"] + frame["best_ask"]) / 2).to_numpy(dtype=np.float64)
        opens = None
    else:
        prices = frame["close"].to_numpy(dtype=np.float64)
        opens = frame["open"].to_numpy(dtype=np.float64) if spec.grid is not Timeframe.DAY else None
    for instrument_id in np.unique(ids):
        rows = np.flatnonzero(ids == instrument_id)
        instrument = scope.instruments[int(instrument_id)]
        tolerance = scope.tolerances[int(instrument_id)]
        own = times[rows]
        slots = own - own % step_ns if spec.is_order_book else own
        grid = session_grid(instrument, spec.grid, int(own.min()), max(int(own.max()), as_of_ns))
        session_rows = np.isin(slots, grid)
        in_session[rows] = session_rows
        kept = rows[session_rows]
        kept_slots = slots[session_rows]
        if kept.size:
            # Expected slots strictly between consecutive rows (order books: several per slot count once).
            between = np.searchsorted(grid, kept_slots[1:], "left") - np.searchsorted(grid, kept_slots[:-1], "right")
            missing[kept[1:]] = np.maximum(between, 0)
            due = np.searchsorted(grid, as_of_ns - step_ns, "right") - np.searchsorted(grid, kept_slots[-1], "right")
            stale[kept[-1]] = max(int(due), 0)
            sessions = _session_keys(times[kept], instrument) if spec.grid is not Timeframe.DAY else None
            jumps[kept] = jump_deviations(
                times[kept], prices[kept], None if opens is None else opens[kept], sessions,
                scope.splits.get(int(instrument_id), {}), tolerance.jump_robust_deviations,
            )
        limits[rows] = tolerance.jump_robust_deviations
        max_missing[rows] = tolerance.max_missing_bars
        max_stale[rows] = tolerance.max_stale_bars
    checked = frame.assign(
        is_in_session=in_session, missing_bars_before=missing, max_missing_bars=max_missing, stale_bars=stale,
        max_stale_bars=max_stale, jump_robust_deviations=jumps, jump_limit=limits,
    )
    checked = checked.loc[~checked["is_context"].to_numpy()].drop(columns=["is_context"]).reset_index(drop=True)
    checked.insert(0, "row_number", np.arange(len(checked), dtype=np.int64))
    return checked
