"""The demo walk-forward on the bundled real daily data, through TimescaleDB."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from pipelines.backtest import DEMO_KEYS, load_market_data, run_demo_walk_forward
from tradeloom.adapters.db import Database
from tradeloom.adapters.sources import bundled_batches
from tradeloom.domain import Timeframe

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def bundled_db(database: Database) -> Database:
    from pipelines.ingest import ingest

    for batch in bundled_batches():  # idempotent: bars already there are left alone, the splits recorded
        if batch.timeframe is Timeframe.DAY and "bokeh" in batch.source:
            ingest(batch, database, register_instruments=True)
    return database


def test_splits_of_the_bundled_file_are_recorded_and_the_backtest_sees_no_split_gap(bundled_db: Database) -> None:
    with bundled_db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select i.symbol, (c.ex_at at time zone 'UTC')::date, c.split_ratio from corporate_actions c"
                    " join instruments i using (instrument_id) where c.action = 'split' order by 2")
        recorded = cur.fetchall()
    assert recorded == [("AAPL", date(2000, 6, 21), 2.0), ("MSFT", date(2003, 2, 18), 2.0),
                        ("AAPL", date(2005, 2, 28), 2.0)]
    window = (datetime(2005, 2, 20, tzinfo=UTC), datetime(2005, 3, 5, tzinfo=UTC))
    raw = load_market_data(bundled_db, ["NASDAQ:AAPL"], Timeframe.DAY, *window, adjust_splits=False)
    adjusted = load_market_data(bundled_db, ["NASDAQ:AAPL"], Timeframe.DAY, *window)
    ex = int(np.searchsorted(raw.bar_at_ns, int(datetime(2005, 2, 28, tzinfo=UTC).timestamp()) * 10**9))
    assert raw.close[ex - 1, 0] / raw.close[ex, 0] > 1.9  # as traded: the split looks like a crash
    assert abs(adjusted.close[ex - 1, 0] / adjusted.close[ex, 0] - 1.0) < 0.05
    np.testing.assert_allclose(adjusted.close[ex:], raw.close[ex:])
    np.testing.assert_allclose(adjusted.open[:ex], raw.open[:ex] / 2.0)
    np.testing.assert_allclose(adjusted.volume[:ex], raw.volume[:ex] * 2.0)
    # The executor's loader (warm-up, replay) back-adjusts the same way: live features match training's.
    from tradeloom.adapters.store import load_bar_matrix

    with bundled_db.transaction() as conn:
        matrix = load_bar_matrix(conn, Timeframe.DAY, ["NASDAQ:AAPL"], int(window[0].timestamp()) * 10**9,
                                 int(window[1].timestamp()) * 10**9)
        as_traded = load_bar_matrix(conn, Timeframe.DAY, ["NASDAQ:AAPL"], int(window[0].timestamp()) * 10**9,
                                    int(window[1].timestamp()) * 10**9, adjust_splits=False)
    np.testing.assert_allclose(matrix.close, adjusted.close)
    np.testing.assert_allclose(as_traded.close, raw.close)


def test_load_market_data_bundled_daily_pivots_four_instruments(bundled_db: Database) -> None:
    data = load_market_data(bundled_db, DEMO_KEYS, Timeframe.DAY)
    assert data.close.shape[1] == 4
    assert len(data) > 2000
    assert np.all(np.diff(data.bar_at_ns) > 0)
    # Every instrument has prices on most days (GOOG starts in 2004, so allow gaps).
    assert np.isfinite(data.close).mean(axis=0).min() > 0.5


def test_demo_walk_forward_writes_self_contained_tearsheet(bundled_db: Database, tmp_path: Path) -> None:
    report = run_demo_walk_forward(bundled_db, tmp_path)
    assert report.tearsheet is not None and report.tearsheet.exists()
    text = report.tearsheet.read_text(encoding="utf-8")
    assert "<script" in text and "plotly.js v" in text  # the library is inlined
    assert not re.search(r"<script[^>]*\bsrc=", text)  # nothing fetched at view time
    assert len(report.folds) >= 5
    assert sum(fold.result.metrics.trades for fold in report.folds) > 20
    assert set(report.monte_carlo) == {"final_equity", "max_drawdown"}
    assert "global financial crisis" in report.stress
    rows = report.table_rows()
    assert len(rows) == len(report.folds) and "sharpe" in rows[0]


def test_cli_backtest_buy_and_hold_prints_folds_and_writes_tearsheet(
    bundled_db: Database, cli_env: dict[str, str], tmp_path: Path
) -> None:
    import subprocess
    import sys

    out = tmp_path / "bh.html"
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "backtest", "-i", "NYSE:IBM", "-i", "NASDAQ:MSFT",
         "--strategy", "buy-and-hold", "--out", str(out)],
        env=cli_env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "walk-forward buy-and-hold" in run.stdout and "fold=0" in run.stdout
    assert out.exists()
