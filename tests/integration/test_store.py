"""The foundation against the real local TimescaleDB: migrations, ingestion, quarantine, roles, bad input."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, time
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from pipelines import jobs
from pipelines.ingest import ingest
from tradeloom.adapters.db import Database, migrate
from tradeloom.adapters.sources import SourceBatch, bundled_batches, read_file, synthetic_batch
from tradeloom.domain import Instrument, Timeframe
from tradeloom.errors import DatabaseUnavailableError, InputError
from tradeloom.quality import BarColumns

ROOT = Path(__file__).resolve().parents[2]
TRADELOOM = [sys.executable, "-m", "pipelines.cli"]


def _count(db: Database, sql: str) -> int:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(sql)
        return int(cur.fetchone()[0])  # type: ignore[index]


def test_migrate_twice_applies_nothing_the_second_time(database: Database) -> None:
    assert migrate(database) == []
    assert migrate(database) == []
    assert _count(database, "select count(*) from schema_migrations") == len(list((ROOT / "sql").glob("*.sql")))
    assert _count(database, "select count(*) from timescaledb_information.hypertables") >= 4


def test_ingest_bundled_twice_adds_no_duplicates(clean_db: Database) -> None:
    first = [ingest(batch, clean_db, register_instruments=True) for batch in bundled_batches()]
    rows = _count(clean_db, "select (select count(*) from bars_1d) + (select count(*) from bars_1h)")
    assert rows == sum(report.inserted for report in first) > 20_000
    second = [ingest(batch, clean_db, register_instruments=True) for batch in bundled_batches()]
    assert all(report.inserted == 0 and report.updated == 0 for report in second)
    assert sum(report.unchanged for report in second) == rows
    assert _count(clean_db, "select (select count(*) from bars_1d) + (select count(*) from bars_1h)") == rows
    assert _count(clean_db, "select count(*) from ingest_batches where status = 'committed'") == 6


def test_ingest_changed_rows_are_updated_not_duplicated(clean_db: Database) -> None:
    batch = synthetic_batch(2, 1, seed=5)
    ingest(batch, clean_db, register_instruments=True)
    bars = batch.bars
    changed = BarColumns(bars.instrument_key, bars.bar_at, bars.open, bars.high * 1.01, bars.low, bars.close,
                         bars.volume)
    report = ingest(SourceBatch(batch.source, batch.timeframe, changed), clean_db)
    assert (report.inserted, report.updated) == (0, len(bars))
    assert _count(clean_db, "select count(*) from bars_1m") == len(bars)


def _gate_all_days_passed(db: Database) -> set[tuple[str, str]]:
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("insert into validation_runs (target_table, status) values ('bars_1m', 'passed')"
                    " returning validation_run_id")
        run = cur.fetchone()[0]  # type: ignore[index]
        cur.execute("insert into data_gate (target_table, instrument_id, day, status, validation_run_id)"
                    " select distinct 'bars_1m', instrument_id, (bar_at at time zone 'UTC')::date, 'passed', %s"
                    " from bars_1m on conflict do nothing", (run,))
    return _gate(db)


def _gate(db: Database) -> set[tuple[str, str]]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select i.symbol, g.day::text from data_gate g join instruments i using (instrument_id)")
        return set(cur.fetchall())


def test_new_or_changed_bars_take_the_data_gate_mark_off_their_day_and_only_theirs(clean_db: Database) -> None:
    batch = synthetic_batch(2, 2, seed=5)
    ingest(batch, clean_db, register_instruments=True)
    marks = _gate_all_days_passed(clean_db)
    assert len(marks) == 4
    ingest(batch, clean_db)  # the same rows again: nothing changed, every mark stays
    assert _gate(clean_db) == marks
    bars = batch.bars
    first_bar = bars.bar_at == bars.bar_at.min()
    changed = BarColumns(bars.instrument_key[first_bar], bars.bar_at[first_bar], bars.open[first_bar],
                         bars.high[first_bar] * 8, bars.low[first_bar], bars.close[first_bar] * 8,
                         bars.volume[first_bar])
    ingest(SourceBatch(batch.source, batch.timeframe, changed), clean_db)  # a vendor re-sends a bad first bar
    first_day = {day for _, day in marks} - {max(day for _, day in marks)}
    assert _gate(clean_db) == {mark for mark in marks if mark[1] not in first_day}
    # New bars into an otherwise empty stretch of a validated day (the direct COPY path) also take it off.
    _gate_all_days_passed(clean_db)
    with clean_db.transaction(clean_db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("delete from bars_1m where bar_at = (select max(bar_at) from bars_1m)")
    last_bar = bars.bar_at == bars.bar_at.max()
    ingest(SourceBatch(batch.source, batch.timeframe, bars.take(last_bar)), clean_db)
    assert _gate(clean_db) == {mark for mark in marks if mark[1] in first_day}


def _with_bad_rows(batch: SourceBatch) -> SourceBatch:
    bars = batch.bars
    high, low, open_, volume = bars.high.copy(), bars.low.copy(), bars.open.copy(), bars.volume.copy()
    stamps = bars.bar_at.copy()
    open_[0] = np.nan
    high[1] = min(bars.open[1], bars.close[1]) - 1
    low[2] = max(bars.open[2], bars.close[2]) + 1
    volume[3] = -5
    open_[4] = -1.0
    stamps[5] = 4_102_444_800 * 1_000_000_000  # year 2100
    stamps[6] = stamps[7]
    return SourceBatch(batch.source, batch.timeframe,
                       BarColumns(bars.instrument_key, stamps, open_, high, low, bars.close, volume),
                       instruments=batch.instruments)


def test_ingest_bad_rows_go_to_quarantine_with_reasons(clean_db: Database) -> None:
    batch = _with_bad_rows(synthetic_batch(1, 1, seed=9))
    report = ingest(batch, clean_db, register_instruments=True)
    assert report.quarantined_by_reason == {
        "non_finite_price": 1, "high_below_open_or_close": 1, "low_above_open_or_close": 1, "invalid_volume": 1,
        "non_positive_price": 1, "future_timestamp": 1, "duplicate_key_in_batch": 1,
    }
    assert report.inserted == len(batch.bars) - 7
    with clean_db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select reason, raw_row from quarantine where ingest_batch_id = %s order by reason",
                    (report.ingest_batch_id,))
        rows = cur.fetchall()
    assert len(rows) == 7
    assert {reason for reason, _ in rows} == set(report.quarantined_by_reason)
    assert all(raw["instrument"] == "SYNTH:SYN000" for _, raw in rows)


def test_ingest_failure_inside_the_transaction_changes_nothing(clean_db: Database) -> None:
    ingest(synthetic_batch(1, 1, seed=1), clean_db, register_instruments=True)
    before = _count(clean_db, "select count(*) from bars_1m")
    with clean_db.transaction(clean_db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute(
            "create or replace function refuse_batch() returns trigger language plpgsql as $$"
            " begin if new.volume = 424242 then raise exception 'boom'; end if; return new; end $$;"
            "create trigger refuse_batch before insert on bars_1m for each row execute function refuse_batch()"
        )
    try:
        batch = synthetic_batch(1, 2, seed=2)
        batch.bars.volume[-1] = 424242
        with pytest.raises(DatabaseUnavailableError, match="boom"):
            ingest(batch, clean_db)
    finally:
        with clean_db.transaction(clean_db.settings.owner_role) as conn, conn.cursor() as cur:
            cur.execute("drop trigger refuse_batch on bars_1m; drop function refuse_batch()")
    assert _count(clean_db, "select count(*) from bars_1m") == before
    assert _count(clean_db, "select count(*) from quarantine") == 0
    assert _count(clean_db, "select count(*) from ingest_batches where status = 'failed'") == 1


def test_ingest_unknown_instrument_raises_and_writes_nothing(clean_db: Database) -> None:
    batch = synthetic_batch(1, 1, seed=3)
    with pytest.raises(InputError, match="SYNTH:SYN000"):
        ingest(batch, clean_db)
    assert _count(clean_db, "select count(*) from ingest_batches") == 0


def test_read_file_csv_with_column_mapping_and_timezone(tmp_path: Path, clean_db: Database) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("When,O,H,L,C,V\n2024-03-01 09:15:00,10,11,9,10.5,100\n2024-03-01 09:16:00,10.5,11,10,10.8,50\n")
    ingest(synthetic_batch(1, 1, seed=3), clean_db, register_instruments=True)
    batch = read_file(path, timeframe=Timeframe.MINUTE, instrument_key="SYNTH:SYN000", timezone="Asia/Kolkata",
                      columns={"bar_at": "When", "open": "O", "high": "H", "low": "L", "close": "C", "volume": "V"})
    report = ingest(batch, clean_db)
    assert report.inserted == 2
    with clean_db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select min(bar_at) at time zone 'UTC' from bars_1m where source = 'file:bars.csv'")
        assert str(cur.fetchone()[0]) == "2024-03-01 03:45:00"  # type: ignore[index]


# -- bad input through the CLI: one clear line, exit code != 0, nothing stored changes ------------------

def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRADELOOM, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "file", "/nonexistent/bars.csv", "--instrument", "SYNTH:SYN000"], "file not found: /nonexistent"),
        (["ingest", "file", "{csv}", "--instrument", "SYNTH:SYN000"], "column(s) ['bar_at', 'open'"),
        (["ingest", "file", "{csv}", "--instrument", "NSE:NOPE", "--column", "bar_at=Date", "--column", "open=Open",
          "--column", "high=High", "--column", "low=Low", "--column", "close=Close", "--column", "volume=Volume"],
         "unknown instrument(s): NSE:NOPE"),
        (["ingest", "file", "{csv}", "--instrument", "SYNTH:SYN000", "--timezone", "Mars/Olympus"],
         "timezone='Mars/Olympus'"),
    ],
)
def test_cli_bad_input_one_clear_error_and_nothing_changes(
    args: list[str], message: str, clean_db: Database, cli_env: dict[str, str], tmp_path: Path
) -> None:
    ingest(synthetic_batch(1, 1, seed=4), clean_db, register_instruments=True)
    before = _count(clean_db, "select count(*) from bars_1m") + _count(clean_db, "select count(*) from ingest_batches")
    csv = tmp_path / "daily.csv"
    csv.write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n")
    result = _cli([arg.replace("{csv}", str(csv)) for arg in args], cli_env)
    assert result.returncode != 0
    assert message in result.stderr.replace("\n", "")
    assert result.stderr.strip().startswith("error:")
    assert "Traceback" not in result.stderr
    after = _count(clean_db, "select count(*) from bars_1m") + _count(clean_db, "select count(*) from ingest_batches")
    assert after == before


def test_cli_database_down_one_clear_error(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, DATABASE_URL="postgresql://tradeloom_writer@127.0.0.1:1/tradeloom")
    result = _cli(["ingest", "synthetic", "--instruments", "1", "--days", "1"], env)
    assert result.returncode != 0
    assert "database unreachable at postgresql://tradeloom_writer@127.0.0.1:1/tradeloom" in result.stderr
    assert "Traceback" not in result.stderr


def test_redacted_url_never_shows_the_password(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, DATABASE_URL="postgresql://writer:hunter2secret@127.0.0.1:1/tradeloom")
    result = _cli(["ingest", "synthetic"], env)
    assert result.returncode != 0
    assert "hunter2secret" not in result.stderr + result.stdout
    assert "writer:***@127.0.0.1" in result.stderr


# -- roles -------------------------------------------------------------------------------------------

def test_executor_role_cannot_drop_or_alter_tables(database: Database) -> None:
    conn = database.connect(database.settings.executor_role)
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("drop table bars_1m")
            conn.rollback()
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("alter table instruments add column sneaky int")
            conn.rollback()
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("delete from instruments")
            conn.rollback()
            cur.execute("select count(*) from bars_1m")
    finally:
        conn.close()


def test_writer_role_writes_rows_but_cannot_drop(database: Database) -> None:
    conn = database.connect(database.settings.writer_role)
    try:
        with conn.cursor() as cur:
            cur.execute("select count(*) from instruments")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("drop table instruments")
    finally:
        conn.rollback()
        conn.close()


def test_instrument_with_minute_bars_cannot_be_deleted(clean_db: Database) -> None:
    """bars_1m has no foreign key (sql/008, for bulk-load speed): the trigger on instruments keeps it whole."""
    ingest(synthetic_batch(1, 1, seed=4), clean_db, register_instruments=True)
    with (pytest.raises(psycopg2.errors.ForeignKeyViolation, match="still has rows in bars_1m"),
          clean_db.transaction(clean_db.settings.owner_role) as conn, conn.cursor() as cur):
        cur.execute("delete from instruments where symbol = 'SYN000'")
    with (pytest.raises(psycopg2.errors.ForeignKeyViolation, match="still has rows in bars_1m"),
          clean_db.transaction(clean_db.settings.owner_role) as conn, conn.cursor() as cur):
        cur.execute("update instruments set instrument_id = instrument_id + 1000 where symbol = 'SYN000'")
    assert _count(clean_db, "select count(*) from instruments where symbol = 'SYN000'") == 1


def test_instrument_without_minute_bars_can_be_deleted(clean_db: Database) -> None:
    ingest(synthetic_batch(1, 1, seed=4), clean_db, register_instruments=True)
    with clean_db.transaction(clean_db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("delete from bars_1m")
        cur.execute("delete from instruments where symbol = 'SYN000'")
        assert cur.rowcount == 1


def test_ingest_leaves_a_still_forming_minute_bar_out_and_a_later_run_lands_it(clean_db: Database) -> None:
    """A source's history includes the current minute (Kite does): its close is not final. It is left out,
    not stored and not quarantined; the run after the minute ends lands it."""
    batch = synthetic_batch(1, 1, seed=5)
    stamps = batch.bars.bar_at
    now = int(stamps[10]) + 30 * 1_000_000_000  # half-way through bar 10
    first = ingest(batch, clean_db, register_instruments=True, now_ns=now)
    # Bars 0-9 ended; 10 is forming, 11 opens within the future-timestamp tolerance (forming too); the rest
    # lie in the future and are quarantined as such.
    assert (first.inserted, first.not_closed) == (10, 2)
    assert first.quarantined_by_reason == {"future_timestamp": len(stamps) - 12}
    assert _count(clean_db, "select count(*) from bars_1m") == 10
    assert _count(clean_db, "select count(*) from quarantine") == len(stamps) - 12
    later = ingest(batch, clean_db, now_ns=int(stamps[-1]) + 60 * 1_000_000_000)
    assert (later.inserted, later.unchanged, later.not_closed) == (len(stamps) - 10, 10, 0)


def test_ingest_leaves_todays_daily_bar_out_until_the_instruments_session_closes(clean_db: Database) -> None:
    """A daily bar (stamped 00:00 UTC of its date) is final at its exchange's close: 15:30 IST for NSE."""
    nse = Instrument(exchange="NSE", symbol="DAYTEST", currency="INR", timezone="Asia/Kolkata",
                     session_open=time(9, 15), session_close=time(15, 30), calendar="XBOM")
    day = datetime(2026, 12, 3, tzinfo=UTC)
    stamps = np.array([int(day.timestamp()) - 86_400, int(day.timestamp())], dtype=np.int64) * 1_000_000_000
    bars = BarColumns(np.array([nse.key] * 2, dtype=object), stamps, np.array([100.0, 101.0]),
                      np.array([102.0, 103.0]), np.array([99.0, 100.0]), np.array([101.0, 102.0]),
                      np.array([1e5, 1e5]))
    batch = SourceBatch("kite:history", Timeframe.DAY, bars, instruments=(nse,))
    at_1430_ist = int(datetime(2026, 12, 3, 9, 0, tzinfo=UTC).timestamp()) * 1_000_000_000
    forming = ingest(batch, clean_db, register_instruments=True, now_ns=at_1430_ist)
    assert (forming.inserted, forming.not_closed, forming.quarantined) == (1, 1, 0)
    at_1545_ist = int(datetime(2026, 12, 3, 10, 15, tzinfo=UTC).timestamp()) * 1_000_000_000
    closed = ingest(batch, clean_db, now_ns=at_1545_ist)
    assert (closed.inserted, closed.unchanged, closed.not_closed) == (1, 1, 0)
    assert _count(clean_db, "select count(*) from bars_1d") == 2


def test_synthetic_ingest_of_overlapping_intervals_keeps_the_same_prices(clean_db: Database,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The DAG's default source: two runs on different logical dates over overlapping minutes land the same
    bars (nothing validated is rewritten); beyond the series' end a run fails naming the logical date."""
    monkeypatch.setattr(jobs, "_database", lambda: clean_db)
    first = jobs.ingest_interval("2024-03-05T10:00:00+00:00", 3 * 60)
    wider = jobs.ingest_interval("2024-03-05T10:00:00+00:00", 6 * 60)  # a backfill with a wider window
    later = jobs.ingest_interval("2024-03-06T10:00:00+00:00", 30 * 60)  # overlapping the earlier day
    assert first["inserted"] > 0 and wider["updated"] == 0 and later["updated"] == 0
    assert wider["unchanged"] == first["inserted"]
    with pytest.raises(InputError, match=r"logical date 2029-02-01.*synthetic series ends on 2028-12-2"):
        jobs.ingest_interval("2029-02-01T10:00:00+00:00", 60)
