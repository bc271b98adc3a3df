"""Drift checks against the real local TimescaleDB: bundled AAPL bars, a written journal, Evidently."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pipelines.drift import DriftSettings, latest_drift, run_drift
from tests.integration.monitoring_support import STRATEGY, clear_journal, load_aapl, write_journal
from tradeloom.adapters.db import Database
from tradeloom.settings import project_root


@pytest.fixture(scope="module")
def aapl_end(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[datetime]:
    # A private, empty registry: no @champion, whatever other runs registered in the shared `mlflow` database.
    registry = tmp_path_factory.mktemp("mlflow") / "registry.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRADELOOM_MLFLOW_TRACKING_URI", f"sqlite:///{registry}")
        last = load_aapl(database)
        yield (last + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def _settings() -> DriftSettings:
    return DriftSettings(train_config=project_root() / "configs" / "direction_daily.yaml", min_decisions=5)


def test_run_drift_prophetic_journal_green_performance_and_stored(database: Database, aapl_end: datetime,
                                                                  tmp_path: Path) -> None:
    clear_journal(database)
    decisions = write_journal(database, aapl_end, prophetic=True, slippage_bps=3.0, fill_fraction=1.0)
    result = run_drift(database, aapl_end, _settings(), report_dir=tmp_path)
    assert result.performance is not None and result.performance.evaluated >= 5
    assert result.performance.evaluated <= decisions
    assert result.performance.accuracy == pytest.approx(1.0)
    assert result.performance.information_coefficient > 0.5
    assert result.verdicts["performance"].status == "green"
    assert result.parity is not None and result.parity.fills == 4
    assert result.parity.live_slippage_bps == pytest.approx(3.0, abs=0.05)
    assert result.verdicts["execution_parity"].status == "green"
    assert result.verdicts["prediction_drift"].status == "skipped"  # empty registry: no champion
    assert result.columns, "Evidently returned no per-feature drift"
    assert result.report_path is not None and result.report_path.stat().st_size > 10_000
    assert "return_5" in result.report_path.read_text(encoding="utf-8")  # a feature the reference holds
    stored = latest_drift(database, STRATEGY)
    assert stored is not None and stored["drift_run_id"] == result.drift_run_id
    assert stored["verdicts"]["performance"]["status"] == "green"


def test_run_drift_wrong_signals_and_slippage_flags_red_and_rerun_replaces(database: Database, aapl_end: datetime,
                                                                        tmp_path: Path) -> None:
    clear_journal(database)
    write_journal(database, aapl_end, prophetic=False, slippage_bps=40.0, fill_fraction=0.5)
    first = run_drift(database, aapl_end, _settings(), report_dir=tmp_path)
    assert first.performance is not None and first.performance.accuracy == pytest.approx(0.0)
    assert first.verdicts["performance"].status == "red"
    assert first.verdicts["execution_parity"].status == "amber"
    assert "fill rate 0.50" in first.verdicts["execution_parity"].detail
    assert first.status == "red"
    again = run_drift(database, aapl_end, _settings(), report_dir=tmp_path)
    assert again.drift_run_id == first.drift_run_id
    with database.transaction() as conn, conn.cursor() as cur:
        cur.execute("select count(*) from drift_runs where strategy = %s and window_end = %s", (STRATEGY, aapl_end))
        row = cur.fetchone()
    assert row is not None and row[0] == 1


def test_current_window_reaches_the_newest_bar_and_reference_holds_only_labelled_rows(
        database: Database, aapl_end: datetime, tmp_path: Path) -> None:
    from pipelines.train import load_config
    from pipelines.training_data import load_feature_rows

    settings = _settings()
    data, config, rows = load_feature_rows(database, load_config(settings.train_config))
    newest = int(aapl_end.timestamp() * 1e9) - 86_400 * 10**9  # aapl_end is the day after the newest bar
    assert int(rows.timestamps_ns[-1]) == newest
    unlabelled = rows.timestamps_ns[~rows.labelled]
    assert unlabelled.size == config.labels.horizon  # the newest bars, whose labels are not known yet
    assert (unlabelled > data.timestamps_ns.max()).all()
    result = run_drift(database, aapl_end, settings, report_dir=tmp_path)
    expected_start = int(rows.timestamps_ns[-settings.current_rows])
    assert int(result.window_start.timestamp() * 1e9) == expected_start
