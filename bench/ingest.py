"""Ingest throughput: tradeloom (checks + COPY to staging + upsert) vs raw COPY vs pandas to_sql.

Prints one JSON line. All three run in the same process against the same local cluster.
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

import pandas as pd  # noqa: E402
import sqlalchemy  # noqa: E402

from pipelines.ingest import ingest  # noqa: E402
from tradeloom.adapters.db import Database, migrate  # noqa: E402
from tradeloom.adapters.pgcluster import LocalCluster  # noqa: E402
from tradeloom.adapters.sources import synthetic_batch  # noqa: E402
from tradeloom.settings import PipelineSettings  # noqa: E402

INSTRUMENTS = int(os.environ.get("BENCH_INGEST_INSTRUMENTS", "50"))
DAYS = int(os.environ.get("BENCH_INGEST_DAYS", "54"))  # 50 × 54 × 375 = 1,012,500 minute bars
TO_SQL_ROWS = int(os.environ.get("BENCH_TO_SQL_ROWS", "100000"))


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

    started = time.perf_counter()
    report = ingest(batch, db, register_instruments=True)
    tradeloom_s = time.perf_counter() - started
    if report.inserted != rows:
        raise SystemExit(f"ingest landed {report.inserted} of {rows} rows")

    # Raw COPY: the same rows as text into a plain empty table, no checks, no keys.
    frame = pd.DataFrame({
        "instrument_id": 1, "bar_at": pd.to_datetime(batch.bars.bar_at, utc=True),
        "open": batch.bars.open, "high": batch.bars.high, "low": batch.bars.low, "close": batch.bars.close,
        "volume": batch.bars.volume,
    })
    payload = frame.to_csv(index=False, header=False, sep="\t", date_format="%Y-%m-%d %H:%M:%S+00").encode()
    conn = db.connect(settings.owner_role)
    with conn, conn.cursor() as cur:
        cur.execute("create table raw_copy (instrument_id int, bar_at timestamptz, open float8, high float8,"
                    " low float8, close float8, volume float8)")
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        cur.copy_expert("copy raw_copy from stdin", io.BytesIO(payload))
    raw_copy_s = time.perf_counter() - started
    conn.close()

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
    }
    cluster.psql("drop database if exists tradeloom_bench with (force)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
