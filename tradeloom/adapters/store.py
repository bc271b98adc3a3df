"""The market-data store in PostgreSQL/TimescaleDB: instruments, raw bars, ingest batches, quarantine."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from tradeloom.adapters.db import Connection
from tradeloom.adapters.pg_copy import BAR_COPY_COLUMNS, BarCopyStream
from tradeloom.corporate import back_adjust_column
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


def instrument_ids(conn: Connection, keys: Iterable[str], *, lock: bool = False) -> dict[str, int]:
    """Ids of the given EXCHANGE:SYMBOL keys; raises InputError naming any unknown key.

    With `lock`, the instrument rows stay key-share locked until the caller's transaction ends (what a
    foreign key check does per inserted row, done once per instrument), so none can vanish under a batch.
    """
    wanted = sorted(set(keys))
    with conn.cursor() as cur:
        cur.execute(
            "select exchange || ':' || symbol, instrument_id from instruments"
            " where exchange || ':' || symbol = any(%s)" + (" for key share" if lock else ""),
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


def content_checksum(bars: BarColumns, ids: npt.NDArray[np.int64]) -> str:
    """sha256 of the rows' values (not of batch ids), so the same content always gives the same checksum."""
    digest = hashlib.sha256()
    for values in (ids, bars.bar_at, bars.open, bars.high, bars.low, bars.close, bars.volume):
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


# Must match chunk_time_interval in sql/004_bars.sql.
CHUNK_SECONDS = {Timeframe.MINUTE: 7 * 86400, Timeframe.HOUR: 90 * 86400, Timeframe.DAY: 365 * 86400}
BAR_COLUMNS = BAR_COPY_COLUMNS
# Bytes per read psycopg2 asks of the COPY source (its default, 8 kB, costs a Python call per 8 kB).
_COPY_READ_BYTES = 1 << 20


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
        checksum = content_checksum(bars, ids)
        inserted_updated: tuple[int, int] | None = None
        if not _overlaps(cur, table, bars, ids):
            # Fast path: nothing stored in this range, and the batch has no duplicate keys (checked
            # upstream), so COPY straight into the hypertable. A concurrent writer that got there first
            # makes it fail; the savepoint then falls back to the upsert below.
            cur.execute("savepoint direct_copy")
            try:
                cur.copy_expert(f"copy {table} ({BAR_COLUMNS}) from stdin (format binary)",
                                BarCopyStream(bars, ids, source, batch_id, progress), _COPY_READ_BYTES)
                cur.execute("release savepoint direct_copy")
                inserted_updated = (len(bars), 0)
                _clear_gate(cur, table, ids, bars.bar_at)
            except psycopg2.errors.UniqueViolation:
                cur.execute("rollback to savepoint direct_copy")
        if inserted_updated is None:
            inserted_updated = _stage_and_upsert(cur, table, BarCopyStream(bars, ids, source, batch_id, progress))
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


def _stage_and_upsert(cur: psycopg2.extensions.cursor, table: str, rows: BarCopyStream) -> tuple[int, int]:
    """COPY into a temp staging table, then one upsert; rows whose values are unchanged are not rewritten."""
    cur.execute(f"create temp table stage_bars (like {table} including defaults) on commit drop")
    cur.copy_expert(f"copy stage_bars ({BAR_COLUMNS}) from stdin (format binary)", rows, _COPY_READ_BYTES)
    # The (instrument, UTC day) cells a new or changed bar lands in lose their data-gate mark in the same
    # statement: a day validated before is not validated with bars it has not seen.
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
            returning b.instrument_id, b.bar_at, (xmax = 0) as inserted
        ), cleared as (
            delete from data_gate g
            using (select distinct instrument_id, (bar_at at time zone 'UTC')::date as day from upserted) u
            where g.target_table = %s and g.instrument_id = u.instrument_id and g.day = u.day
            returning 1
        )
        select count(*) filter (where inserted), count(*) filter (where not inserted), (select count(*) from cleared)
        from upserted
        """,
        (table,),
    )
    inserted, updated, cleared = cur.fetchone()  # type: ignore[misc]
    if cleared:
        log.info("%s: %d validated (instrument, day) cells got new or changed bars; validate them again", table,
                 cleared)
    return int(inserted), int(updated)


def _clear_gate(cur: psycopg2.extensions.cursor, table: str, ids: npt.NDArray[np.int64],
                bar_at_ns: npt.NDArray[np.int64]) -> None:
    """Drop the data-gate marks of the (instrument, UTC day) cells these new bars land in."""
    cells = np.unique(np.stack([ids, bar_at_ns // 86_400_000_000_000]), axis=1) if ids.size else np.empty((2, 0))
    cur.execute(
        "delete from data_gate g using unnest(%s::integer[], %s::integer[]) as u(instrument_id, day_number)"
        " where g.target_table = %s and g.instrument_id = u.instrument_id"
        " and g.day = date '1970-01-01' + u.day_number",
        (cells[0].astype(int).tolist(), cells[1].astype(int).tolist(), table),
    )
    if cur.rowcount:
        log.info("%s: %d validated (instrument, day) cells got new bars; validate them again", table, cur.rowcount)


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


def write_splits(conn: Connection, ids: Mapping[str, int], splits: Iterable[tuple[str, int, float]],
                 source: str) -> int:
    """Upsert (instrument key, ex-date ns, ratio) splits into corporate_actions; returns how many were written."""
    rows = [(ids[key], ex_at_ns / 1e9, ratio, source) for key, ex_at_ns, ratio in splits]
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(
                "insert into corporate_actions (instrument_id, ex_at, action, split_ratio, source)"
                " values (%s, to_timestamp(%s), 'split', %s, %s) on conflict (instrument_id, ex_at, action)"
                " do update set split_ratio = excluded.split_ratio, source = excluded.source",
                row,
            )
    return len(rows)


def load_splits(conn: Connection, instrument_ids: Sequence[int]) -> dict[int, list[tuple[int, float]]]:
    """Splits by instrument id as (ex-date ns, ratio), oldest first."""
    with conn.cursor() as cur:
        cur.execute(
            "select instrument_id, (extract(epoch from ex_at) * 1e6)::bigint * 1000, split_ratio"
            " from corporate_actions where action = 'split' and instrument_id = any(%s) order by ex_at",
            (list(instrument_ids),),
        )
        found: dict[int, list[tuple[int, float]]] = {}
        for instrument_id, ex_at_ns, ratio in cur.fetchall():
            found.setdefault(int(instrument_id), []).append((int(ex_at_ns), float(ratio)))
    return found


def load_splits_by_key(conn: Connection, keys: Sequence[str]) -> list[tuple[str, int, float]]:
    """Splits of the instruments `keys` ("EXCHANGE:SYMBOL") as (key, ex-date ns, ratio), oldest first."""
    with conn.cursor() as cur:
        cur.execute(
            "select i.exchange || ':' || i.symbol, (extract(epoch from c.ex_at) * 1e6)::bigint * 1000, c.split_ratio"
            " from corporate_actions c join instruments i using (instrument_id) where c.action = 'split'"
            " and i.exchange || ':' || i.symbol = any(%s) order by c.ex_at",
            (list(keys),),
        )
        return [(str(key), int(ex_at_ns), float(ratio)) for key, ex_at_ns, ratio in cur.fetchall()]


def load_bar_matrix(
    conn: Connection, timeframe: Timeframe, keys: Sequence[str], start_ns: int, end_ns: int,
    *, require_validated: bool = False, adjust_splits: bool = True,
) -> BarMatrix:
    """Bars with start <= bar_at < end for `keys`; with `require_validated`, only (instrument, day) cells the
    data gate marked passed (nothing downstream trades on data that has not passed validation); with
    `adjust_splits`, back-adjusted for the splits in corporate_actions, as the features the model was trained
    on are (bars after the last split are as traded, so live bars continue the series)."""
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
    for instrument_id, actions in (load_splits(conn, list(ids.values())) if adjust_splits and rows else {}).items():
        back_adjust_column(stamps, arrays, column[instrument_id], actions)
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
