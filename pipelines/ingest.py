"""Bulk ingestion: checks, quarantine, COPY into staging, one-transaction upsert, batch records."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import psycopg2

from tradeloom.adapters.db import Database
from tradeloom.adapters.sources import SourceBatch
from tradeloom.adapters.store import (
    instrument_ids,
    record_failed_batch,
    translate_db_error,
    upsert_instruments,
    write_bars,
    write_splits,
)
from tradeloom.errors import TradeloomError
from tradeloom.quality import key_codes, row_problems

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
    good = bars.take(clean)
    conn = db.connect()
    try:
        try:
            with conn:
                if register_instruments and batch.instruments:
                    upsert_instruments(conn, batch.instruments)
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
        seconds=time.perf_counter() - started,
    )
    log.info(
        "ingested batch %s from %s into %s: %s inserted, %s updated, %s unchanged, %s quarantined",
        report.ingest_batch_id, report.source, report.table, report.inserted, report.updated, report.unchanged,
        report.quarantined,
    )
    return report


def _record_failure(db: Database, batch: SourceBatch, error: str) -> None:
    try:
        with db.transaction() as conn:
            record_failed_batch(conn, source=batch.source, timeframe=batch.timeframe, rows=len(batch.bars),
                                error=error)
    except (TradeloomError, psycopg2.Error):
        log.warning("could not record the failed batch from %s", batch.source)
