"""The data gate against the real local TimescaleDB: each expectation catches a crafted bad batch, clean
real and synthetic data pass, failing rows are quarantined and their days failed, reruns are idempotent."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from pipelines.ingest import ingest
from pipelines.validate import (
    ValidationFailed,
    ValidationReport,
    broken_minute_batch,
    gate_failures,
    require_gate_passed,
    validate,
)
from tradeloom.adapters.db import Database
from tradeloom.adapters.sources import EURUSD, SourceBatch, bundled_batches, synthetic_batch
from tradeloom.adapters.store import upsert_instruments
from tradeloom.domain import Timeframe
from tradeloom.errors import DataQualityError
from tradeloom.synthetic import minute_bars, synthetic_instruments

# Two synthetic NSE-like instruments, three sessions from Monday 2024-01-01 (09:15–15:30 IST = 03:45–10:00 UTC).
DAY2 = datetime(2024, 1, 2, tzinfo=UTC)
DAY2_OPEN = datetime(2024, 1, 2, 3, 45, tzinfo=UTC)


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gx")


def _synthetic(db: Database) -> int:
    return ingest(synthetic_batch(2, 3, seed=5), db, register_instruments=True).ingest_batch_id


def _execute(db: Database, sql: str, params: tuple[object, ...] = ()) -> None:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(sql, params)


def _scalar(db: Database, sql: str, params: tuple[object, ...] = ()) -> object:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
        return None if row is None else row[0]


def _failed_checks(report: ValidationReport) -> set[str]:
    return {item.check for item in report.failed}


def _run(db: Database, gx_root: Path, table: str = "bars_1m", **kwargs: object) -> ValidationReport:
    return validate(db, table, gx_root=gx_root, raise_on_failure=False, **kwargs)  # type: ignore[arg-type]


def test_validate_real_bundled_and_synthetic_data_all_pass(clean_db: Database, gx_root: Path) -> None:
    batches = []
    for batch in bundled_batches():
        batches.append((batch.timeframe.table, ingest(batch, clean_db, register_instruments=True).ingest_batch_id))
    # FX trades 17:00–17:00 New York time (21:00 or 22:00 UTC with daylight saving); the bundled definition
    # may still say 22:00 UTC, which puts 34 real summer Sunday bars outside the session.
    fx = dataclasses.replace(EURUSD, timezone="America/New_York", session_open=time(17), session_close=time(17))
    with clean_db.transaction() as conn:
        upsert_instruments(conn, [fx])
    batches.append(("bars_1m", _synthetic(clean_db)))
    for table, batch_id in batches:
        report = _run(clean_db, gx_root, table, ingest_batch_id=batch_id)
        assert report.status == "passed", (table, [(e.label, e.sample) for e in report.failed])
        assert report.rows_checked > 0 and report.rows_failed == 0
    assert _scalar(clean_db, "select count(*) from quarantine") == 0
    assert _scalar(clean_db, "select count(*) from data_gate where status = 'failed'") == 0
    # Every real trading day of every instrument got a passed gate cell: 4 bokeh + GOOGL daily, EURUSD hourly.
    assert _scalar(clean_db, "select count(*) from data_gate where target_table = 'bars_1d'") == _scalar(
        clean_db, "select count(*) from bars_1d")


# Each crafted defect: SQL that breaks clean synthetic minutes (bypassing ingest's own row checks, the way
# a faulty feed or a bug in the executor's bar writer would), the check that must catch it, and whether the
# broken row can be quarantined (a missing bar cannot).
SYN0 = "(select instrument_id from instruments where symbol = 'SYN000')"
DEFECTS: dict[str, tuple[str, str, bool]] = {
    "high_below_low": (f"update bars_1m set high = low - 1 where instrument_id = {SYN0} and bar_at = %(at)s",
                       "ohlc_consistency", True),
    "close_above_high": (f"update bars_1m set close = high + 0.01 where instrument_id = {SYN0} and bar_at = %(at)s",
                         "ohlc_consistency", True),
    "nan_price": (f"update bars_1m set open = 'NaN' where instrument_id = {SYN0} and bar_at = %(at)s",
                  "positive_finite_prices", True),
    "infinite_price": (f"update bars_1m set high = 'Infinity' where instrument_id = {SYN0} and bar_at = %(at)s",
                       "positive_finite_prices", True),
    "zero_prices": (f"update bars_1m set open = 0, low = 0, high = 0, close = 0 where instrument_id = {SYN0}"
                    " and bar_at = %(at)s", "positive_finite_prices", True),
    "negative_volume": (f"update bars_1m set volume = -10 where instrument_id = {SYN0} and bar_at = %(at)s",
                        "non_negative_volume", True),
    "outside_session": (f"insert into bars_1m select instrument_id, bar_at + interval '8 hours', open, high, low,"
                        f" close, volume, source, ingest_batch_id from bars_1m where instrument_id = {SYN0}"
                        " and bar_at = %(at)s", "in_session", True),
    "off_grid_second": (f"insert into bars_1m select instrument_id, bar_at + interval '30 seconds', open, high,"
                        f" low, close, volume, source, ingest_batch_id from bars_1m where instrument_id = {SYN0}"
                        " and bar_at = %(at)s", "in_session", True),
    "price_spike": (f"update bars_1m set close = close * 6, high = close * 6 where instrument_id = {SYN0}"
                    " and bar_at = %(at)s", "price_jump", True),
    "hole": (f"delete from bars_1m where instrument_id = {SYN0} and bar_at >= %(at)s"
             " and bar_at < %(at)s + interval '20 minutes'", "holes", False),
    "stale_tail": (f"delete from bars_1m where instrument_id = {SYN0} and bar_at >= %(at)s"
                   " and bar_at < %(at)s + interval '1 day'", "stale_data", False),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_validate_crafted_defect_is_caught_by_its_expectation(clean_db: Database, gx_root: Path, defect: str) -> None:
    sql, check, quarantinable = DEFECTS[defect]
    _synthetic(clean_db)
    # Middle of day 2, or for the stale tail the last hour of the last session (day 3).
    at = DAY2_OPEN + timedelta(minutes=150) if defect != "stale_tail" else datetime(2024, 1, 3, 9, 0, tzinfo=UTC)
    with clean_db.transaction() as conn, conn.cursor() as cur:
        cur.execute(sql, {"at": at})
    rows_before = _scalar(clean_db, "select count(*) from bars_1m")
    report = _run(clean_db, gx_root, start=datetime(2024, 1, 1, tzinfo=UTC), end=datetime(2024, 1, 4, tzinfo=UTC))
    assert report.status == "failed"
    assert _failed_checks(report) == {check}, [(e.label, e.sample) for e in report.failed]
    failed_day = at.date() if defect != "stale_tail" else datetime(2024, 1, 3, tzinfo=UTC).date()
    gate = dict(_gate(clean_db))
    assert gate.pop(("SYN000", failed_day)) == "failed"
    assert set(gate.values()) == {"passed"} and len(gate) == 5  # the other instrument-days of the 2×3
    quarantined = _scalar(clean_db, "select count(*) from quarantine where reason = %s", (f"validate:{check}",))
    rows_after = _scalar(clean_db, "select count(*) from bars_1m")
    if quarantinable:
        assert quarantined == 1 and rows_after == rows_before - 1  # type: ignore[operator]
    else:
        assert quarantined == 0 and rows_after == rows_before


def _gate(db: Database, table: str = "bars_1m") -> list[tuple[tuple[str, object], str]]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select i.symbol, g.day, g.status from data_gate g join instruments i using (instrument_id)"
                    " where g.target_table = %s order by 1, 2", (table,))
        return [((str(symbol), day), str(status)) for symbol, day, status in cur.fetchall()]


def test_validate_broken_batch_raises_naming_expectations_and_rerun_is_idempotent(
    clean_db: Database, gx_root: Path,
) -> None:
    _synthetic(clean_db)
    broken = ingest(broken_minute_batch(), clean_db, register_instruments=True)
    with pytest.raises(DataQualityError) as caught:
        validate(clean_db, "bars_1m", ingest_batch_id=broken.ingest_batch_id, gx_root=gx_root)
    message = str(caught.value)
    for expected in ("price_jump", "in_session", "holes", "expect_column_pair_values_a_to_be_greater_than_b",
                     "expect_column_values_to_be_in_set", '"bar_at": "2024-03-05', "Data Docs"):
        assert expected in message, message
    assert isinstance(caught.value, ValidationFailed)
    report = caught.value.report
    assert _failed_checks(report) == {"price_jump", "in_session", "holes"}
    assert report.data_docs_path is not None and report.data_docs_path.is_file()
    assert report.data_docs_path.is_relative_to(gx_root)
    gate = dict(_gate(clean_db))
    broken_days = {day: status for (symbol, day), status in gate.items() if symbol == "BROKEN"}
    assert sorted(broken_days.values()) == ["failed", "passed"]  # day 1 clean, day 2 broken
    quarantine = _quarantine(clean_db)
    assert quarantine == [("validate:in_session", 3), ("validate:price_jump", 1)]
    run = _scalar(clean_db, "select expectations from validation_runs where validation_run_id = %s",
                  (report.validation_run_id,))
    assert isinstance(run, list) and {item["check"] for item in run if not item["success"]} == _failed_checks(report)

    # Consumers: the broken day is refused, the clean day is not, never-validated days are refused too.
    broken_id = int(str(_scalar(clean_db, "select instrument_id from instruments where symbol = 'BROKEN'")))
    day1, day2 = datetime(2024, 3, 4, tzinfo=UTC), datetime(2024, 3, 5, tzinfo=UTC)
    require_gate_passed(clean_db, "bars_1m", day1, day2, [broken_id])
    with pytest.raises(DataQualityError, match="2024-03-05 failed"):
        require_gate_passed(clean_db, "bars_1m", day1, day2 + timedelta(days=1), [broken_id])
    assert {status for _, _, status in gate_failures(clean_db, "bars_1m", DAY2, DAY2 + timedelta(days=1))} == {
        "unvalidated"}
    assert _scalar(clean_db, "select bool_and(data_gate_passed('bars_1m', instrument_id, bar_at)) from bars_1m"
                   " where instrument_id = %s and bar_at < %s", (broken_id, day2)) is True
    assert _scalar(clean_db, "select bool_or(data_gate_passed('bars_1m', instrument_id, bar_at)) from bars_1m"
                   " where instrument_id = %s and bar_at >= %s", (broken_id, day2)) is False

    # Rerun over the same interval: the quarantined rows are gone, the hole is still there.
    gate_rows = _scalar(clean_db, "select count(*) from data_gate")
    again = _run(clean_db, gx_root, start=datetime(2024, 3, 4, tzinfo=UTC), end=datetime(2024, 3, 6, tzinfo=UTC))
    again_too = _run(clean_db, gx_root, start=datetime(2024, 3, 4, tzinfo=UTC), end=datetime(2024, 3, 6, tzinfo=UTC))
    assert _failed_checks(again) == _failed_checks(again_too) == {"holes"}
    assert _quarantine(clean_db) == quarantine
    assert _scalar(clean_db, "select count(*) from data_gate") == gate_rows
    assert dict(_gate(clean_db)) == gate
    assert _scalar(clean_db, "select max(validation_run_id) from data_gate") == again_too.validation_run_id


def _quarantine(db: Database) -> list[tuple[str, int]]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select reason, count(*) from quarantine group by 1 order by 1")
        return [(str(reason), int(count)) for reason, count in cur.fetchall()]


def _book_rows(db: Database, cross_at: datetime | None) -> None:
    """One clean 5-level snapshot 30 s into every synthetic minute bar (spread 2 ticks around the close);
    at `cross_at` the best bid is raised above the best ask."""
    crossed = f"case when b.bar_at = %(cross)s and b.instrument_id = {SYN0} then 3 else 0 end"
    _execute(db, f"""
        insert into order_book_snapshots (instrument_id, snapshot_at, bid_prices, bid_sizes, ask_prices,
                                          ask_sizes, source)
        select b.instrument_id, b.bar_at + interval '30 seconds',
               array(select b.close - 0.05 * k + 0.05 * ({crossed}) from generate_series(1, 5) k),
               array[100, 200, 300, 400, 500]::float8[],
               array(select b.close + 0.05 * k from generate_series(1, 5) k),
               array[100, 200, 300, 400, 500]::float8[], 'test'
        from bars_1m b
    """.replace("%(cross)s", "%s"), (cross_at,))


@pytest.mark.parametrize("crossed", [False, True])
def test_validate_order_books_crossed_book_fails_clean_passes(clean_db: Database, gx_root: Path,
                                                               crossed: bool) -> None:
    _synthetic(clean_db)
    cross_at = DAY2_OPEN + timedelta(minutes=42) if crossed else None
    _book_rows(clean_db, cross_at)
    report = _run(clean_db, gx_root, "order_book_snapshots", start=DAY2, end=DAY2 + timedelta(days=1))
    assert report.rows_checked == 2 * 375
    if crossed:
        assert _failed_checks(report) == {"crossed_book"}
        assert _quarantine(clean_db) == [("validate:crossed_book", 1)]
        assert sorted(status for _, status in _gate(clean_db, "order_book_snapshots")) == ["failed", "passed"]
    else:
        assert report.status == "passed", [(e.label, e.sample) for e in report.failed]


def test_validate_duplicate_keys_fail_unique_expectation(clean_db: Database, gx_root: Path) -> None:
    # The primary key keeps duplicates out of the table, so the frame the gate builds is duplicated directly.
    import pandas as pd

    from pipelines.validate_frames import add_checks, load_scope, table_spec
    from pipelines.validate_gx import run_suite

    _synthetic(clean_db)
    spec = table_spec("bars_1m")
    with clean_db.transaction() as conn:
        scope = load_scope(conn, spec, DAY2, DAY2 + timedelta(days=1), None)
    frame = add_checks(scope, spec, int((DAY2 + timedelta(days=1)).timestamp()) * 1_000_000_000)
    doubled = pd.concat([frame, frame.iloc[[7]]], ignore_index=True)
    doubled["row_number"] = range(len(doubled))
    outcome = run_suite(gx_root, "bars_1m", doubled, "bar_at")
    failed = {item.check: item for item in outcome.expectations if not item.success}
    assert set(failed) == {"unique_key"}
    assert list(failed["unique_key"].failing_rows) == [7, len(frame)]


def test_validate_cli_reports_failure_with_exit_code(clean_db: Database, cli_env: dict[str, str],
                                                     gx_root: Path) -> None:
    import subprocess
    import sys

    broken = ingest(broken_minute_batch(), clean_db, register_instruments=True)
    command = [sys.executable, "-m", "pipelines.cli", "validate", "bars_1m", "--batch", str(broken.ingest_batch_id)]
    done = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "price_jump" in done.stderr and "holes" in done.stderr
    assert "FAIL" in done.stdout and "Data Docs:" in done.stdout
    assert _quarantine(clean_db) == [("validate:in_session", 3), ("validate:price_jump", 1)]


def test_validate_empty_interval_passes_and_touches_no_cell(clean_db: Database, gx_root: Path) -> None:
    _synthetic(clean_db)
    report = _run(clean_db, gx_root, start=datetime(2030, 1, 1, tzinfo=UTC), end=datetime(2030, 1, 2, tzinfo=UTC))
    assert (report.status, report.rows_checked, report.cells_passed + report.cells_failed) == ("passed", 0, 0)
    assert _scalar(clean_db, "select count(*) from validation_runs") == 1
    assert _scalar(clean_db, "select count(*) from data_gate") == 0


def test_demo_gate_passes_clean_batches_and_quarantines_the_broken_one(clean_db: Database) -> None:
    from pipelines.validate import demo_gate

    _synthetic(clean_db)
    lines = demo_gate(clean_db)
    text = "\n".join(lines)
    assert "bars_1m batch 1: passed" in text
    assert "quarantined 1 rows: validate:price_jump" in text and "quarantined 3 rows: validate:in_session" in text
    assert "data gate SYNTH:BROKEN 2024-03-05: failed" in text and "2024-03-04: passed" in text
    docs = Path(lines[-1].split(": ", 1)[1])
    assert docs.name == "index.html" and docs.is_file()


def test_a_day_that_failed_stays_failed_on_a_retry_until_its_bars_are_ingested_again(clean_db: Database) -> None:
    """The first run quarantines and deletes the offending rows: a retry (Airflow retries the task) or the next
    run would pass on what is left. The day stays failed; re-ingesting its bars clears the mark and the next
    run judges it afresh."""
    instrument = dataclasses.replace(synthetic_instruments(1)[0], symbol="SPIKE")
    clean = minute_bars([instrument], days=2, seed=11, start=date(2024, 3, 4))
    spiked = minute_bars([instrument], days=2, seed=11, start=date(2024, 3, 4))
    spike = len(spiked) // 2 + 200
    spiked.close[spike] *= 8.0
    spiked.high[spike] = spiked.close[spike]
    ingest(SourceBatch("t", Timeframe.MINUTE, spiked, instruments=(instrument,)), clean_db,
           register_instruments=True)
    start, end = datetime(2024, 3, 5, tzinfo=UTC), datetime(2024, 3, 5, 10, 30, tzinfo=UTC)  # the EOD run
    with pytest.raises(ValidationFailed) as first:
        validate(clean_db, "bars_1m", start, end, now=end)
    assert first.value.report.rows_quarantined == 1
    with pytest.raises(ValidationFailed) as retry:
        validate(clean_db, "bars_1m", start, end, now=end)
    assert retry.value.report.failed_days and retry.value.report.cells_passed == 0
    with clean_db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select status from data_gate where day = '2024-03-05'")
        assert [row[0] for row in cur.fetchall()] == ["failed"]
    ingest(SourceBatch("t-fixed", Timeframe.MINUTE, clean, instruments=(instrument,)), clean_db)  # the fix
    fixed = validate(clean_db, "bars_1m", start, end, now=end)
    assert fixed.status == "passed" and fixed.cells_passed == 1
