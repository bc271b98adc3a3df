"""Feature pipeline benchmark: one JSON line (see issue 3). Sizes via BENCH_FEATURES_INSTRUMENTS/DAYS/TIMEFRAME.

Builds seeded synthetic minute bars into a private database, times a full dbt build without the last
day, an incremental build of that day, and one hand-written SQL statement computing the same day's
features from the same adjusted bars (the floor). The online engine is timed on 50 instruments of
minute bars, and its output fed the built timeframe's bars is compared with the dbt `features` table.
"""

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
from tradeloom.features.spec import DEFAULT_SPEC
from tradeloom.settings import PipelineSettings

NS = 1_000_000_000

# The DEFAULT_SPEC features of one row timeframe (%(timeframe)s) for bars in [%(start)s, %(end)s), written
# out by hand in one statement: windows over each series, the custom recursive aggregates over the
# whole series (they need it to be exact), the 1h RSI as-of the row's close. Same column order.
HANDWRITTEN_DAY = """
with s as (
    select b.instrument_id, b.bar_at, b.high, b.low, b.close, b.volume, i.exchange,
        row_number() over w as n, lag(close) over w as pc, ln(close / lag(close) over w) as lr
    from int_bars_adjusted b join instruments i using (instrument_id)
    where b.timeframe = %(timeframe)s
    window w as (partition by b.instrument_id order by b.bar_at)
), d as (
    select s.*,
        case when pc is not null then greatest(high - low, greatest(abs(high - pc), abs(low - pc))) end as tr,
        case when pc is not null then greatest(close - pc, 0.0) end as gain,
        case when pc is not null then greatest(pc - close, 0.0) end as loss
    from s
), r as (
    select d.*, ref.lr as rlr
    from d
    left join (values ('NASDAQ', 'NASDAQ:AAPL'), ('NYSE', 'NASDAQ:AAPL'), ('SYNTH', 'SYNTH:SYN000')) as m (exchange, k)
        on m.exchange = d.exchange
    left join instruments ri on ri.exchange || ':' || ri.symbol = m.k
    left join d as ref on ref.instrument_id = ri.instrument_id and ref.bar_at = d.bar_at
), a as (
    select r.*,
        lag(close, 1) over w as c1, lag(close, 5) over w as c5, lag(close, 20) over w as c20,
        avg(close) over w20 as m20, stddev_pop(close) over w20 as sd20,
        ema(close, 12) over wr as e12, ema(close, 26) over wr as e26,
        wilder_mean(gain, 14) over wr as g14, wilder_mean(loss, 14) over wr as l14,
        wilder_mean(tr, 14) over wr as atr14, stddev_pop(lr) over w20 as rv20,
        avg(volume) over w20 as vm20, stddev_pop(volume) over w20 as vsd20,
        max(high) over w20 as h20, min(low) over w20 as lo20,
        count(lr) over w20 as nlr, count(rlr) over w20 as nrlr, corr(lr, rlr) over w20 as cr20,
        case when n >= 50 then volume_profile(array_agg(high) over w50, array_agg(low) over w50,
            array_agg(close) over w50, array_agg(volume) over w50, 10, 0.7) end as vp
    from r
    window w as (partition by instrument_id order by bar_at),
        wr as (w rows between unbounded preceding and current row),
        w20 as (w rows between 19 preceding and current row),
        w50 as (w rows between 49 preceding and current row)
), b as (
    select a.*, ema(e12 - e26, 9) over (partition by instrument_id order by bar_at
        rows between unbounded preceding and current row) as sig
    from a
), h as materialized (
    select instrument_id, bar_at + interval '1 hour' as available_at,
        wilder_mean(case when pc is not null then greatest(close - pc, 0.0) end, 14) over hw as g,
        wilder_mean(case when pc is not null then greatest(pc - close, 0.0) end, 14) over hw as l
    from (select instrument_id, bar_at, close, lag(close) over (partition by instrument_id order by bar_at) as pc
          from int_bars_adjusted where timeframe = '1h') as hb
    window hw as (partition by instrument_id order by bar_at rows between unbounded preceding and current row)
), hd as materialized (
    -- Only the coarse values a row of the day can see (the as-of lookup below scans this).
    select * from h where available_at > %(start)s::timestamptz - interval '2 days'
        and available_at <= %(end)s::timestamptz + interval '1 hour'
)
select b.instrument_id, b.bar_at,
    case when n > 1 then close / c1 - 1 end, case when n > 5 then close / c5 - 1 end,
    case when n > 20 then close / c20 - 1 end,
    case when n > 1 then ln(close / c1) end, case when n > 5 then ln(close / c5) end,
    case when n > 20 then ln(close / c20) end,
    case when n >= 20 then m20 end, e12, e26,
    case when g14 + l14 <> 0 then 100.0 * (g14 / (g14 + l14)) when g14 + l14 = 0 then 0.0 end,
    e12 - e26, sig, e12 - e26 - sig,
    case when n >= 20 then m20 + 2.0 * sd20 end, case when n >= 20 then m20 - 2.0 * sd20 end,
    case when n >= 20 then (close - (m20 - 2.0 * sd20)) / nullif((m20 + 2.0 * sd20) - (m20 - 2.0 * sd20), 0) end,
    atr14, case when n >= 21 then rv20 end,
    case when n >= 20 then (volume - vm20) / nullif(vsd20, 0) end,
    vp[1], vp[2], vp[3],
    case when n >= 20 then (h20 + lo20 + close) / 3.0 end,
    case when n >= 20 then 2.0 * ((h20 + lo20 + close) / 3.0) - lo20 end,
    case when n >= 20 then 2.0 * ((h20 + lo20 + close) / 3.0) - h20 end,
    case when nlr = 20 and nrlr = 20 then cr20 end,
    null::double precision, null::double precision,
    (select case when hh.g + hh.l <> 0 then 100.0 * (hh.g / (hh.g + hh.l)) when hh.g + hh.l = 0 then 0.0 end
     from hd hh where hh.instrument_id = b.instrument_id and hh.available_at <= b.bar_at + %(row_interval)s::interval
     order by hh.available_at desc limit 1)
from b
where b.bar_at >= %(start)s and b.bar_at < %(end)s
order by b.instrument_id, b.bar_at
"""
INTERVALS = {"1m": "1 minute", "5m": "5 minutes", "15m": "15 minutes", "1h": "1 hour", "1d": "1 day"}


def _online_speed(steps: int = 2500, warm_up: int = 500, width: int = 50) -> tuple[float, float]:
    """Microseconds per step (wall, CPU) for `width` instruments of seeded minute bars, after warm-up."""
    rng = np.random.default_rng(1)
    keys = [f"SYNTH:SYN{index:03d}" for index in range(width)]
    engine = OnlineFeatureEngine(keys, "1m")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, (steps, width)), axis=0))
    high, low = close * (1 + rng.uniform(0, 0.002, close.shape)), close * (1 - rng.uniform(0, 0.002, close.shape))
    volume = rng.integers(100, 5000, close.shape).astype(float)
    wall = cpu = 0.0
    for step in range(steps):
        if step == warm_up:
            wall, cpu = time.perf_counter(), time.process_time()
        engine.step(step * 60 * NS, close[step], high[step], low[step], close[step], volume[step])
    count = steps - warm_up
    return (time.perf_counter() - wall) / count * 1e6, (time.process_time() - cpu) / count * 1e6


def _parity(db: Database, timeframe: str) -> float:
    """Max |online - dbt features| over every feature, instrument and bar of `timeframe` (a value on one
    side only counts as infinite)."""
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select instrument_id, exchange || ':' || symbol from instruments order by instrument_id")
        ids, keys = zip(*cur.fetchall(), strict=True)
        cur.execute("select instrument_id, (extract(epoch from bar_at) * 1e6)::bigint * 1000, open, high, low, "
                    "close, volume from int_bars_adjusted where timeframe = %s order by bar_at", (timeframe,))
        bars = cur.fetchall()
        cur.execute(f"select instrument_id, (extract(epoch from bar_at) * 1e6)::bigint * 1000, "
                    f"{', '.join(DEFAULT_SPEC.names)} from features where timeframe = %s", (timeframe,))
        table = cur.fetchall()
    position = {instrument_id: index for index, instrument_id in enumerate(ids)}
    stamps = np.unique(np.array([row[1] for row in bars], dtype=np.int64))
    grid = np.full((len(stamps), len(ids), 5), np.nan)
    at = np.searchsorted(stamps, [row[1] for row in bars])
    for row, index in zip(bars, at, strict=True):
        grid[index, position[row[0]]] = row[2:]
    expected = np.full((len(stamps), len(ids), len(DEFAULT_SPEC.names)), np.nan)
    for row in table:
        expected[int(np.searchsorted(stamps, row[1])), position[row[0]]] = [
            np.nan if value is None else value for value in row[2:]]
    engine = OnlineFeatureEngine(list(keys), timeframe)
    online = np.empty_like(expected)
    for index, stamp in enumerate(stamps):
        g = grid[index]
        online[index] = engine.step(int(stamp), g[:, 0], g[:, 1], g[:, 2], g[:, 3], g[:, 4])
    return _max_difference(online, expected)


def _max_difference(left: np.ndarray, right: np.ndarray) -> float:
    if (np.isnan(left) != np.isnan(right)).any():
        return float("inf")
    both = ~np.isnan(left)
    return float(np.max(np.abs(left[both] - right[both]))) if both.any() else 0.0


def main() -> None:
    instruments = int(os.environ.get("BENCH_FEATURES_INSTRUMENTS", "50"))
    days = int(os.environ.get("BENCH_FEATURES_DAYS", "250"))
    timeframe = os.environ.get("BENCH_FEATURES_TIMEFRAME", "15m")
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
        day_start = row[0].replace(hour=0, minute=0, second=0, microsecond=0)
        cur.execute("create table bench_held as select * from bars_1m where bar_at >= %s", (day_start,))
        cur.execute("delete from bars_1m where bar_at >= %s", (day_start,))
    started = time.perf_counter()
    build_features(db, full_refresh=True, enforce_data_gate=False, timeframes=[timeframe], run_tests=False)
    full_s = time.perf_counter() - started
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("insert into bars_1m select * from bench_held")
    started = time.perf_counter()
    incremental = build_features(db, enforce_data_gate=False, timeframes=[timeframe], run_tests=False)
    incremental_s = time.perf_counter() - started

    day_end = day_start.replace(hour=23, minute=59, second=59)
    query = {"timeframe": timeframe, "start": day_start, "end": day_end, "row_interval": INTERVALS[timeframe]}
    with db.transaction() as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(HANDWRITTEN_DAY, query)
        handwritten = cur.fetchall()
        handwritten_s = time.perf_counter() - started
        cur.execute(f"select instrument_id, bar_at, {', '.join(DEFAULT_SPEC.names)} from features "
                    "where timeframe = %s and bar_at >= %s and bar_at < %s order by instrument_id, bar_at",
                    (timeframe, day_start, day_end))
        built = cur.fetchall()
    as_array = [np.array([[np.nan if v is None else float(v) for v in row[2:]] for row in rows])
                for rows in (handwritten, built)]
    handwritten_diff = _max_difference(*as_array) if len(handwritten) == len(built) else float("inf")

    online_us, online_cpu_us = _online_speed()
    parity = _parity(db, timeframe)
    print(json.dumps({
        "bench": "features", "rows": incremental.feature_rows, "instruments": instruments, "days": days,
        "timeframe": timeframe, "dbt_full_s": round(full_s, 2), "dbt_incremental_day_s": round(incremental_s, 2),
        "handwritten_sql_day_s": round(handwritten_s, 2), "handwritten_day_rows": len(handwritten),
        "handwritten_vs_dbt_max_abs_diff": handwritten_diff,
        "online_us_per_bar_50_symbols": round(online_us, 1),
        "online_cpu_us_per_bar_50_symbols": round(online_cpu_us, 1),
        "parity_max_abs_diff": parity, "load_average": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
