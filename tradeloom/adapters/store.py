"""The market-data store in PostgreSQL/TimescaleDB: instruments, raw bars, ingest batches, quarantine."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import polars as pl
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from tradeloom.adapters.db import Connection
from tradeloom.domain import Instrument, Segment, Timeframe
from tradeloom.errors import DatabaseUnavailableError, InputError
from tradeloom.quality import BarColumns

log = logging.getLogger(__name__)

INSTRUMENT_COLUMNS = (
    "exchange", "symbol", "segment", "currency", "tick_size", "lot_size", "timezone", "session_open",
    "session_close", "trading_days", "calendar", "is_synthetic", "kite_token", "fyers_symbol",
)


def upsert_instruments(conn: Connection, instruments: Iterable[Instrument]) -> int:
    rows = [
        (i.exchange, i.symbol, i.segment.value, i.currency, i.tick_size, i.lot_size, i.timezone, i.session_open,
         i.session_close, list(i.trading_days), i.calendar, i.is_synthetic, i.kite_token, i.fyers_symbol)
        for i in instruments
    ]
    if not rows:
        return 0
    columns = ", ".join(INSTRUMENT_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in INSTRUMENT_COLUMNS[2:])
    with conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            f"insert into instruments ({columns}) values %s on conflict (exchange, symbol) do update set "
            f"{updates}, updated_at = now()",
            rows,
        )
    return len(rows)


def instrument_ids(conn: Connection, keys: Iterable[str]) -> dict[str, int]:
    """Ids of the given EXCHANGE:SYMBOL keys; raises InputError naming any unknown key."""
    wanted = sorted(set(keys))
    with conn.cursor() as cur:
        cur.execute(
            "select exchange || ':' || symbol, instrument_id from instruments"
            " where exchange || ':' || symbol = any(%s)",
            (wanted,),
        )
        found = {str(key): int(ident) for key, ident in cur.fetchall()}
    unknown = [key for key in wanted if key not in found]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise InputError(
            f"unknown instrument(s): {shown}; add them first with `tradeloom instruments add EXCHANGE:SYMBOL`"
        )
    return found


@dataclass(frozen=True)
class WriteResult:
    ingest_batch_id: int
    inserted: int
    updated: int
    unchanged: int
    quarantined: int
    checksum: str


class _ProgressReader(io.RawIOBase):
    """Feeds COPY from a bytes buffer, reporting bytes sent so long loads can show progress."""

    def __init__(self, data: bytes, progress: Callable[[int], None] | None) -> None:
        self._view = memoryview(data)
        self._offset = 0
        self._progress = progress

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._offset + size)
        chunk = bytes(self._view[self._offset:end])
        self._offset = end
        if self._progress is not None and chunk:
            self._progress(len(chunk))
        return chunk


def bars_copy_payload(bars: BarColumns, ids: npt.NDArray[np.int64], source: str, batch_id: int) -> bytes:
    """Tab-separated COPY text in the raw tables' column order.

    polars writes floats as shortest round-trip text, so nothing is lost on the way in.
    """
    if "\t" in source or "\n" in source or "\\" in source:
        raise InputError(f"source name {source!r} must not contain tabs, newlines or backslashes")
    frame = pl.DataFrame({
        "instrument_id": ids,
        "bar_at": pl.from_epoch(pl.Series(bars.bar_at // 1000), time_unit="us").dt.replace_time_zone("UTC"),
        "open": bars.open, "high": bars.high, "low": bars.low, "close": bars.close, "volume": bars.volume,
    }).with_columns(pl.lit(source).alias("source"), pl.lit(batch_id).alias("ingest_batch_id"))
    return frame.write_csv(separator="\t", include_header=False, datetime_format="%Y-%m-%d %H:%M:%S%.6f%z").encode()


def content_checksum(bars: BarColumns, ids: npt.NDArray[np.int64]) -> str:
    """sha256 of the rows' values (not of batch ids), so the same content always gives the same checksum."""
    digest = hashlib.sha256()
    for values in (ids, bars.bar_at, bars.open, bars.high, bars.low, bars.close, bars.volume):
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


# Must match chunk_time_interval in sql/004_bars.sql.
CHUNK_SECONDS = {Timeframe.MINUTE: 7 * 86400, Timeframe.HOUR: 90 * 86400, Timeframe.DAY: 365 * 86400}
BAR_COLUMNS = "instrument_id, bar_at, open, high, low, close, volume, source, ingest_batch_id"


def _overlaps(cur: psycopg2.extensions.cursor, table: str, bars: BarColumns, ids: npt.NDArray[np.int64]) -> bool:
    if len(bars) == 0:
        return False
    cur.execute(
        f"select exists (select 1 from {table} where instrument_id = any(%s)"
        " and bar_at between timestamptz 'epoch' + %s * interval '1 microsecond'"
        " and timestamptz 'epoch' + %s * interval '1 microsecond')",
        (sorted({int(i) for i in np.unique(ids)}), int(bars.bar_at.min() // 1000), int(bars.bar_at.max() // 1000)),
    )
    return bool(cur.fetchone()[0])  # type: ignore[index]


def write_bars(
    conn: Connection,
    *,
    timeframe: Timeframe,
    source: str,
    bars: BarColumns,
    ids: npt.NDArray[np.int64],
    quarantine_rows: Sequence[tuple[str, dict[str, object]]],
    rows_received: int,
    progress: Callable[[int], None] | None = None,
) -> WriteResult:
    """Stage with COPY and upsert into the hypertable, in the caller's transaction (all or nothing)."""
    table = timeframe.table
    # Rows grouped by hypertable chunk, then key order: TimescaleDB's COPY then routes each run to one
    # chunk and appends to its primary-key index (measured 2x faster than instrument-major order).
    order = np.lexsort((bars.bar_at, ids, bars.bar_at // (CHUNK_SECONDS[timeframe] * 1_000_000_000)))
    bars, ids = bars.take_order(order), ids[order]
    with conn.cursor() as cur:
        cur.execute("select nextval('ingest_batches_ingest_batch_id_seq')")
        batch_id = int(cur.fetchone()[0])  # type: ignore[index]
        payload = bars_copy_payload(bars, ids, source, batch_id)
        checksum = content_checksum(bars, ids)
        inserted_updated: tuple[int, int] | None = None
        if not _overlaps(cur, table, bars, ids):
            # Fast path: nothing stored in this range, and the batch has no duplicate keys (checked
            # upstream), so COPY straight into the hypertable. A concurrent writer that got there first
            # makes it fail; the savepoint then falls back to the upsert below.
            cur.execute("savepoint direct_copy")
            try:
                cur.copy_expert(f"copy {table} ({BAR_COLUMNS}) from stdin", _ProgressReader(payload, progress))
                cur.execute("release savepoint direct_copy")
                inserted_updated = (len(bars), 0)
            except psycopg2.errors.UniqueViolation:
                cur.execute("rollback to savepoint direct_copy")
        if inserted_updated is None:
            inserted_updated = _stage_and_upsert(cur, table, payload, progress)
        inserted, updated = inserted_updated
        cur.execute(
            """
            insert into ingest_batches (ingest_batch_id, source, target_table, range_start_at, range_end_at,
                rows_received, rows_inserted, rows_updated, rows_unchanged, rows_quarantined, checksum, status,
                finished_at)
            values (%(id)s, %(source)s, %(table)s,
                    to_timestamp(%(first)s / 1e6), to_timestamp(%(last)s / 1e6),
                    %(received)s, %(inserted)s, %(updated)s, %(unchanged)s, %(quarantined)s, %(checksum)s,
                    'committed', now())
            """,
            {
                "id": batch_id, "source": source, "table": table,
                "first": int(bars.bar_at.min() // 1000) if len(bars) else None,
                "last": int(bars.bar_at.max() // 1000) if len(bars) else None,
                "received": rows_received, "inserted": inserted, "updated": updated,
                "unchanged": len(bars) - inserted - updated, "quarantined": len(quarantine_rows),
                "checksum": checksum,
            },
        )
        if quarantine_rows:
            psycopg2.extras.execute_values(
                cur,
                "insert into quarantine (ingest_batch_id, target_table, reason, raw_row) values %s",
                [(batch_id, table, reason, json.dumps(raw, default=str, allow_nan=False))
                 for reason, raw in quarantine_rows],
                page_size=1000,
            )
    return WriteResult(batch_id, inserted, updated, len(bars) - inserted - updated, len(quarantine_rows), checksum)


def _stage_and_upsert(
    cur: psycopg2.extensions.cursor, table: str, payload: bytes, progress: Callable[[int], None] | None
) -> tuple[int, int]:
    """COPY into a temp staging table, then one upsert; rows whose values are unchanged are not rewritten."""
    cur.execute(f"create temp table stage_bars (like {table} including defaults) on commit drop")
    cur.copy_expert(f"copy stage_bars ({BAR_COLUMNS}) from stdin", _ProgressReader(payload, progress))
    cur.execute(
        f"""
        with upserted as (
            insert into {table} as b ({BAR_COLUMNS})
            select {BAR_COLUMNS} from stage_bars
            on conflict (instrument_id, bar_at) do update set
                open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
                volume = excluded.volume, source = excluded.source, ingest_batch_id = excluded.ingest_batch_id
            where (b.open, b.high, b.low, b.close, b.volume)
                  is distinct from (excluded.open, excluded.high, excluded.low, excluded.close, excluded.volume)
            returning (xmax = 0) as inserted
        )
        select count(*) filter (where inserted), count(*) filter (where not inserted) from upserted
        """
    )
    inserted, updated = cur.fetchone()  # type: ignore[misc]
    return int(inserted), int(updated)


def record_failed_batch(conn: Connection, *, source: str, timeframe: Timeframe, rows: int, error: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "insert into ingest_batches (source, target_table, rows_received, status, error, finished_at)"
            " values (%s, %s, %s, 'failed', %s, now())",
            (source, timeframe.table, rows, error[:2000]),
        )


def translate_db_error(error: psycopg2.Error, what: str) -> DatabaseUnavailableError:
    message = (error.pgerror or str(error)).strip().splitlines()[0] if (error.pgerror or str(error)) else "error"
    return DatabaseUnavailableError(f"{what}: {message}")


@dataclass(frozen=True)
class BarMatrix:
    """Bars of several instruments aligned on one time axis: arrays (T, N), NaN where a bar is missing."""

    keys: tuple[str, ...]
    bar_at_ns: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]
    ingest_batches: tuple[int, ...] = ()


def load_bar_matrix(
    conn: Connection, timeframe: Timeframe, keys: Sequence[str], start_ns: int, end_ns: int,
    *, require_validated: bool = False,
) -> BarMatrix:
    """Bars with start <= bar_at < end for `keys`; with `require_validated`, only (instrument, day) cells the
    data gate marked passed (nothing downstream trades on data that has not passed validation)."""
    ids = instrument_ids(conn, keys)
    gate = (
        " and exists (select 1 from data_gate g where g.target_table = %(table)s and g.instrument_id = b.instrument_id"
        " and g.day = (b.bar_at at time zone 'UTC')::date and g.status = 'passed')"
        if require_validated else ""
    )
    with conn.cursor() as cur:
        cur.execute(
            f"select b.instrument_id, (extract(epoch from b.bar_at) * 1000000)::bigint, b.open, b.high, b.low, b.close,"
            f" b.volume, b.ingest_batch_id from {timeframe.table} b where b.instrument_id = any(%(ids)s)"
            " and b.bar_at >= timestamptz 'epoch' + %(start)s * interval '1 microsecond'"
            f" and b.bar_at < timestamptz 'epoch' + %(end)s * interval '1 microsecond'{gate} order by 2",
            {"ids": list(ids.values()), "start": start_ns // 1000, "end": end_ns // 1000, "table": timeframe.table},
        )
        rows = cur.fetchall()
    column = {ids[key]: i for i, key in enumerate(keys)}
    stamps = np.unique(np.array([row[1] for row in rows], dtype=np.int64)) * 1000
    position = {int(stamp): t for t, stamp in enumerate(stamps)}
    shape = (len(stamps), len(keys))
    arrays = {name: np.full(shape, np.nan) for name in ("open", "high", "low", "close", "volume")}
    batches: set[int] = set()
    for instrument_id, micros, o, h, lo, c, v, batch in rows:
        t, i = position[int(micros) * 1000], column[int(instrument_id)]
        arrays["open"][t, i], arrays["high"][t, i], arrays["low"][t, i] = o, h, lo
        arrays["close"][t, i], arrays["volume"][t, i] = c, v
        if batch is not None:
            batches.add(int(batch))
    return BarMatrix(tuple(keys), stamps, arrays["open"], arrays["high"], arrays["low"], arrays["close"],
                     arrays["volume"], tuple(sorted(batches)))


_INSTRUMENT_SELECT = (
    "select instrument_id, exchange, symbol, segment, currency, tick_size, lot_size, timezone, session_open,"
    " session_close, trading_days, calendar, is_synthetic, kite_token, fyers_symbol from instruments"
)


def _instruments_by_id(conn: Connection, where: str = "", params: tuple[object, ...] = ()) -> dict[int, Instrument]:
    from datetime import time as time_of_day

    with conn.cursor() as cur:
        cur.execute(f"{_INSTRUMENT_SELECT} {where} order by exchange, symbol", params)
        rows = cur.fetchall()
    out: dict[int, Instrument] = {}
    for (ident, exchange, symbol, segment, currency, tick, lot, zone, opens, closes, days, calendar, synthetic,
         kite, fyers) in rows:
        assert isinstance(opens, time_of_day) and isinstance(closes, time_of_day)  # noqa: S101 - schema types
        out[int(ident)] = Instrument(
            exchange=exchange, symbol=symbol, segment=Segment(segment), currency=currency, tick_size=Decimal(tick),
            lot_size=int(lot), timezone=zone, session_open=opens, session_close=closes,
            trading_days=tuple(int(day) for day in days), calendar=calendar, is_synthetic=bool(synthetic),
            kite_token=kite, fyers_symbol=fyers,
        )
    return out


def load_instruments_by_id(conn: Connection, ids: Sequence[int]) -> dict[int, Instrument]:
    return _instruments_by_id(conn, "where instrument_id = any(%s)", (list(ids),))


def load_instruments(conn: Connection, keys: Sequence[str] | None = None) -> list[Instrument]:
    """Instruments by EXCHANGE:SYMBOL key (in the order given), or all of them."""
    by_key = {instrument.key: instrument for instrument in _instruments_by_id(conn).values()}
    if keys is None:
        return list(by_key.values())
    unknown = [key for key in keys if key not in by_key]
    if unknown:
        raise InputError(f"unknown instrument(s): {', '.join(unknown)}; add them with `tradeloom instruments add`")
    return [by_key[key] for key in keys]
