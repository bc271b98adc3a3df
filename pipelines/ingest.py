"""Bulk ingestion: checks, quarantine, COPY into staging, one-transaction upsert, batch records."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import psycopg2

from tradeloom.adapters.db import Connection, Database
from tradeloom.adapters.sources import SourceBatch
from tradeloom.adapters.store import (
    instrument_ids,
    load_instruments_by_id,
    record_failed_batch,
    translate_db_error,
    upsert_instruments,
    write_bars,
    write_splits,
)
from tradeloom.calendars import NS, session_close_ns
from tradeloom.domain import Timeframe
from tradeloom.errors import TradeloomError
from tradeloom.quality import BarColumns, key_codes, row_problems

DAY_NS = 86_400 * NS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestReport:
    source: str
    table: str
    ingest_batch_id: int
    received: int
    inserted: int
    updated: int
    unchanged: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # Bars still forming at ingest (their period had not ended): left out, for a later run to land final.
    not_closed: int = 0

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())


def ingest(
    batch: SourceBatch,
    db: Database,
    *,
    register_instruments: bool = False,
    now_ns: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Land one batch whole or not at all. Re-ingesting the same rows adds nothing."""
    started = time.perf_counter()
    now_ns = time.time_ns() if now_ns is None else now_ns
    bars = batch.bars
    reasons = row_problems(bars, now_ns)
    clean = reasons == ""
    quarantine_rows = [(str(reasons[index]), batch.raw_row(int(index))) for index in np.flatnonzero(~clean)]
    conn = db.connect()
    try:
        try:
            with conn:
                if register_instruments and batch.instruments:
                    upsert_instruments(conn, batch.instruments)
                forming = _not_closed(conn, bars, clean, batch.timeframe, now_ns)
                good = bars.take(clean & ~forming)
                codes, keys = key_codes(good.instrument_key)
                known = instrument_ids(conn, keys, lock=True) if keys else {}
                ids = np.array([known[key] for key in keys], dtype=np.int64)[codes]
                result = write_bars(
                    conn, timeframe=batch.timeframe, source=batch.source, bars=good, ids=ids,
                    quarantine_rows=quarantine_rows, rows_received=len(bars), progress=progress,
                )
                if batch.splits:  # with the bars or not at all
                    split_ids = instrument_ids(conn, {key for key, _, _ in batch.splits})
                    write_splits(conn, split_ids, batch.splits, batch.source)
        except psycopg2.Error as error:
            failure = translate_db_error(error, f"ingest of {batch.source} into {batch.timeframe.table} failed")
            _record_failure(db, batch, str(failure))
            raise failure from error
    finally:
        conn.close()
    report = IngestReport(
        source=batch.source, table=batch.timeframe.table, ingest_batch_id=result.ingest_batch_id,
        received=len(bars), inserted=result.inserted, updated=result.updated, unchanged=result.unchanged,
        quarantined_by_reason=dict(Counter(reason for reason, _ in quarantine_rows)),
        seconds=time.perf_counter() - started, not_closed=int(np.count_nonzero(forming)),
    )
    log.info(
        "ingested batch %s from %s into %s: %s inserted, %s updated, %s unchanged, %s quarantined, %s still forming"
        " (left for a later run)", report.ingest_batch_id, report.source, report.table, report.inserted,
        report.updated, report.unchanged, report.quarantined, report.not_closed,
    )
    return report


def _not_closed(conn: Connection, bars: BarColumns, candidates: npt.NDArray[np.bool_], timeframe: Timeframe,
                now_ns: int) -> npt.NDArray[np.bool_]:
    """Rows (among `candidates`) whose bar had not ended at `now_ns`: a source's forming bar (Kite's history
    includes the current minute and today's daily candle) has a close that is not final yet. An intraday bar
    ends a timeframe after its open stamp; a daily bar, stamped 00:00 UTC of its date, at its instrument's
    session close that day."""
    if timeframe is not Timeframe.DAY:
        return candidates & (bars.bar_at + timeframe.seconds * NS > now_ns)
    forming = np.zeros(len(bars), dtype=bool)
    # A session closes within a day and a half of 00:00 UTC of its date in any time zone: older rows are final.
    recent = np.flatnonzero(candidates & (bars.bar_at + 2 * DAY_NS > now_ns))
    if recent.size == 0:
        return forming
    keys = {str(bars.instrument_key[row]) for row in recent}
    by_key = {instrument.key: instrument
              for instrument in load_instruments_by_id(conn, list(instrument_ids(conn, keys).values())).values()}
    closes: dict[tuple[str, int], int] = {}
    for row in recent.tolist():
        key, stamp = str(bars.instrument_key[row]), int(bars.bar_at[row])
        if (key, stamp) not in closes:
            trading_date = datetime.fromtimestamp(stamp // NS, tz=UTC).date()
            closes[key, stamp] = session_close_ns(by_key[key], trading_date)
        forming[row] = closes[key, stamp] > now_ns
    return forming


def _record_failure(db: Database, batch: SourceBatch, error: str) -> None:
    try:
        with db.transaction() as conn:
            record_failed_batch(conn, source=batch.source, timeframe=batch.timeframe, rows=len(batch.bars),
                                error=error)
    except (TradeloomError, psycopg2.Error):
        log.warning("could not record the failed batch from %s", batch.source)
