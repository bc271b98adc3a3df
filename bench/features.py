"""Feature pipeline benchmark: one JSON line (see issue 3). Sizes via BENCH_FEATURES_INSTRUMENTS/DAYS."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.features import build_features
from pipelines.ingest import ingest
from tradeloom.adapters.db import Database, migrate
from tradeloom.adapters.sources import synthetic_batch
from tradeloom.features.online import OnlineFeatureEngine
from tradeloom.settings import PipelineSettings


def main() -> None:
    instruments = int(os.environ.get("BENCH_FEATURES_INSTRUMENTS", "50"))
    days = int(os.environ.get("BENCH_FEATURES_DAYS", "250"))
    timeframes = os.environ.get("BENCH_FEATURES_TIMEFRAMES", "15m").split(",")
    name = "tradeloom_bench_features"
    db = Database(PipelineSettings(database_name=name, database_url=None))
    db.cluster.up()
    db.cluster.psql(f"drop database if exists {name} with (force)")
    db.cluster.psql(f"create database {name} owner tradeloom_owner")
    db.cluster.psql("create extension if not exists timescaledb", database=name)
    migrate(db)
    ingest(synthetic_batch(instruments, days, 7), db, register_instruments=True)
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("select max(bar_at) from bars_1m")
        row = cur.fetchone()
        if row is None or row[0] is None:
            raise SystemExit("no synthetic bars were ingested")
        last = row[0]
        last_day_start = last.replace(hour=0, minute=0, second=0, microsecond=0)
        cur.execute("create table bench_held as select * from bars_1m where bar_at >= %s", (last_day_start,))
        cur.execute("delete from bars_1m where bar_at >= %s", (last_day_start,))
    started = time.perf_counter()
    full = build_features(db, full_refresh=True, enforce_data_gate=False, timeframes=timeframes, run_tests=False)
    full_s = time.perf_counter() - started
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("insert into bars_1m select * from bench_held")
    started = time.perf_counter()
    build_features(db, enforce_data_gate=False, timeframes=timeframes, run_tests=False)
    incremental_s = time.perf_counter() - started

    rng = np.random.default_rng(1)
    keys = [f"SYNTH:SYN{index:03d}" for index in range(50)]
    engine = OnlineFeatureEngine(keys, "1m")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, (1500, 50)), axis=0))
    for step in range(1500):
        if step == 500:
            started = time.perf_counter()
        engine.step(step * 60_000_000_000, close[step], close[step] * 1.001, close[step] * 0.999, close[step],
                    np.full(50, 1000.0 + step))
    online_us = (time.perf_counter() - started) / 1000 * 1e6
    print(json.dumps({
        "bench": "features", "rows": full.feature_rows, "instruments": instruments, "days": days,
        "timeframes": timeframes, "dbt_full_s": round(full_s, 2), "dbt_incremental_day_s": round(incremental_s, 2),
        "handwritten_sql_day_s": None, "online_us_per_bar_50_symbols": round(online_us, 1),
        "parity_max_abs_diff": None, "load_average": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
