"""The market-data store in PostgreSQL/TimescaleDB: instruments, raw bars, ingest batches, quarantine."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl
import psycopg2
import psycopg2.extras

from tradeloom.adapters.db import Connection
from tradeloom.domain import Instrument, Timeframe
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


def bars_copy_payload(bars: BarColumns, ids: npt.NDArray[np.int64]) -> bytes:
    """Tab-separated COPY text: instrument_id, bar_at (epoch µs), open, high, low, close, volume.

    polars writes floats as shortest round-trip text, so nothing is lost on the way in.
    """
    frame = pl.DataFrame({
        "instrument_id": ids, "bar_us": bars.bar_at // 1000, "open": bars.open, "high": bars.high,
        "low": bars.low, "close": bars.close, "volume": bars.volume,
    })
    return frame.write_csv(separator="\t", include_header=False).encode()


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
    payload = bars_copy_payload(bars, ids)
    checksum = hashlib.sha256(payload).hexdigest()
    with conn.cursor() as cur:
        cur.execute("select nextval('ingest_batches_ingest_batch_id_seq')")
        batch_id = int(cur.fetchone()[0])  # type: ignore[index]
        cur.execute(
            "create temp table stage_bars (instrument_id integer, bar_us bigint, open float8, high float8,"
            " low float8, close float8, volume float8) on commit drop"
        )
        cur.copy_expert("copy stage_bars from stdin", _ProgressReader(payload, progress))
        cur.execute(
            f"""
            with upserted as (
                insert into {table} as b
                    (instrument_id, bar_at, open, high, low, close, volume, source, ingest_batch_id)
                select instrument_id, timestamptz 'epoch' + bar_us * interval '1 microsecond',
                       open, high, low, close, volume, %(source)s, %(batch)s
                from stage_bars
                on conflict (instrument_id, bar_at) do update set
                    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
                    volume = excluded.volume, source = excluded.source, ingest_batch_id = excluded.ingest_batch_id
                where (b.open, b.high, b.low, b.close, b.volume)
                      is distinct from (excluded.open, excluded.high, excluded.low, excluded.close, excluded.volume)
                returning (xmax = 0) as inserted
            )
            select count(*) filter (where inserted), count(*) filter (where not inserted) from upserted
            """,
            {"source": source, "batch": batch_id},
        )
        inserted, updated = (int(value) for value in cur.fetchone())  # type: ignore[union-attr]
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
                [(batch_id, table, reason, json.dumps(raw, default=str, allow_nan=False)) for reason, raw in quarantine_rows],
                page_size=1000,
            )
    return WriteResult(batch_id, inserted, updated, len(bars) - inserted - updated, len(quarantine_rows), checksum)


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
