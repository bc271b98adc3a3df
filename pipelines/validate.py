"""The data gate: validate one ingest batch or interval of a raw table with Great Expectations, quarantine
failing rows, and mark each (instrument, UTC day) cell passed or failed in `data_gate`, which feature
building and trading consult before consuming an interval."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg2.extras

from pipelines.validate_frames import NS, add_checks, load_scope, table_spec
from pipelines.validate_gx import NOT_QUARANTINED, ExpectationOutcome, docs_index, run_suite
from tradeloom.adapters.db import Connection, Database
from tradeloom.adapters.sources import SourceBatch
from tradeloom.domain import Timeframe
from tradeloom.errors import DataQualityError, InputError
from tradeloom.quality import BarColumns
from tradeloom.synthetic import minute_bars, synthetic_instruments

log = logging.getLogger(__name__)

SAMPLE_ROWS = 5


@dataclass(frozen=True)
class ExpectationSummary:
    check: str
    expectation: str
    columns: tuple[str, ...]
    success: bool
    unexpected_count: int
    sample: tuple[dict[str, object], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.check}: {self.expectation}({', '.join(self.columns)})"


@dataclass(frozen=True)
class ValidationReport:
    validation_run_id: int
    table: str
    status: str  # 'passed' | 'failed'
    rows_checked: int
    rows_failed: int
    rows_quarantined: int
    cells_passed: int
    cells_failed: int
    expectations: tuple[ExpectationSummary, ...]
    data_docs_path: Path | None
    seconds: float
    failed_days: tuple[tuple[int, str], ...] = field(default_factory=tuple)  # (instrument_id, ISO day)

    @property
    def failed(self) -> tuple[ExpectationSummary, ...]:
        return tuple(e for e in self.expectations if not e.success)


class ValidationFailed(DataQualityError):
    """A validation run failed; the rows are already quarantined and the days marked failed."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(failure_message(report))


def failure_message(report: ValidationReport) -> str:
    lines = [
        f"{report.table}: validation run {report.validation_run_id} failed {len(report.failed)} of "
        f"{len(report.expectations)} expectations ({report.rows_failed} of {report.rows_checked} rows failed, "
        f"{report.rows_quarantined} quarantined, {report.cells_failed} instrument-days marked failed)"
    ]
    for summary in report.failed:
        sample = "; ".join(json.dumps(row, default=str) for row in summary.sample[:3])
        lines.append(f"  {summary.label}: {summary.unexpected_count} rows, e.g. {sample}")
    if report.data_docs_path is not None:
        lines.append(f"  Data Docs: {report.data_docs_path}")
    return "\n".join(lines)


def _utc(moment: datetime | None, name: str) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise InputError(f"{name}={moment.isoformat()} has no time zone; expected an aware UTC datetime")
    return moment.astimezone(UTC)


def validate(
    db: Database,
    table: str,
    start: datetime | None = None,
    end: datetime | None = None,
    ingest_batch_id: int | None = None,
    *,
    now: datetime | None = None,
    gx_root: Path | None = None,
    raise_on_failure: bool = True,
) -> ValidationReport:
    """Validate the (instrument, UTC day) cells of `table` touched by [start, end) and/or one ingest batch.

    Staleness is judged at min(end, now) when `end` is given, else at the newest row validated. Failing
    rows are moved to `quarantine` (reason = the failed check), the cells are upserted into `data_gate`,
    and the run is recorded in `validation_runs`, all in one transaction; then, on failure,
    `ValidationFailed` (a DataQualityError) names the failed expectations and sample rows.
    """
    started = time.perf_counter()
    spec = table_spec(table)
    start, end = _utc(start, "start"), _utc(end, "end")
    if start is not None and end is not None and start >= end:
        raise InputError(f"start={start.isoformat()} must be before end={end.isoformat()}")
    gx_root = gx_root or db.settings.home / "gx"
    now = _utc(now, "now") or datetime.now(tz=UTC)
    started_at = datetime.now(tz=UTC)
    with db.transaction() as conn:
        scope = load_scope(conn, spec, start, end, ingest_batch_id)
    times = scope.frame.loc[~scope.frame["is_context"], spec.time_column]
    if end is not None:
        as_of_ns = int(min(end, now).timestamp()) * NS
    elif len(times):
        as_of_ns = int(times.max().value) + spec.grid.seconds * NS
    else:
        as_of_ns = int(now.timestamp()) * NS
    frame = add_checks(scope, spec, as_of_ns)
    if len(frame):
        outcome = run_suite(gx_root, table, frame, spec.time_column)
        outcomes, docs = outcome.expectations, outcome.data_docs_path
    else:  # nothing to validate: an empty interval passes and touches no cell
        outcomes, docs = (), None
    failing = np.zeros(len(frame), dtype=bool)
    quarantine_reason = np.full(len(frame), "", dtype=object)
    failed_checks: list[list[str]] = [[] for _ in range(len(frame))]
    for item in outcomes:
        failing[item.failing_rows] = True
        for row in item.failing_rows:
            failed_checks[row].append(item.label)
            if item.check not in NOT_QUARANTINED and not quarantine_reason[row]:
                quarantine_reason[row] = f"validate:{item.check}"
    summaries = tuple(_summarise(item, frame, spec.time_column) for item in outcomes)
    status = "failed" if failing.any() or not all(item.success for item in outcomes) else "passed"
    conn = db.connect()
    try:
        with conn:
            run_id, quarantined, cells_passed, failed_days, status = _write_results(
                conn, table=table, spec_time=spec.time_column, raw_columns=spec.raw_columns, frame=frame,
                failing=failing, reasons=quarantine_reason, failed_checks=failed_checks, status=status,
                summaries=summaries, start=start, end=end, ingest_batch_id=ingest_batch_id, docs=docs,
                started_at=started_at,
            )
    finally:
        conn.close()
    report = ValidationReport(
        validation_run_id=run_id, table=table, status=status, rows_checked=len(frame),
        rows_failed=int(failing.sum()), rows_quarantined=quarantined, cells_passed=cells_passed,
        cells_failed=len(failed_days), expectations=summaries, data_docs_path=docs,
        seconds=time.perf_counter() - started, failed_days=failed_days,
    )
    log.info("validation run %s of %s: %s, %s rows checked, %s failed, %s quarantined", run_id, table, status,
             report.rows_checked, report.rows_failed, quarantined)
    if status == "failed" and raise_on_failure:
        raise ValidationFailed(report)
    return report


def _json_value(value: object) -> object:
    """A JSON-safe plain value: timestamps as ISO text, NaN and ±inf as text (JSON has no such numbers)."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    return None if value is pd.NA else value


def _row_dict(frame: pd.DataFrame, row: int, columns: tuple[str, ...]) -> dict[str, object]:
    record = frame.iloc[row]
    out: dict[str, object] = {}
    for name in columns:
        out[name] = _json_value(record[name])
    return out


def _summarise(item: ExpectationOutcome, frame: pd.DataFrame, time_column: str) -> ExpectationSummary:
    shown = ("instrument_id", time_column, *(c for c in item.columns if c not in {"instrument_id", time_column}))
    sample = tuple(
        {name: _json_value(frame.iloc[row][name]) for name in shown} for row in item.failing_rows[:SAMPLE_ROWS]
    )
    return ExpectationSummary(item.check, item.expectation, item.columns, item.success, item.unexpected_count,
                              sample)


def _write_results(
    conn: Connection, *, table: str, spec_time: str, raw_columns: tuple[str, ...], frame: pd.DataFrame,
    failing: npt.NDArray[np.bool_], reasons: npt.NDArray[np.object_], failed_checks: list[list[str]], status: str,
    summaries: tuple[ExpectationSummary, ...], start: datetime | None, end: datetime | None,
    ingest_batch_id: int | None, docs: Path | None, started_at: datetime,
) -> tuple[int, int, int, tuple[tuple[int, str], ...], str]:
    """Record the run, quarantine and delete failing rows, upsert the gate cells: one transaction. Returns the
    run's status too: failed also when a day of it stays failed from an earlier run."""
    expectations = [
        {"check": s.check, "expectation": s.expectation, "columns": list(s.columns), "success": s.success,
         "unexpected_count": s.unexpected_count, "sample": list(s.sample)}
        for s in summaries
    ]
    grouped = pd.DataFrame({
        "instrument_id": frame["instrument_id"].to_numpy(),
        "day": frame[spec_time].dt.tz_convert("UTC").dt.date.to_numpy() if len(frame) else [],
        "failing": failing,
    }).groupby(["instrument_id", "day"], sort=True)["failing"].any()
    cells: list[tuple[int, date, bool]] = [
        (int(key[0]), key[1], bool(bad)) for key, bad in grouped.items() if isinstance(key, tuple)
    ]
    with conn.cursor() as cur:
        # A cell an earlier run failed stays failed: its offending rows were quarantined and deleted, so a retry
        # or the next run over the same day would pass on what is left. Re-ingesting the day's bars clears the
        # mark (pipelines/ingest.py), and the next run judges the day afresh.
        held: set[tuple[int, date]] = set()
        if cells:
            cur.execute("select instrument_id, day from data_gate g join unnest(%s::integer[], %s::date[]) as c(i, d)"
                        " on g.instrument_id = c.i and g.day = c.d where g.target_table = %s and g.status = 'failed'",
                        ([i for i, _, _ in cells], [day for _, day, _ in cells], table))
            held = {(int(i), day) for i, day in cur.fetchall()}
        if held and status == "passed":
            log.warning("validation of %s: %d day(s) an earlier run failed stay failed (re-ingest them to clear)",
                        table, len(held))
            status = "failed"
        cur.execute(
            "insert into validation_runs (target_table, range_start_at, range_end_at, ingest_batch_id, status,"
            " expectations, rows_checked, rows_failed, data_docs_path, started_at, finished_at)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) returning validation_run_id",
            (table, start, end, ingest_batch_id, status, json.dumps(expectations, default=str), len(frame),
             int(failing.sum()), None if docs is None else str(docs), started_at),
        )
        run_id = int(cur.fetchone()[0])  # type: ignore[index]
        to_quarantine = np.flatnonzero(reasons != "")
        quarantined = 0
        if to_quarantine.size:
            rows = []
            for row in to_quarantine:
                raw = _row_dict(frame, int(row), raw_columns)
                raw["failed_expectations"] = failed_checks[row]
                rows.append((raw.get("ingest_batch_id"), table, str(reasons[row]), json.dumps(raw, default=str)))
            # The same bad row met again (re-ingested, or validated twice) is not quarantined twice.
            cur.execute("create temp table pending_quarantine (ingest_batch_id bigint, target_table text,"
                        " reason text, raw_row jsonb) on commit drop")
            psycopg2.extras.execute_values(cur, "insert into pending_quarantine values %s", rows, page_size=1000)
            cur.execute(
                "insert into quarantine (ingest_batch_id, target_table, reason, raw_row)"
                " select p.ingest_batch_id, p.target_table, p.reason, p.raw_row from pending_quarantine p"
                " where not exists (select 1 from quarantine q where q.target_table = p.target_table"
                " and q.raw_row - 'failed_expectations' = p.raw_row - 'failed_expectations')"
            )
            quarantined = cur.rowcount
            ids = frame["instrument_id"].to_numpy()[to_quarantine].tolist()
            stamps = [ts.to_pydatetime() for ts in frame[spec_time].iloc[to_quarantine]]
            cur.execute(
                f"delete from {table} t using unnest(%s::integer[], %s::timestamptz[]) as d(instrument_id, at)"
                f" where t.instrument_id = d.instrument_id and t.{spec_time} = d.at",
                (ids, stamps),
            )
        cells = [(i, day, bad or (i, day) in held) for i, day, bad in cells]
        gate_rows = [(table, i, day, "failed" if bad else "passed", run_id) for i, day, bad in cells]
        if gate_rows:
            psycopg2.extras.execute_values(
                cur,
                "insert into data_gate (target_table, instrument_id, day, status, validation_run_id) values %s"
                " on conflict (target_table, instrument_id, day) do update set status = excluded.status,"
                " validation_run_id = excluded.validation_run_id, updated_at = now()",
                gate_rows, page_size=1000,
            )
    failed_days = tuple((i, day.isoformat()) for i, day, bad in cells if bad)
    return run_id, quarantined, len(gate_rows) - len(failed_days), failed_days, status


def committed_batches(db: Database, table: str) -> list[int]:
    """Ids of the committed ingest batches of `table`, oldest first."""
    table_spec(table)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select ingest_batch_id from ingest_batches where target_table = %s and status = 'committed'"
                    " order by ingest_batch_id", (table,))
        return [int(row[0]) for row in cur.fetchall()]


def broken_minute_batch(seed: int = 11) -> SourceBatch:
    """Two sessions of synthetic minute bars for SYNTH:BROKEN with three defects on the second day:
    a spike (close ×8 for one minute), three bars after the session close, and 30 missing minutes."""
    instrument = replace(synthetic_instruments(1)[0], symbol="BROKEN")
    bars = minute_bars([instrument], days=2, seed=seed, start=date(2024, 3, 4))
    per_day = len(bars) // 2
    keep = np.ones(len(bars), dtype=bool)
    keep[per_day + 100:per_day + 130] = False  # the hole
    spike = per_day + 200
    close, high = bars.close.copy(), bars.high.copy()
    close[spike] *= 8.0
    high[spike] = close[spike]
    last = int(bars.bar_at[-1])
    after_close = np.array([last + offset * 60 * NS for offset in (31, 90, 240)], dtype=np.int64)

    def extend(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.concatenate([values[keep], np.repeat(values[-1], after_close.size)])

    edited = BarColumns(
        instrument_key=np.concatenate([bars.instrument_key[keep], np.repeat(instrument.key, after_close.size)]),
        bar_at=np.concatenate([bars.bar_at[keep], after_close]),
        open=extend(bars.open), high=extend(high), low=extend(bars.low), close=extend(close),
        volume=extend(bars.volume),
    )
    return SourceBatch(source="synthetic:broken-demo", timeframe=Timeframe.MINUTE, bars=edited,
                       instruments=(instrument,))


def demo_gate(db: Database) -> list[str]:
    """For `tradeloom demo`: validate every batch `ingest bundled` and `ingest synthetic` loaded (they
    pass), then ingest a deliberately broken synthetic batch and show it quarantined and its day failed."""
    from pipelines.ingest import ingest

    lines: list[str] = []
    for table in ("bars_1d", "bars_1h", "bars_1m"):
        for batch_id in committed_batches(db, table):
            report = validate(db, table, ingest_batch_id=batch_id, raise_on_failure=False)
            lines.append(f"{table} batch {batch_id}: {report.status} ({report.rows_checked} rows, "
                         f"{report.cells_passed} instrument-days passed, {report.cells_failed} failed)")
    broken = ingest(broken_minute_batch(), db, register_instruments=True)
    lines.append(f"ingested a deliberately broken batch {broken.ingest_batch_id} ({broken.inserted} rows of "
                 "SYNTH:BROKEN: a ×8 spike, 3 bars after the close, 30 missing minutes)")
    try:
        validate(db, "bars_1m", ingest_batch_id=broken.ingest_batch_id)
        lines.append("the broken batch passed: the data gate did NOT catch it")
    except ValidationFailed as failure:
        report = failure.report
        lines.append(f"broken batch {broken.ingest_batch_id} failed validation run {report.validation_run_id}:")
        lines.extend(f"  failed {item.label} on {item.unexpected_count} rows" for item in report.failed)
        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute("select reason, count(*) from quarantine where ingest_batch_id = %s group by 1 order by 1",
                        (broken.ingest_batch_id,))
            lines.extend(f"  quarantined {count} rows: {reason}" for reason, count in cur.fetchall())
            cur.execute(
                "select g.day, g.status from data_gate g join instruments i using (instrument_id)"
                " where g.target_table = 'bars_1m' and i.exchange = 'SYNTH' and i.symbol = 'BROKEN' order by 1"
            )
            lines.extend(f"  data gate SYNTH:BROKEN {day}: {status}" for day, status in cur.fetchall())
        lines.append(f"  Data Docs: {report.data_docs_path}")
    lines.append(f"Data Docs index: {docs_index(db.settings.home / 'gx')}")
    return lines


def gate_failures(
    db: Database, table: str, start: datetime, end: datetime, instrument_ids: list[int] | None = None,
) -> list[tuple[int, date, str]]:
    """(instrument_id, UTC day, 'failed' | 'unvalidated') of every cell in [start, end) that holds rows
    of `table` but has not passed the gate. Empty means the interval may be consumed."""
    spec = table_spec(table)
    start_utc, end_utc = _utc(start, "start"), _utc(end, "end")
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            f"""
            select c.instrument_id, c.day, coalesce(g.status, 'unvalidated')
            from (select distinct instrument_id, ({spec.time_column} at time zone 'UTC')::date as day
                  from {table} where {spec.time_column} >= %(start)s and {spec.time_column} < %(end)s
                  and (%(ids)s::integer[] is null or instrument_id = any(%(ids)s::integer[]))) c
            left join data_gate g on g.target_table = %(table)s and g.instrument_id = c.instrument_id
                 and g.day = c.day
            where g.status is distinct from 'passed'
            order by 1, 2
            """,
            {"start": start_utc, "end": end_utc, "ids": instrument_ids, "table": table},
        )
        return [(int(i), day, str(status)) for i, day, status in cur.fetchall()]


def require_gate_passed(
    db: Database, table: str, start: datetime, end: datetime, instrument_ids: list[int] | None = None,
) -> None:
    """Raise DataQualityError unless every cell of [start, end) with rows in `table` has passed the gate."""
    blocked = gate_failures(db, table, start, end, instrument_ids)
    if blocked:
        shown = ", ".join(f"instrument {i} {day.isoformat()} {status}" for i, day, status in blocked[:10])
        raise DataQualityError(
            f"{table} [{start.isoformat()}, {end.isoformat()}): {len(blocked)} instrument-days have not passed "
            f"the data gate ({shown}{' …' if len(blocked) > 10 else ''}); expected every day validated and "
            f"passed (`tradeloom validate {table} --start … --end …`)"
        )
