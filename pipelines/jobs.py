"""Entry points for the Airflow DAGs: one call per task, ISO-text arguments (rendered from the run's
logical date, never `now()`), builtins out (Airflow unpickles the result in its own venv).

Each is idempotent for its interval: ingest upserts, validation re-judges the same cells, dbt rewrites the
window, drift and report upsert on their window end / day.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tradeloom.adapters.db import Database
from tradeloom.errors import InputError
from tradeloom.settings import PipelineSettings, project_root

log = logging.getLogger(__name__)
SYNTHETIC_EPOCH = date(2024, 1, 1)
MAX_SYNTHETIC_DAYS = 1300  # sessions: to December 2028


def _database() -> Database:
    return Database(PipelineSettings())


def _moment(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise InputError(f"{name}={text!r} is not an ISO timestamp") from error
    if moment.tzinfo is None:
        raise InputError(f"{name}={text!r} has no time zone; expected an aware timestamp")
    return moment.astimezone(UTC)


def interval(logical: str, minutes: int) -> tuple[datetime, datetime]:
    """[logical - minutes, logical): cron-triggered runs carry one instant, not an interval."""
    if minutes <= 0:
        raise InputError(f"window_minutes={minutes}; expected a positive number")
    end = _moment(logical, "logical_date")
    return end - timedelta(minutes=minutes), end


# -- premarket ------------------------------------------------------------------------------------------

def session_day(day: str, calendar: str = "XBOM") -> dict[str, Any]:
    from pipelines.premarket import is_session

    parsed = date.fromisoformat(day)
    return {"day": day, "is_session": is_session(parsed, calendar), "calendar": calendar}


def premarket_broker(day: str) -> dict[str, Any]:
    """Live venv: the broker session check and the instrument master refresh (needs the broker SDKs)."""
    from pipelines.broker_connection import load_broker_settings
    from pipelines.premarket import broker_checks
    from tradeloom.errors import ConfigError

    try:
        settings = load_broker_settings()
    except ConfigError:
        settings = None  # broker_checks reports why, as a red check
    checks = broker_checks(_database(), settings)
    return {"day": day, "broker": settings.name if settings else "unconfigured",
            "checks": {check.name: check.as_dict() for check in checks}}


def premarket(day: str, broker: dict[str, Any] | None = None) -> dict[str, Any]:
    """`broker`: `premarket_broker`'s result from the live venv; None runs the broker checks here."""
    from pipelines.premarket import run_checks

    return run_checks(_database(), date.fromisoformat(day), broker=broker["checks"] if broker else None)


# -- ingest + data gate ----------------------------------------------------------------------------------

def fetch_broker_history(logical: str, minutes: int, source: str) -> dict[str, Any]:
    """Live venv: pull a broker's (`kite`, `fyers`) minute bars for the interval into a spool file. Other
    sources need no fetch and pass through (the ingest step judges them)."""
    from pipelines.broker_connection import BROKERS

    if source not in BROKERS:
        return {"source": source, "path": None, "rows": None}
    from pipelines.broker_connection import load_broker_settings
    from pipelines.broker_history import fetch_history

    start, end = interval(logical, minutes)
    settings = PipelineSettings()
    result = fetch_history(Database(settings), load_broker_settings(source), start, end,
                           settings.home / "spool" / "history")
    return result.as_dict()


def ingest_interval(logical: str, minutes: int, source: str = "synthetic", spool: str | None = None
                    ) -> dict[str, Any]:
    """Ingest `source`'s bars for the interval. `synthetic` is a seeded series continuous from 2024-01-01,
    so any interval of it is reproducible and re-ingesting adds nothing; `kite`/`fyers` read the spool
    file the live venv's fetch step wrote."""
    from pipelines.broker_connection import BROKERS
    from pipelines.ingest import ingest
    from tradeloom.adapters.sources import SourceBatch
    from tradeloom.domain import Timeframe
    from tradeloom.synthetic import minute_bars, synthetic_instruments

    start, end = interval(logical, minutes)
    if source in BROKERS:
        if spool is None:
            raise InputError(f"source={source!r} needs spool=<the fetch step's file>; got None")
        from pipelines.broker_history import ingest_spool

        landed = ingest_spool(_database(), Path(spool), f"{source}:history")
        return {**landed, "start": start.isoformat(), "end": end.isoformat()}
    if source != "synthetic":
        raise InputError(f"source={source!r}; expected 'synthetic', {' or '.join(repr(b) for b in BROKERS)}")
    settings = PipelineSettings()
    if end.date() <= SYNTHETIC_EPOCH:
        return {"rows": 0, "start": start.isoformat(), "end": end.isoformat(), "ingest_batch_id": None}
    instruments = synthetic_instruments(settings.synthetic_instruments)
    # Always the whole series (about 1 s): a bar's values depend on how many sessions are drawn, so drawing
    # only up to the interval gave every run different prices for the same minutes and rewrote history.
    bars = minute_bars(instruments, days=MAX_SYNTHETIC_DAYS, seed=settings.synthetic_seed, start=SYNTHETIC_EPOCH)
    if len(bars) and int(end.timestamp()) * 10**9 > int(bars.bar_at.max()) + 86_400 * 10**9:
        last = datetime.fromtimestamp(int(bars.bar_at.max()) / 1e9, tz=UTC).date().isoformat()
        raise InputError(f"logical date {logical!s}: the synthetic series ends on {last} ({MAX_SYNTHETIC_DAYS} "
                         "sessions from 2024-01-01); ingest from a broker (source='kite' or 'fyers') instead")
    keep = (bars.bar_at >= int(start.timestamp()) * 10**9) & (bars.bar_at < int(end.timestamp()) * 10**9)
    if not keep.any():
        return {"rows": 0, "start": start.isoformat(), "end": end.isoformat(), "ingest_batch_id": None}
    batch = SourceBatch(source=f"synthetic:seed={settings.synthetic_seed}", timeframe=Timeframe.MINUTE,
                        bars=bars.take(keep), instruments=tuple(instruments))
    report = ingest(batch, _database(), register_instruments=True)
    return {"rows": int(np.count_nonzero(keep)), "start": start.isoformat(), "end": end.isoformat(),
            "ingest_batch_id": report.ingest_batch_id, "inserted": report.inserted, "updated": report.updated,
            "unchanged": report.unchanged, "quarantined": report.quarantined, "table": report.table,
            "not_closed": report.not_closed}


def validate_interval(table: str, logical: str, minutes: int) -> dict[str, Any]:
    """The data gate over the interval; raises (fails the task) when a check fails."""
    from pipelines.validate import validate

    start, end = interval(logical, minutes)
    report = validate(_database(), table, start, end, now=end)
    return {"validation_run_id": report.validation_run_id, "status": report.status, "rows_checked": report.rows_checked,
            "rows_quarantined": report.rows_quarantined, "cells_passed": report.cells_passed}


# -- features --------------------------------------------------------------------------------------------

def feature_groups() -> list[list[str]]:
    """Timeframes with bars in the store: one mapped dbt build each (the marts are keyed by timeframe)."""
    from pipelines.training_data import TIMEFRAME_TABLES

    groups: list[list[str]] = []
    with _database().transaction() as conn, conn.cursor() as cur:
        for timeframe, table in TIMEFRAME_TABLES.items():
            cur.execute(f"select exists (select 1 from {table})")
            row = cur.fetchone()
            if row and row[0]:
                groups.append([timeframe])
    return groups


def build_feature_group(timeframes: list[str], logical: str, minutes: int, rewrite_window: bool = False
                        ) -> dict[str, Any]:
    """`dbt run` of one group (tests run once for all groups in `verify_features`). Incremental by default:
    each series is extended from its last built bar, so a re-run adds nothing; with `rewrite_window`,
    exactly the interval's rows of the marts are rewritten."""
    from pipelines.features import build_features

    start, end = interval(logical, minutes)
    result = build_features(_database(), timeframes=timeframes, start=start if rewrite_window else None,
                            end=end if rewrite_window else None, run_tests=False)
    return {"timeframes": timeframes, "success": result.success, "feature_rows": result.feature_rows,
            "label_rows": result.label_rows, "nodes": len(result.nodes), "spec_hash": result.spec_hash,
            "window": [start.isoformat(), end.isoformat()] if rewrite_window else None}


def verify_features() -> dict[str, Any]:
    """One incremental `dbt build` over every timeframe after the groups: the dbt data and unit tests gate
    the marts (raises DataQualityError when one fails)."""
    from pipelines.features import build_features

    result = build_features(_database())
    failed = sorted(node for node, status in result.nodes.items() if status not in ("success", "pass"))
    return {"success": result.success, "nodes": len(result.nodes), "failed": failed,
            "feature_rows": result.feature_rows, "label_rows": result.label_rows}


# -- training --------------------------------------------------------------------------------------------

def train_and_register(config_path: str) -> dict[str, Any]:
    """Walk-forward train, log and register (`@challenger`), gate against `@champion` (promotion only when
    the config's gate says auto_promote)."""
    from pipelines.mlflow_server import registry_target
    from pipelines.train import load_config, train_from_db

    path = Path(config_path)
    path = path if path.is_absolute() else project_root() / path
    db = _database()
    config = load_config(path)
    result, _ = train_from_db(db, config, registry_target(db.settings))
    rows = [{key: (value if not isinstance(value, float) or np.isfinite(value) else None) for key, value in row.items()}
            for row in result.comparison_rows()]
    versions = {kind.value: outcome.version for kind, outcome in result.outcomes.items() if outcome.version}
    gates = {kind.value: {"version": outcome.version, "promotable": outcome.gate.promotable,
                          "reason": outcome.gate.reason}
             for kind, outcome in result.outcomes.items() if outcome.gate is not None}
    return {"strategy": config.strategy, "oos_window": result.oos_window, "comparison": rows, "versions": versions,
            "gates": gates,
            "champion_version": result.champion_version}


# -- monitoring ------------------------------------------------------------------------------------------

def drift(window_end: str) -> dict[str, Any]:
    from pipelines.drift import run_drift

    return run_drift(_database(), _moment(window_end, "window_end")).summary()


def prepare_daily_report(day: str) -> dict[str, Any]:
    from pipelines.report import prepare_report

    return prepare_report(_database(), date.fromisoformat(day))


def mark_daily_report_sent(day: str, strategy: str) -> dict[str, Any]:
    from pipelines.report import mark_sent

    mark_sent(_database(), date.fromisoformat(day), strategy)
    return {"day": day, "strategy": strategy, "sent": True}
