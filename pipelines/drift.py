"""Model monitoring: data drift (Evidently 0.7 Report API) between the training reference and the latest
window of features, prediction drift of the champion's scores, performance decay of the journal's live
decisions against realised returns, and live-vs-reference execution parity (slippage, fill rate).

`run_drift(db, window_end)` is idempotent per window end: it upserts one `drift_runs` row and rewrites one
HTML report under `.loom/reports/`. Thresholds live in `DriftSettings` (env prefix TRADELOOM_DRIFT_).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tradeloom.adapters.db import Database
from tradeloom.errors import ConfigError, InputError
from tradeloom.models.metrics import spearman
from tradeloom.settings import project_root

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
Status = Literal["green", "amber", "red", "skipped"]
SEVERITY: dict[str, int] = {"skipped": 0, "green": 1, "amber": 2, "red": 3}
# The champion's own trading; a challenger's shadow journal (mode 'shadow') is judged apart (pipelines/shadow.py).
LIVE_MODES = ("paper", "live", "replay")
SCORE_COLUMN = "champion_score"


class DriftSettings(BaseSettings):
    """Thresholds and windows; defaults suit the daily direction strategy."""

    model_config = SettingsConfigDict(env_prefix="TRADELOOM_DRIFT_", env_file=".env", extra="ignore")

    train_config: Path = Field(default_factory=lambda: project_root() / "configs" / "direction_daily.yaml")
    # Newest feature rows (at or before the window end) compared with the training segment.
    current_rows: int = Field(default=60, ge=10)
    reference_rows: int = Field(default=750, ge=10)
    # Share of features Evidently flags as drifted: amber from, red from.
    drift_share_amber: float = Field(default=0.3, gt=0.0, le=1.0)
    drift_share_red: float = Field(default=0.6, gt=0.0, le=1.0)
    decision_lookback_days: int = Field(default=30, ge=1)
    min_decisions: int = Field(default=20, ge=1)
    min_accuracy: float = Field(default=0.45, ge=0.0, le=1.0)
    min_information_coefficient: float = -0.05
    min_signal_sharpe: float = -0.5
    periods_per_year: float = Field(default=252.0, gt=0.0)
    expected_slippage_bps: float = Field(default=5.0, ge=0.0)
    max_slippage_gap_bps: float = Field(default=10.0, ge=0.0)
    min_fill_rate: float = Field(default=0.9, ge=0.0, le=1.0)
    report_dir: Path | None = None  # default: <home>/reports


@dataclass(frozen=True)
class Verdict:
    status: Status
    value: float | None
    threshold: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "value": self.value, "threshold": self.threshold, "detail": self.detail}


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    value: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class PerformanceStats:
    evaluated: int
    accuracy: float
    information_coefficient: float
    signal_sharpe: float


@dataclass(frozen=True)
class ParityStats:
    orders: int
    fills: int
    fill_rate: float
    live_slippage_bps: float
    reference_slippage_bps: float
    reference: str


@dataclass
class DriftResult:
    strategy: str
    window_start: datetime
    window_end: datetime
    status: Status
    verdicts: dict[str, Verdict]
    columns: list[ColumnDrift] = field(default_factory=list)
    prediction: ColumnDrift | None = None
    performance: PerformanceStats | None = None
    parity: ParityStats | None = None
    model_name: str | None = None
    model_version: str | None = None
    report_path: Path | None = None
    drift_run_id: int | None = None

    @property
    def drift_share(self) -> float | None:
        return sum(c.drifted for c in self.columns) / len(self.columns) if self.columns else None

    def summary(self) -> dict[str, Any]:
        """Builtins only: what the Airflow task returns and the email shows."""
        return {"drift_run_id": self.drift_run_id, "strategy": self.strategy, "status": self.status,
                "window_end": self.window_end.isoformat(), "model_version": self.model_version,
                "report_path": str(self.report_path) if self.report_path else None,
                "verdicts": {name: verdict.as_dict() for name, verdict in self.verdicts.items()}}


# -- pure statistics ------------------------------------------------------------------------------------

def _drifted(method: str, value: float, threshold: float) -> bool:
    # Evidently reports p-values for statistical tests (drift when small) and distances otherwise.
    return value < threshold if "p_value" in method else value >= threshold


def parse_value_drifts(snapshot_dict: dict[str, Any]) -> list[ColumnDrift]:
    """ValueDrift results out of `Snapshot.dict()` (Evidently 0.7: metric config + scalar value)."""
    found: list[ColumnDrift] = []
    for metric in snapshot_dict.get("metrics", []):
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        value, threshold, method = float(metric["value"]), float(config["threshold"]), str(config["method"])
        found.append(ColumnDrift(str(config["column"]), method, value, threshold, _drifted(method, value, threshold)))
    return found


def evidently_drift(reference: Any, current: Any, feature_columns: list[str], score_column: str | None,
                    html_path: Path | None) -> tuple[list[ColumnDrift], ColumnDrift | None]:
    """Evidently's DataDriftPreset over the features (+ ValueDrift of the score); optionally saves the HTML."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    numeric = [*feature_columns, *([score_column] if score_column else [])]
    definition = DataDefinition(numerical_columns=numeric)
    metrics: list[Any] = [DataDriftPreset(columns=feature_columns)]
    if score_column:
        metrics.append(ValueDrift(column=score_column))
    snapshot = Report(metrics).run(Dataset.from_pandas(current[numeric], data_definition=definition),
                                   Dataset.from_pandas(reference[numeric], data_definition=definition))
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    drifts = parse_value_drifts(snapshot.dict())
    prediction = next((d for d in drifts if d.column == score_column), None)
    return [d for d in drifts if d.column != score_column], prediction


def performance_stats(signal: FloatArray, score: FloatArray, realised: FloatArray,
                      periods_per_year: float) -> PerformanceStats:
    """Hit rate of non-flat signals, rank IC of score vs realised return, annualised Sharpe of signal × return."""
    ok = np.isfinite(realised) & np.isfinite(score) & np.isfinite(signal)
    signal, score, realised = signal[ok], score[ok], realised[ok]
    active = signal != 0
    accuracy = float(np.mean(np.sign(signal[active]) == np.sign(realised[active]))) if active.any() else float("nan")
    pnl = signal * realised
    deviation = float(np.std(pnl, ddof=1)) if pnl.size > 1 else 0.0
    sharpe = float(np.mean(pnl) / deviation * math.sqrt(periods_per_year)) if deviation > 0 else float("nan")
    return PerformanceStats(int(ok.sum()), accuracy, spearman(score, realised), sharpe)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def judge(settings: DriftSettings, columns: list[ColumnDrift], prediction: ColumnDrift | None,
          performance: PerformanceStats | None, parity: ParityStats | None) -> dict[str, Verdict]:
    """One verdict per check; a check without data is `skipped`, never silently green."""
    verdicts: dict[str, Verdict] = {}
    share_rule = f"amber >= {settings.drift_share_amber:g}, red >= {settings.drift_share_red:g}"
    if columns:
        share = sum(c.drifted for c in columns) / len(columns)
        drifted = [c.column for c in columns if c.drifted]
        status: Status = ("red" if share >= settings.drift_share_red else
                          "amber" if share >= settings.drift_share_amber else "green")
        verdicts["data_drift"] = Verdict(status, share, share_rule,
                                         f"{len(drifted)}/{len(columns)} features drifted: {', '.join(drifted[:8])}")
    else:
        verdicts["data_drift"] = Verdict("skipped", None, share_rule, "no feature rows")
    if prediction is not None:
        verdicts["prediction_drift"] = Verdict(
            "amber" if prediction.drifted else "green", prediction.value,
            f"{prediction.method} {prediction.threshold:g}", "champion score distribution "
            + ("shifted" if prediction.drifted else "stable"))
    else:
        verdicts["prediction_drift"] = Verdict("skipped", None, "-", "no champion to score the windows with")
    if performance is None or performance.evaluated < settings.min_decisions:
        seen = performance.evaluated if performance else 0
        verdicts["performance"] = Verdict("skipped", None, f">= {settings.min_decisions} decisions",
                                          f"{seen} live decisions with a realised outcome")
    else:
        failures = []
        if _finite(performance.accuracy) and performance.accuracy < settings.min_accuracy:
            failures.append(f"accuracy {performance.accuracy:.3f} < {settings.min_accuracy:g}")
        if _finite(performance.information_coefficient) and (
                performance.information_coefficient < settings.min_information_coefficient):
            failures.append(f"IC {performance.information_coefficient:.3f} < {settings.min_information_coefficient:g}")
        if _finite(performance.signal_sharpe) and performance.signal_sharpe < settings.min_signal_sharpe:
            failures.append(f"Sharpe {performance.signal_sharpe:.2f} < {settings.min_signal_sharpe:g}")
        verdicts["performance"] = Verdict(
            "red" if len(failures) >= 2 else "amber" if failures else "green", performance.accuracy,
            f"accuracy >= {settings.min_accuracy:g}, IC >= {settings.min_information_coefficient:g}, "
            f"Sharpe >= {settings.min_signal_sharpe:g}",
            "; ".join(failures) or f"{performance.evaluated} decisions: accuracy {performance.accuracy:.3f}, "
            f"IC {performance.information_coefficient:.3f}, Sharpe {performance.signal_sharpe:.2f}")
    if parity is None or parity.orders == 0:
        verdicts["execution_parity"] = Verdict("skipped", None, "-", "no live orders in the window")
    else:
        gap = abs(parity.live_slippage_bps - parity.reference_slippage_bps) if parity.fills else float("nan")
        problems = []
        if parity.fill_rate < settings.min_fill_rate:
            problems.append(f"fill rate {parity.fill_rate:.2f} < {settings.min_fill_rate:g}")
        if _finite(gap) and gap > settings.max_slippage_gap_bps:
            problems.append(f"slippage {parity.live_slippage_bps:.1f} bps vs {parity.reference} "
                            f"{parity.reference_slippage_bps:.1f} bps")
        verdicts["execution_parity"] = Verdict(
            "amber" if problems else "green", gap if _finite(gap) else None,
            f"|slippage gap| <= {settings.max_slippage_gap_bps:g} bps, fill rate >= {settings.min_fill_rate:g}",
            "; ".join(problems) or f"{parity.fills} fills of {parity.orders} orders, slippage "
            f"{parity.live_slippage_bps:.1f} bps vs {parity.reference} {parity.reference_slippage_bps:.1f} bps")
    return verdicts


def overall(verdicts: dict[str, Verdict]) -> Status:
    worst = max((SEVERITY[v.status] for v in verdicts.values()), default=0)
    return "green" if worst <= 1 else ("amber" if worst == 2 else "red")


# -- loading ----------------------------------------------------------------------------------------------

def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise InputError(f"{name}={moment.isoformat()} has no time zone; expected an aware UTC datetime")
    return moment.astimezone(UTC)


def _champion_scores(db: Database, model_name: str, data: Any) -> tuple[str | None, FloatArray | None]:
    """P(up) - P(down) of `@champion` for every row (NaN in a sequence model's warm-up); (None, None)
    when there is no champion or it was trained on other features."""
    from pipelines.mlflow_server import registry_target
    from tradeloom.adapters.registry import load_scorer
    from tradeloom.models.compatibility import ModelRefusedError

    try:
        loaded, scorer = load_scorer(registry_target(db.settings), model_name, data.feature_names, data.spec_hash)
    except (ModelRefusedError, ConfigError) as error:
        log.warning("prediction drift skipped: %s", error)
        return None, None
    except Exception as error:  # MLflow unreachable: monitor the rest rather than fail the run
        log.warning("prediction drift skipped, registry unavailable: %s", error)
        return None, None
    features = np.asarray(data.features, dtype=np.float64)
    window = scorer.window
    scores = np.full(features.shape[0], np.nan)
    if features.shape[0] >= window:
        batch = (features if window == 1 else
                 np.lib.stride_tricks.sliding_window_view(features, window, axis=0).transpose(0, 2, 1))
        probabilities = scorer.predict_proba(batch)
        scores[window - 1:] = probabilities[:, -1] - probabilities[:, 0]
    return loaded.version, scores


def _performance(db: Database, strategy: str, table: str, start: datetime, end: datetime,
                 periods_per_year: float) -> PerformanceStats | None:
    """Live decisions (record.instruments.<key>.signal/confidence) joined to the next bar's log return."""
    sql = f"""
        select d.bar_at, item.key, (item.value ->> 'signal')::float8,
               coalesce((item.value ->> 'confidence')::float8, 1.0),
               ln(nxt.close / cur.close)
        from decisions d
        cross join lateral jsonb_each(coalesce(d.record -> 'instruments', '{{}}'::jsonb)) as item
        join instruments i on i.exchange || ':' || i.symbol = item.key
        join lateral (select close from {table} b where b.instrument_id = i.instrument_id and b.bar_at <= d.bar_at
                      order by b.bar_at desc limit 1) cur on true
        join lateral (select close from {table} b where b.instrument_id = i.instrument_id and b.bar_at > d.bar_at
                      order by b.bar_at limit 1) nxt on true
        where d.strategy = %s and d.mode = any(%s) and d.bar_at >= %s and d.bar_at < %s"""
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(sql, (strategy, list(LIVE_MODES), start, end))
        rows = cur.fetchall()
    if not rows:
        return None
    signal = np.array([row[2] for row in rows], dtype=np.float64)
    confidence = np.array([row[3] for row in rows], dtype=np.float64)
    realised = np.array([row[4] for row in rows], dtype=np.float64)
    return performance_stats(signal, signal * confidence, realised, periods_per_year)


def _slippage(db: Database, strategy: str, modes: list[str], table: str, start: datetime,
              end: datetime) -> tuple[int, int, float, float]:
    """(orders, fills, fill rate, mean signed slippage in bps against the decision bar's close)."""
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select count(*), coalesce(sum(filled_quantity)::float8 / nullif(sum(quantity), 0), 0) "
                    "from orders where strategy = %s and mode = any(%s) and created_at >= %s and created_at < %s",
                    (strategy, modes, start, end))
        row = cur.fetchone()
        orders, fill_rate = (int(row[0]), float(row[1])) if row else (0, 0.0)
        cur.execute(f"""
            select f.side * (f.price - cur.close) / cur.close * 1e4
            from fills f join orders o using (client_order_id)
            join instruments i on i.exchange || ':' || i.symbol = o.instrument_key
            join lateral (select close from {table} b where b.instrument_id = i.instrument_id
                          and b.bar_at <= o.bar_at order by b.bar_at desc limit 1) cur on true
            where o.strategy = %s and o.mode = any(%s) and f.filled_at >= %s and f.filled_at < %s""",
                    (strategy, modes, start, end))
        slips = [float(r[0]) for r in cur.fetchall()]
    return orders, len(slips), fill_rate, float(np.mean(slips)) if slips else float("nan")


def _parity(db: Database, strategy: str, table: str, start: datetime, end: datetime,
            expected_bps: float) -> ParityStats | None:
    orders, fills, fill_rate, live = _slippage(db, strategy, list(LIVE_MODES), table, start, end)
    if orders == 0:
        return None
    _, backtest_fills, _, backtest = _slippage(db, strategy, ["backtest"], table, start, end)
    if backtest_fills:
        return ParityStats(orders, fills, fill_rate, live, backtest, "backtest")
    return ParityStats(orders, fills, fill_rate, live, expected_bps, "cost model")


def _store(db: Database, result: DriftResult, reference: tuple[datetime, datetime] | None) -> int:
    perf, parity = result.performance, result.parity
    values = {
        "strategy": result.strategy, "window_start": result.window_start, "window_end": result.window_end,
        "reference_start": reference[0] if reference else None, "reference_end": reference[1] if reference else None,
        "model_name": result.model_name, "model_version": result.model_version, "status": result.status,
        "data_drift_share": result.drift_share, "drifted_features": [c.column for c in result.columns if c.drifted],
        "prediction_drift_value": result.prediction.value if result.prediction else None,
        "rolling_accuracy": perf.accuracy if perf else None,
        "information_coefficient": perf.information_coefficient if perf else None,
        "signal_sharpe": perf.signal_sharpe if perf else None, "decisions_evaluated": perf.evaluated if perf else 0,
        "live_slippage_bps": parity.live_slippage_bps if parity else None,
        "reference_slippage_bps": parity.reference_slippage_bps if parity else None,
        "fill_rate": parity.fill_rate if parity else None,
        "verdicts": json.dumps({k: v.as_dict() for k, v in result.verdicts.items()}, allow_nan=False,
                               default=str),
        "report_path": str(result.report_path) if result.report_path else None,
    }
    values = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
    columns = ", ".join(values)
    updates = ", ".join(f"{k} = excluded.{k}" for k in values if k not in ("strategy", "window_end"))
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(f"insert into drift_runs ({columns}) values ({', '.join(['%s'] * len(values))}) "
                    f"on conflict (strategy, window_end) do update set {updates}, updated_at = now() "
                    "returning drift_run_id", list(values.values()))
        row = cur.fetchone()
    return int(row[0]) if row else -1


def _nan_safe(verdicts: dict[str, Verdict]) -> dict[str, Verdict]:
    return {k: Verdict(v.status, v.value if _finite(v.value) else None, v.threshold, v.detail)
            for k, v in verdicts.items()}


def run_drift(db: Database, window_end: datetime, settings: DriftSettings | None = None,
              report_dir: Path | None = None) -> DriftResult:
    """All four checks for the window ending at `window_end`; stores and returns the result."""
    import pandas as pd

    from pipelines.train import load_config
    from pipelines.training_data import TIMEFRAME_TABLES, load_feature_rows

    settings = settings or DriftSettings()
    window_end = _aware(window_end, "window_end")
    config = load_config(settings.train_config)
    # Every warm row, labelled or not: the current window reaches the newest bar, not the last labelled one.
    _, config, data = load_feature_rows(db, config)
    stamps = np.asarray(data.timestamps_ns, dtype=np.int64)
    end_ns = int(window_end.timestamp() * 1e9)
    train_start = int(datetime.combine(config.segments.train.start, datetime.min.time(), UTC).timestamp() * 1e9)
    train_end = int(datetime.combine(config.segments.train.end, datetime.max.time(), UTC).timestamp() * 1e9)
    current_rows = np.flatnonzero(stamps < end_ns)[-settings.current_rows:]
    if current_rows.size < 10:
        raise InputError(f"window_end={window_end.isoformat()}: {current_rows.size} feature rows before it; "
                         "expected at least 10 (ingest and build features first)")
    before_current = data.labelled & (stamps < stamps[current_rows[0]])  # rows the model could have trained on
    reference_rows = np.flatnonzero(before_current & (stamps >= train_start)
                                    & (stamps <= train_end))[-settings.reference_rows:]
    if reference_rows.size < 10:  # no training segment on record: the rows before the current window
        reference_rows = np.flatnonzero(before_current)[-settings.reference_rows:]
    names = list(data.feature_names)
    frame = pd.DataFrame(np.asarray(data.features, dtype=np.float64), columns=names)
    usable = [n for n in names if frame[n].std() > 0]  # constant columns (unused on this timeframe) carry no signal
    version, scores = _champion_scores(db, config.registered_model_name, data)
    score_column: str | None = None
    if scores is not None and np.isfinite(scores[reference_rows]).sum() >= 10:
        frame[SCORE_COLUMN] = scores
        score_column = SCORE_COLUMN
    reference, current = frame.iloc[reference_rows].dropna(), frame.iloc[current_rows].dropna()
    window_start = datetime.fromtimestamp(stamps[current_rows[0]] / 1e9, UTC)
    reference_span = (datetime.fromtimestamp(stamps[reference_rows[0]] / 1e9, UTC),
                      datetime.fromtimestamp(stamps[reference_rows[-1]] / 1e9, UTC)) if reference_rows.size else None
    report_dir = report_dir or settings.report_dir or db.settings.home / "reports"
    html_path = report_dir / f"drift_{config.strategy}_{window_end:%Y%m%dT%H%M}.html"
    columns, prediction = evidently_drift(reference, current, usable, score_column, html_path)
    lookback_start = window_end - timedelta(days=settings.decision_lookback_days)
    table = TIMEFRAME_TABLES[config.timeframe]
    performance = _performance(db, config.strategy, table, lookback_start, window_end, settings.periods_per_year)
    parity = _parity(db, config.strategy, table, window_end - timedelta(days=1), window_end,
                     settings.expected_slippage_bps)
    verdicts = _nan_safe(judge(settings, columns, prediction, performance, parity))
    result = DriftResult(strategy=config.strategy, window_start=window_start, window_end=window_end,
                         status=overall(verdicts), verdicts=verdicts, columns=columns, prediction=prediction,
                         performance=performance, parity=parity, model_name=config.registered_model_name,
                         model_version=version, report_path=html_path)
    result.drift_run_id = _store(db, result, reference_span)
    log.info("drift run %s for %s up to %s: %s", result.drift_run_id, result.strategy, window_end.isoformat(),
             result.status)
    return result


def latest_drift(db: Database, strategy: str | None = None, before: datetime | None = None) -> dict[str, Any] | None:
    """The newest stored drift run (optionally at or before `before`), as builtins."""
    where: list[str] = ["true"]
    params: list[object] = []
    if strategy:
        where.append("strategy = %s")
        params.append(strategy)
    if before:
        where.append("window_end <= %s")
        params.append(before)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(f"select drift_run_id, strategy, window_end, status, model_version, verdicts, report_path "
                    f"from drift_runs where {' and '.join(where)} order by window_end desc, drift_run_id desc limit 1",
                    params)
        row = cur.fetchone()
    if row is None:
        return None
    return {"drift_run_id": row[0], "strategy": row[1], "window_end": row[2].isoformat(), "status": row[3],
            "model_version": row[4], "verdicts": row[5], "report_path": row[6]}


def demo_drift(db: Database) -> Path:
    """The demo hook: drift of the latest feature window against the training segment; returns the HTML."""
    result = run_drift(db, datetime.now(UTC))
    if result.report_path is None:
        raise ConfigError("drift run wrote no report")
    return result.report_path
