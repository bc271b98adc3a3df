"""Helper columns of the data gate (no database, no Great Expectations)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from pipelines.validate_frames import (
    DEFAULT_TOLERANCES,
    Scope,
    add_checks,
    jump_deviations,
    robust_centre_and_scale,
    table_spec,
)
from pipelines.validate_gx import expectations_dir
from tradeloom.synthetic import minute_bars, synthetic_instruments

NS = 1_000_000_000


def _walk(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))


def test_jump_deviations_single_spike_flags_only_the_spike() -> None:
    prices = _walk(300)
    prices[150] *= 3.0
    times = np.arange(300, dtype=np.int64) * 60 * NS
    deviations = jump_deviations(times, prices, None, None, {}, limit=30.0)
    assert np.flatnonzero(deviations > 30.0).tolist() == [150]
    assert deviations[150] > 100


def test_jump_deviations_session_first_bar_uses_its_own_open_so_overnight_gap_passes() -> None:
    prices = _walk(200)
    prices[100:] *= 1.10  # a 10 % overnight gap: real, not a bad tick
    opens = prices.copy()
    opens[1:] = prices[:-1]
    opens[100] = prices[100] * 0.999
    sessions = np.repeat([0, 1], 100).astype(np.int64)
    times = np.arange(200, dtype=np.int64) * 60 * NS
    assert jump_deviations(times, prices, opens, sessions, {}, limit=30.0).max() < 30.0
    # Without the session rule the same gap is a jump.
    assert jump_deviations(times, prices, None, None, {}, limit=30.0).max() > 30.0


def test_jump_deviations_recorded_split_on_ex_date_is_not_a_jump() -> None:
    prices = _walk(250)
    prices[200:] /= 2.0
    times = np.arange(250, dtype=np.int64) * 86_400 * NS
    assert jump_deviations(times, prices, None, None, {}, limit=30.0)[200] > 30.0
    assert jump_deviations(times, prices, None, None, {int(times[200]): 2.0}, limit=30.0).max() < 30.0


def test_robust_centre_and_scale_too_few_returns_abstains() -> None:
    assert robust_centre_and_scale(np.zeros(5)) is None
    centre, scale = robust_centre_and_scale(np.r_[np.zeros(30), np.ones(30)]) or (0.0, 0.0)
    assert scale > 0 and 0.0 <= centre <= 1.0


def test_add_checks_minute_session_hole_and_stale_columns() -> None:
    instrument = synthetic_instruments(1)[0]
    bars = minute_bars([instrument], days=1, seed=1, start=date(2024, 1, 2))
    keep = np.ones(len(bars), dtype=bool)
    keep[100:120] = False  # 20 missing minutes
    keep[-30:] = False  # the last 30 minutes never arrived
    times = bars.bar_at[keep]
    evening = times[-1] + 3 * 3600 * NS  # after the close
    frame = pd.DataFrame({
        "instrument_id": 1,
        "bar_at": pd.to_datetime(np.r_[times, evening], utc=True),
        "open": np.r_[bars.open[keep], 100.0], "high": np.r_[bars.high[keep], 100.0],
        "low": np.r_[bars.low[keep], 100.0], "close": np.r_[bars.close[keep], 100.0],
        "volume": np.r_[bars.volume[keep], 1.0], "ingest_batch_id": 1, "is_context": False,
    })
    scope = Scope(frame, {1: instrument}, {1: DEFAULT_TOLERANCES["bars_1m"]}, {})
    as_of = int(datetime(2024, 1, 3, tzinfo=UTC).timestamp()) * NS
    checked = add_checks(scope, table_spec("bars_1m"), as_of)
    assert checked["row_number"].tolist() == list(range(len(frame)))
    assert checked["is_in_session"].tolist() == [True] * len(times) + [False]
    assert checked.loc[checked["missing_bars_before"] > 0, "bar_at"].tolist() == [pd.Timestamp(bars.bar_at[120],
                                                                                                 tz="UTC")]
    assert checked["missing_bars_before"].max() == 20
    # Staleness sits on the last in-session row: 30 bars due by the end of the day, none received.
    assert checked["stale_bars"].tolist() == [0] * (len(times) - 1) + [30, 0]
    assert (checked["max_stale_bars"] == DEFAULT_TOLERANCES["bars_1m"].max_stale_bars).all()


def test_suites_cover_every_check_for_every_raw_table() -> None:
    shared = {"positive_finite_prices", "non_negative_volume", "unique_key", "in_session", "holes", "stale_data",
              "price_jump"}
    for table, extra in (("bars_1m", {"ohlc_consistency"}), ("bars_1h", {"ohlc_consistency"}),
                         ("bars_1d", {"ohlc_consistency"}), ("order_book_snapshots", {"crossed_book"})):
        suite = json.loads((expectations_dir() / "suites" / f"{table}.json").read_text(encoding="utf-8"))
        assert suite["name"] == table
        assert {e["meta"]["check"] for e in suite["expectations"]} == shared | extra
