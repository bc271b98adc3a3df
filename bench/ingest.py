"""Ingest throughput: tradeloom (checks + COPY to staging + upsert) vs raw COPY vs pandas to_sql.

Prints one JSON line. All three run in the same process against the same local cluster, each after a
checkpoint so none pays for another's dirty pages. Raw COPY is the issue's definition: a plain
`COPY ... FROM STDIN` (text format, rows pre-rendered, no timing of the rendering) into an empty table
with no keys or checks. The binary COPY of the very bytes tradeloom sends is reported too (the stricter
floor: tradeloom's own COPY into the keyed hypertable costs the server ~2.5x a keyless table, measured).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402
import sqlalchemy  # noqa: E402

from pipelines.ingest import ingest  # noqa: E402
from tradeloom.adapters.db import Database, migrate  # noqa: E402
from tradeloom.adapters.pg_copy import BAR_COPY_COLUMNS, BarCopyStream  # noqa: E402
from tradeloom.adapters.pgcluster import LocalCluster  # noqa: E402
from tradeloom.adapters.sources import SourceBatch, synthetic_batch  # noqa: E402
from tradeloom.settings import PipelineSettings  # noqa: E402

INSTRUMENTS = int(os.environ.get("BENCH_INGEST_INSTRUMENTS", "50"))
DAYS = int(os.environ.get("BENCH_INGEST_DAYS", "54"))  # 50 × 54 × 375 = 1,012,500 minute bars
TO_SQL_ROWS = int(os.environ.get("BENCH_TO_SQL_ROWS", "100000"))


def polars_text_payload(batch: SourceBatch, ids: np.ndarray, batch_id: int) -> bytes:
    """COPY text of the same rows; polars writes floats as shortest round-trip text."""
    bars = batch.bars
    frame = pl.DataFrame({
        "instrument_id": ids,
        "bar_at": pl.from_epoch(pl.Series(bars.bar_at // 1000), time_unit="us").dt.replace_time_zone("UTC"),
        "open": bars.open, "high": bars.high, "low": bars.low, "close": bars.close, "volume": bars.volume,
    }).with_columns(pl.lit(batch.source).alias("source"), pl.lit(batch_id).alias("ingest_batch_id"))
    return frame.write_csv(separator="\t", include_header=False,
                           datetime_format="%Y-%m-%d %H:%M:%S%.6f%z").encode()


def main() -> None:
    settings = PipelineSettings(home=ROOT / ".loom", database_name="tradeloom_bench", database_url=None)
    cluster = LocalCluster(settings.pg_dir)
    cluster.up()
    cluster.psql("drop database if exists tradeloom_bench with (force)")
    cluster.psql("create database tradeloom_bench owner tradeloom_owner")
    cluster.psql("create extension if not exists timescaledb", database="tradeloom_bench")
    db = Database(settings)
    migrate(db)

    batch = synthetic_batch(INSTRUMENTS, DAYS, seed=42)
    rows = len(batch.bars)

    cluster.psql("checkpoint", database="tradeloom_bench")
    started = time.perf_counter()
    report = ingest(batch, db, register_instruments=True)
    tradeloom_s = time.perf_counter() - started
    if report.inserted != rows:
        raise SystemExit(f"ingest landed {report.inserted} of {rows} rows")

    # The same batch again: every row is already stored, so this takes the staging + upsert path and
    # changes nothing (idempotent re-ingest).
    cluster.psql("checkpoint", database="tradeloom_bench")
    started = time.perf_counter()
    again = ingest(batch, db)
    reingest_s = time.perf_counter() - started
    if again.inserted or again.updated or again.unchanged != rows:
        raise SystemExit(f"re-ingest changed rows: {again}")

    # Raw COPY: the same rows into a plain empty table with the same columns and no keys or checks, as
    # plain (text) COPY, and as binary COPY of exactly the bytes tradeloom sends.
    ids = np.arange(1, rows + 1, dtype=np.int64) % INSTRUMENTS + 1
    stream = BarCopyStream(batch.bars, ids, batch.source, report.ingest_batch_id)
    binary = b"".join(iter(lambda: stream.read(1 << 20), b""))
    text = polars_text_payload(batch, ids, report.ingest_batch_id)
    raw_s = {}
    conn = db.connect(settings.owner_role)
    for form, payload in (("binary", binary), ("text", text)):
        with conn, conn.cursor() as cur:
            cur.execute(f"create table raw_copy_{form} (instrument_id int, bar_at timestamptz, open float8,"
                        " high float8, low float8, close float8, volume float8, source text, ingest_batch_id bigint)")
        cluster.psql("checkpoint", database="tradeloom_bench")
        started = time.perf_counter()
        with conn, conn.cursor() as cur:
            options = " (format binary)" if form == "binary" else ""
            cur.copy_expert(f"copy raw_copy_{form} ({BAR_COPY_COLUMNS}) from stdin{options}", io.BytesIO(payload),
                            1 << 20)
        raw_s[form] = time.perf_counter() - started
    conn.close()
    raw_copy_s = raw_s["text"]
    frame = pd.DataFrame({
        "instrument_id": ids, "bar_at": pd.to_datetime(batch.bars.bar_at, utc=True),
        "open": batch.bars.open, "high": batch.bars.high, "low": batch.bars.low, "close": batch.bars.close,
        "volume": batch.bars.volume,
    })

    engine = sqlalchemy.create_engine(cluster.sqlalchemy_url(settings.owner_role, "tradeloom_bench"))
    subset = frame.head(TO_SQL_ROWS)
    started = time.perf_counter()
    subset.to_sql("to_sql_bars", engine, if_exists="replace", index=False, method="multi", chunksize=5000)
    to_sql_s = time.perf_counter() - started
    engine.dispose()

    result = {
        "bench": "ingest",
        "rows": rows,
        "tradeloom_rows_per_s": round(rows / tradeloom_s),
        "raw_copy_rows_per_s": round(rows / raw_copy_s),
        "to_sql_rows_per_s": round(len(subset) / to_sql_s),
        "to_sql_rows": len(subset),
        "tradeloom_vs_raw_copy": round(raw_copy_s / tradeloom_s, 3),
        "tradeloom_vs_to_sql": round((rows / tradeloom_s) / (len(subset) / to_sql_s), 1),
        "tradeloom_s": round(tradeloom_s, 2),
        "raw_copy_s": round(raw_copy_s, 2),
        "raw_copy_format": "text",
        "tradeloom_reingest_unchanged_s": round(reingest_s, 2),
        "raw_copy_binary_rows_per_s": round(rows / raw_s["binary"]),
        "tradeloom_vs_raw_copy_binary": round(raw_s["binary"] / tradeloom_s, 3),
    }
    cluster.psql("drop database if exists tradeloom_bench with (force)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
