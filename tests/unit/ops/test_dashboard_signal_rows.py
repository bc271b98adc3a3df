"""The dashboard's signal table reads both decision-record shapes: direction models and RL sizing policies."""

from __future__ import annotations

from pipelines.dashboard.journal_views import signal_rows


def _policy(**instruments: dict[str, float | int]) -> dict[str, object]:
    return {"output_kind": "target_weight", "instruments": instruments}


def test_policy_long_target_from_flat_is_a_long_entry_not_flat() -> None:
    row, = signal_rows(_policy(A={"target_weight": 0.25, "position": 0, "desired": 40, "approved": 30}))
    assert (row["signal"], row["target_weight"], row["proposed"], row["entry"], row["exit"]) == (1, 0.25, 40, 30, 0)
    assert row["confidence"] is None and row["probabilities"] is None


def test_policy_flip_closes_the_whole_position_then_opens_the_other_side() -> None:
    row, = signal_rows(_policy(A={"target_weight": -0.1, "position": 50, "desired": -20, "approved": -20}))
    assert (row["signal"], row["entry"], row["exit"], row["proposed"]) == (-1, -20, -50, 70)


def test_policy_trim_and_flat_target_are_exits() -> None:
    trim, flat = signal_rows(_policy(A={"target_weight": 0.05, "position": 50, "desired": 20, "approved": 20},
                                     B={"target_weight": 0.0, "position": -30, "desired": 0, "approved": 0}))
    assert (trim["signal"], trim["entry"], trim["exit"]) == (1, 0, -30)
    assert (flat["signal"], flat["entry"], flat["exit"]) == (0, 0, 30)


def test_direction_record_keeps_its_fields() -> None:
    record = {"instruments": {"B": {"signal": -1, "confidence": 0.7, "proposed": 9, "entry": -9, "exit": 0},
                              "A": {"signal": 0, "confidence": 0.4, "proposed": 0, "entry": 0, "exit": 0}},
              "probabilities": {"A": [0.3, 0.4, 0.3], "B": [0.7, 0.2, 0.1]}}
    a, b = signal_rows(record)
    assert (a["instrument"], b["instrument"]) == ("A", "B")
    assert (b["signal"], b["confidence"], b["entry"], b["probabilities"]) == (-1, 0.7, -9, [0.7, 0.2, 0.1])
    assert b["target_weight"] is None
