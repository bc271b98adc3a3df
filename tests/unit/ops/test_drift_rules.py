"""Drift verdicts and statistics without a database; Evidently run on seeded frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.drift import (
    ColumnDrift,
    DriftSettings,
    ParityStats,
    PerformanceStats,
    evidently_drift,
    judge,
    overall,
    performance_stats,
)


def test_performance_stats_perfect_signals_accuracy_one_positive_ic_and_sharpe() -> None:
    rng = np.random.default_rng(3)
    realised = rng.normal(0, 0.01, 200)
    signal = np.sign(realised)
    stats = performance_stats(signal, signal * np.abs(realised), realised, 252.0)
    assert stats.evaluated == 200 and stats.accuracy == pytest.approx(1.0)
    assert stats.information_coefficient > 0.8 and stats.signal_sharpe > 5


def test_performance_stats_flat_signals_and_nan_outcomes_are_excluded() -> None:
    signal = np.array([0.0, 1.0, -1.0, 1.0])
    realised = np.array([0.01, 0.02, np.nan, -0.01])
    stats = performance_stats(signal, signal, realised, 252.0)
    assert stats.evaluated == 3 and stats.accuracy == pytest.approx(0.5)


def test_performance_ic_on_tied_signals_does_not_depend_on_row_order() -> None:
    """Journal signals are mostly -1/0/1: ranks of ties are averaged, so shuffling the rows leaves the IC."""
    rng = np.random.default_rng(5)
    signal = rng.choice([-1.0, 0.0, 1.0], 60)
    realised = rng.normal(0, 0.01, 60)
    values = set()
    for seed in range(4):
        order = np.random.default_rng(seed).permutation(60)
        values.add(round(performance_stats(signal[order], signal[order], realised[order], 252.0)
                         .information_coefficient, 12))
    assert len(values) == 1


def test_judge_drift_share_thresholds_map_to_green_amber_red() -> None:
    settings = DriftSettings(drift_share_amber=0.3, drift_share_red=0.6)

    def columns(drifted: int) -> list[ColumnDrift]:
        return [ColumnDrift(f"f{i}", "K-S p_value", 0.01 if i < drifted else 0.5, 0.05, i < drifted)
                for i in range(10)]

    assert judge(settings, columns(2), None, None, None)["data_drift"].status == "green"
    assert judge(settings, columns(3), None, None, None)["data_drift"].status == "amber"
    assert judge(settings, columns(6), None, None, None)["data_drift"].status == "red"


def test_judge_missing_inputs_are_skipped_and_overall_ignores_skips() -> None:
    verdicts = judge(DriftSettings(), [], None, None, None)
    assert {v.status for v in verdicts.values()} == {"skipped"}
    assert overall(verdicts) == "green"


def test_judge_decayed_performance_and_bad_fills_flag() -> None:
    settings = DriftSettings(min_decisions=10, min_accuracy=0.5, min_information_coefficient=0.0,
                             min_signal_sharpe=0.0, min_fill_rate=0.9, max_slippage_gap_bps=10)
    verdicts = judge(settings, [], None, PerformanceStats(50, 0.3, -0.2, -1.0),
                     ParityStats(orders=4, fills=4, fill_rate=0.5, live_slippage_bps=30.0,
                                 reference_slippage_bps=5.0, reference="backtest"))
    assert verdicts["performance"].status == "red"
    assert verdicts["execution_parity"].status == "amber"
    assert "fill rate 0.50" in verdicts["execution_parity"].detail
    assert overall(verdicts) == "red"


def test_evidently_drift_shifted_feature_and_score_detected_stable_one_not() -> None:
    rng = np.random.default_rng(11)
    reference = pd.DataFrame({"stable": rng.normal(size=400), "shifted": rng.normal(size=400),
                              "score": rng.uniform(-1, 1, 400)})
    # The stable column's current window is drawn from the reference itself: no drift by construction.
    current = pd.DataFrame({"stable": reference["stable"].to_numpy()[::2], "shifted": rng.normal(2.0, 1.0, 200),
                            "score": rng.uniform(0, 1, 200)})
    columns, prediction = evidently_drift(reference, current, ["stable", "shifted"], "score", None)
    by_name = {c.column: c for c in columns}
    assert set(by_name) == {"stable", "shifted"}
    assert by_name["shifted"].drifted and not by_name["stable"].drifted
    assert prediction is not None and prediction.drifted
