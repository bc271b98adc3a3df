"""The dbt feature pipeline on real bundled and synthetic bars: online parity, TA-Lib, the data gate,
labels, no look-ahead, incremental == full, docs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import talib

from pipelines.features import build_features, feature_matrix, generate_docs
from pipelines.ingest import ingest
from tests.integration.features_support import (
    adjusted_bars,
    instrument_keys,
    max_difference_by_feature,
    online_features,
    table_features,
)
from tradeloom.adapters.db import Database
from tradeloom.adapters.sources import bundled_batches, synthetic_batch
from tradeloom.features.spec import DEFAULT_SPEC

pytestmark = pytest.mark.db
TIMEFRAMES = ["1m", "15m", "1h", "1d"]
UNVALIDATED_DAY = "2024-01-03"


def _reset_marts(db: Database) -> None:
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        # TimescaleDB drops a hypertable only on its own.
        cur.execute("drop table if exists labels")
        cur.execute("drop table if exists features")


def _pass_gate(db: Database, *, skip: tuple[str, str] | None = None, day: str | None = None) -> None:
    """Mark (instrument, UTC day) rows passed, as the validation helper would, except `skip`."""
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("insert into validation_runs (target_table, status) values ('test', 'passed') "
                    "returning validation_run_id")
        run = cur.fetchone()
        assert run is not None
        for table in ("bars_1m", "bars_1h", "bars_1d"):
            cur.execute(
                f"insert into data_gate (target_table, instrument_id, day, status, validation_run_id) "
                f"select distinct %s, b.instrument_id, (b.bar_at at time zone 'UTC')::date, 'passed', %s "
                f"from {table} b join instruments i using (instrument_id) "
                "where (%s::date is null or (b.bar_at at time zone 'UTC')::date = %s::date) "
                "and not (i.exchange || ':' || i.symbol = %s and (b.bar_at at time zone 'UTC')::date = %s::date) "
                "on conflict do nothing",
                (table, run[0], day, day, skip[0] if skip else "", skip[1] if skip else "1900-01-01"),
            )


@pytest.fixture(scope="module")
def built(database: Database) -> Iterator[Database]:
    with database.transaction(database.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("truncate data_gate, validation_runs, corporate_actions, quarantine, ingest_batches, bars_1m, "
                    "bars_1h, bars_1d, order_book_snapshots, instruments restart identity cascade")
    _reset_marts(database)
    for batch in bundled_batches():
        ingest(batch, database, register_instruments=True)
    ingest(synthetic_batch(3, 4, 7), database, register_instruments=True)
    _pass_gate(database, skip=("SYNTH:SYN001", UNVALIDATED_DAY))
    result = build_features(database, full_refresh=True, timeframes=TIMEFRAMES)
    assert result.success and result.feature_rows > 0
    yield database


def test_features_online_engine_fed_same_bars_matches_dbt_table(built: Database) -> None:
    keys = instrument_keys(built)
    cases = {"1d": ["NASDAQ:AAPL", "NYSE:IBM", "NASDAQ:MSFT", "NASDAQ:GOOGL"], "1h": ["FX:EURUSD"],
             "1m": ["SYNTH:SYN000", "SYNTH:SYN001", "SYNTH:SYN002"], "15m": ["SYNTH:SYN000", "SYNTH:SYN002"]}
    covered: set[str] = set()
    for timeframe, wanted in cases.items():
        ids = [instrument_id for instrument_id, key in keys.items() if key in wanted]
        stamps, grid = adjusted_bars(built, timeframe, ids)
        table = table_features(built, timeframe, ids, stamps)
        online = online_features([keys[i] for i in ids], timeframe, stamps, grid)
        worst = max_difference_by_feature(table, online)
        assert max(worst.values()) <= 1e-9, {name: value for name, value in worst.items() if value > 1e-9}
        covered |= {name for column, name in enumerate(DEFAULT_SPEC.names) if np.isfinite(table[..., column]).any()}
    # Every feature but the order-book ones (no snapshots here) is exercised with real values.
    assert covered == set(DEFAULT_SPEC.names) - {"book_imbalance", "book_spread"}


def test_features_table_bundled_daily_equals_talib(built: Database) -> None:
    keys = {key: instrument_id for instrument_id, key in instrument_keys(built).items()}
    ids = [keys["NASDAQ:AAPL"]]
    stamps, grid = adjusted_bars(built, "1d", ids)
    table = table_features(built, "1d", ids, stamps)[:, 0, :]
    high, low, close = grid[:, 0, 1], grid[:, 0, 2], grid[:, 0, 3]
    names = DEFAULT_SPEC.names
    for name, expected, warm_up in (
        ("ema_26", talib.EMA(close, 26), 25), ("rsi_14", talib.RSI(close, 14), 14),
        ("atr_14", talib.ATR(high, low, close, 14), 14), ("sma_20", talib.SMA(close, 20), 19),
        ("bb_upper_20", talib.BBANDS(close, 20, 2.0, 2.0, 0)[0], 19),
    ):
        assert np.isnan(table[:warm_up, names.index(name)]).all()
        assert np.max(np.abs(table[warm_up:, names.index(name)] - expected[warm_up:])) <= 1e-9, name


def test_features_unvalidated_day_is_not_featurised(built: Database) -> None:
    with built.transaction() as conn, conn.cursor() as cur:
        cur.execute("select count(*) from features f join instruments i using (instrument_id) "
                    "where i.symbol = 'SYN001' and (f.bar_at at time zone 'UTC')::date = %s", (UNVALIDATED_DAY,))
        blocked = cur.fetchone()
        cur.execute("select count(*) from features f join instruments i using (instrument_id) "
                    "where i.symbol = 'SYN000' and (f.bar_at at time zone 'UTC')::date = %s", (UNVALIDATED_DAY,))
        open_day = cur.fetchone()
    assert blocked == (0,)
    assert open_day is not None and open_day[0] > 0


def test_labels_forward_return_and_direction_follow_definition(built: Database) -> None:
    matrix = feature_matrix(built, timeframe="1d")
    horizon = DEFAULT_SPEC.labels.horizon
    assert matrix.features.shape[1] == len(DEFAULT_SPEC.names)
    _, grid = adjusted_bars(built, "1d", [int(matrix.instrument_id[0])])
    close = grid[:, 0, 3]
    rows = matrix.instrument_id == matrix.instrument_id[0]
    expected = np.full(len(close), np.nan)
    expected[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    np.testing.assert_allclose(matrix.forward_return[rows], expected, rtol=0, atol=1e-12)
    vol = matrix.features[rows, DEFAULT_SPEC.names.index("rvol_20")]
    threshold = DEFAULT_SPEC.labels.threshold_vol_multiple * vol * np.sqrt(horizon)
    log_forward = np.log1p(expected)
    known = np.isfinite(log_forward) & np.isfinite(threshold)
    want = np.where(log_forward > threshold, 1, np.where(log_forward < -threshold, -1, 0))
    np.testing.assert_array_equal(matrix.direction[rows][known], want[known])
    assert np.isnan(matrix.direction[rows][~known]).all()
    assert set(np.unique(want[known])) == {-1, 0, 1}


def test_features_table_changed_future_bars_leave_past_rows_unchanged(built: Database) -> None:
    keys = {key: instrument_id for instrument_id, key in instrument_keys(built).items()}
    ids = [keys["NASDAQ:AAPL"], keys["NASDAQ:MSFT"]]
    stamps, _ = adjusted_bars(built, "1d", ids)
    before = table_features(built, "1d", ids, stamps)
    cut = datetime(2008, 6, 2, tzinfo=UTC)
    with built.transaction() as conn, conn.cursor() as cur:
        cur.execute("update bars_1d set open = open * 1.7, high = high * 1.7, low = low * 1.7, close = close * 1.7 "
                    "where bar_at > %s and instrument_id = any(%s)", (cut, ids))
        cur.execute("delete from bars_1d where bar_at > %s and instrument_id = %s", (cut + timedelta(days=90), ids[1]))
    build_features(built, full_refresh=True, timeframes=["1d"], run_tests=False)
    after = table_features(built, "1d", ids, stamps)
    past = stamps <= int(cut.timestamp()) * 1_000_000_000
    np.testing.assert_array_equal(before[past], after[past])
    assert not np.allclose(before[~past], after[~past], equal_nan=True)


def test_features_day_by_day_incremental_equals_full_build(clean_db: Database) -> None:
    _reset_marts(clean_db)
    ingest(synthetic_batch(2, 3, 11), clean_db, register_instruments=True)
    with clean_db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select distinct (bar_at at time zone 'UTC')::date from bars_1m order by 1")
        days = [str(row[0]) for row in cur.fetchall()]
    for day in days:
        _pass_gate(clean_db, day=day)
        build_features(clean_db, timeframes=["1m", "15m"], run_tests=False)
    columns = ", ".join(DEFAULT_SPEC.names)
    query = (f"select f.instrument_id, f.timeframe, f.bar_at, {columns}, l.forward_return, l.direction "
             "from features f join labels l using (instrument_id, timeframe, bar_at) order by 1, 2, 3")
    with clean_db.transaction() as conn, conn.cursor() as cur:
        cur.execute(query)
        incremental = cur.fetchall()
    build_features(clean_db, full_refresh=True, timeframes=["1m", "15m"], run_tests=False)
    with clean_db.transaction() as conn, conn.cursor() as cur:
        cur.execute(query)
        full = cur.fetchall()
    assert len(full) == 2 * 3 * (375 + 25)
    assert incremental == full
    docs = generate_docs(clean_db)
    assert docs.is_file() and ".loom" in docs.parts
