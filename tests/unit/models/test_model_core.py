"""Core model logic: config, folds (purge vs horizon), metrics, calibration, trading, gate, compatibility."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.unit.models.planted import planted_data, small_config
from tradeloom.errors import ConfigError
from tradeloom.models.calibration import apply_temperature, fit_temperature
from tradeloom.models.compatibility import (
    ModelCard,
    ModelRefusedError,
    check_compatible,
    check_signature,
    parse_card,
)
from tradeloom.models.config import GateConfig
from tradeloom.models.folds import plan_folds
from tradeloom.models.gate import CandidateSummary, decide
from tradeloom.models.labels import DOWN, FLAT, UNKNOWN, UP, direction_labels
from tradeloom.models.metrics import (
    balanced_accuracy,
    binary_auc,
    information_coefficient,
    log_loss,
    reliability,
)
from tradeloom.models.sequences import sliding_windows
from tradeloom.models.trading import max_drawdown, strategy_returns


def test_parse_config_bad_value_names_field_and_value() -> None:
    with pytest.raises(ConfigError, match=r"walk_forward\.train_size.*got 3"):
        small_config(walk_forward={"train_size": 3, "test_size": 10})


def test_effective_purge_short_configured_purge_raised_to_horizon() -> None:
    config = small_config(labels={"horizon": 7}, walk_forward={"train_size": 400, "test_size": 120, "purge": 2})
    assert config.effective_purge == 7


@pytest.mark.parametrize("horizon", [1, 5, 20])
def test_plan_folds_longer_horizon_purge_gap_grows_and_labels_never_see_test(horizon: int) -> None:
    data = planted_data(rows=900, horizon=1)
    config = small_config(labels={"horizon": horizon, "flat_threshold": 0.004})
    folds = plan_folds(data.timestamps_ns, config)
    assert folds
    for fold in folds:
        gap = int(fold.test[0] - fold.valid[-1]) - 1
        assert gap >= horizon
        # The last training label looks `horizon` rows ahead: it must end before the first test row.
        assert int(fold.valid[-1]) + horizon < int(fold.test[0])
        assert int(fold.fit[-1]) + horizon < int(fold.valid[0])


def test_plan_folds_moving_horizon_grows_purge_gap() -> None:
    data = planted_data(rows=900)

    def smallest_gap(horizon: int) -> int:
        folds = plan_folds(data.timestamps_ns, small_config(labels={"horizon": horizon, "flat_threshold": 0.004}))
        return min(int(fold.test[0] - fold.valid[-1]) - 1 for fold in folds)

    gaps = [smallest_gap(horizon) for horizon in (1, 5, 20)]
    assert gaps == sorted(gaps) and gaps[0] < gaps[1] < gaps[2]
    assert gaps[2] >= 20


def test_plan_folds_tests_tile_the_dated_test_segment() -> None:
    data = planted_data(rows=900)
    folds = plan_folds(data.timestamps_ns, small_config())
    first_test_day = np.datetime64(int(data.timestamps_ns[folds[0].test[0]]), "ns").astype("datetime64[D]")
    assert str(first_test_day) == "2011-07-01"
    tests = np.concatenate([fold.test for fold in folds])
    assert np.all(np.diff(tests) == 1)


def test_direction_labels_thresholds_and_unknown_tail() -> None:
    close = np.array([100.0, 101.0, 100.0, 100.05, 100.0])
    labels, forward = direction_labels(close, horizon=1, flat_threshold=0.002)
    assert labels.tolist() == [UP, DOWN, FLAT, FLAT, UNKNOWN]
    assert np.isnan(forward[-1])


def test_log_loss_matches_mean_negative_log_probability_of_true_class() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 1])
    assert log_loss(y, p) == pytest.approx(-(np.log(0.7) + np.log(0.1)) / 2)


def test_balanced_accuracy_majority_predictor_scores_one_third() -> None:
    y = np.array([2] * 80 + [0] * 10 + [1] * 10)
    p = np.tile([0.1, 0.1, 0.8], (100, 1))
    assert balanced_accuracy(y, p) == pytest.approx(1 / 3)


def test_binary_auc_perfect_reversed_and_tied() -> None:
    positive = np.array([False, False, True, True])
    assert binary_auc(positive, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert binary_auc(positive, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert binary_auc(positive, np.full(4, 0.5)) == 0.5


def test_information_coefficient_monotone_score_is_one() -> None:
    forward = np.array([-0.02, -0.01, 0.0, 0.01, 0.03])
    p = np.column_stack([np.linspace(0.6, 0.1, 5), np.full(5, 0.2), np.linspace(0.2, 0.7, 5)])
    assert information_coefficient(p, forward) == pytest.approx(1.0)


def test_reliability_confident_and_always_right_has_zero_error() -> None:
    y = np.array([0, 1, 2, 2])
    p = np.eye(3)[y] * 0.98 + 0.01 / 1.5
    p /= p.sum(axis=1, keepdims=True)
    result = reliability(y, p)
    assert result.expected_calibration_error == pytest.approx(1 - p.max(axis=1).mean())


def test_fit_temperature_overconfident_probabilities_softened_and_loss_drops() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    # Right 50% of the time but claiming 95% confidence.
    guess = np.where(rng.random(2000) < 0.5, y, rng.integers(0, 3, 2000))
    p = np.full((2000, 3), 0.025)
    p[np.arange(2000), guess] = 0.95
    temperature = fit_temperature(p, y)
    assert temperature > 1.5
    calibrated = apply_temperature(p, temperature)
    assert log_loss(y, calibrated) < log_loss(y, p)
    assert (np.argmax(calibrated, axis=1) == guess).all()


def test_strategy_returns_costs_charged_on_each_position_change() -> None:
    positions = np.array([1.0, 1.0, -1.0, 0.0])
    returns = np.array([0.01, 0.02, -0.01, 0.05])
    out = strategy_returns(positions, returns, cost_bps=10.0)
    assert out.tolist() == pytest.approx([0.01 - 0.001, 0.02, 0.01 - 0.002, 0.0 - 0.001])


def test_max_drawdown_peak_to_trough() -> None:
    returns = np.log(np.array([1.1, 0.5, 1.2]))
    assert max_drawdown(returns) == pytest.approx(0.5)


def test_sliding_windows_rows_end_at_their_index() -> None:
    features = np.arange(20, dtype=np.float64).reshape(10, 2)
    windows = sliding_windows(features, np.array([3, 9]), 3)
    assert windows.shape == (2, 3, 2)
    assert windows[0, -1].tolist() == [6.0, 7.0] and windows[1, 0].tolist() == [14.0, 15.0]
    with pytest.raises(ConfigError, match="history"):
        sliding_windows(features, np.array([1]), 3)


def _summary(version: str, sharpe: float, drawdown: float, loss: float = 1.0, window: str = "w") -> CandidateSummary:
    return CandidateSummary(version=version, oos_window=window, sharpe=sharpe, max_drawdown=drawdown, log_loss=loss)


def test_gate_no_champion_promotable() -> None:
    assert decide(_summary("1", 0.1, 0.2), None, GateConfig()).promotable


def test_gate_better_sharpe_within_drawdown_promotable() -> None:
    gate = GateConfig(min_sharpe_improvement=0.1, max_drawdown_tolerance=0.02)
    decision = decide(_summary("2", 0.6, 0.21), _summary("1", 0.4, 0.2), gate)
    assert decision.promotable and all(check.passed for check in decision.checks)


def test_gate_margin_not_met_or_deeper_drawdown_refused() -> None:
    gate = GateConfig(min_sharpe_improvement=0.1, max_drawdown_tolerance=0.02)
    assert not decide(_summary("2", 0.45, 0.2), _summary("1", 0.4, 0.2), gate).promotable
    refused = decide(_summary("2", 0.9, 0.3), _summary("1", 0.4, 0.2), gate)
    assert not refused.promotable and "max drawdown" in refused.reason


def test_gate_different_oos_windows_refused() -> None:
    decision = decide(_summary("2", 2.0, 0.1, window="a"), _summary("1", 0.1, 0.5, window="b"), GateConfig())
    assert not decision.promotable and "windows differ" in decision.reason


def test_gate_refuses_metrics_measured_under_other_evaluation_settings_naming_them() -> None:
    """A Sharpe annualised over other periods, or after other costs, does not compare: a challenger better
    only by its settings is not promoted; a version recorded without its settings does not compare either."""
    settings = {"periods_per_year": "252", "costs": '{"cost_bps":5.0}', "instrument": "NASDAQ:AAPL"}
    champion = _summary("1", 0.4, 0.2).model_copy(update={"evaluation": settings})
    annualised = _summary("2", 7.9, 0.2).model_copy(
        update={"evaluation": {**settings, "periods_per_year": "94500"}})
    refused = decide(annualised, champion, GateConfig())
    assert not refused.promotable
    assert "periods_per_year: champion 252, challenger 94500" in refused.reason
    assert "costs" not in refused.reason  # only what differs is named
    unrecorded = decide(_summary("3", 7.9, 0.2), champion, GateConfig())
    assert not unrecorded.promotable and "challenger (not recorded)" in unrecorded.reason
    same = decide(_summary("4", 0.6, 0.2).model_copy(update={"evaluation": dict(settings)}), champion, GateConfig())
    assert same.promotable


CARD = ModelCard(name="m", kind="lstm", feature_names=("a", "b"), feature_spec_hash="h1", window=4)


def test_check_compatible_spec_hash_mismatch_refused() -> None:
    with pytest.raises(ModelRefusedError, match=r"feature_spec_hash 'h1' differs.*'h2'"):
        check_compatible(CARD, ("a", "b"), "h2")


def test_check_compatible_feature_order_mismatch_refused() -> None:
    with pytest.raises(ModelRefusedError, match="feature_names differ"):
        check_compatible(CARD, ("b", "a"), "h1")
    check_compatible(CARD, ("a", "b"), "h1")


def test_check_signature_wrong_window_refused() -> None:
    check_signature(CARD, (None, 4, 2))
    with pytest.raises(ModelRefusedError, match="ONNX input shape"):
        check_signature(CARD, (None, 5, 2))


def test_parse_card_sizing_policy_fields_round_trip_and_direction_defaults() -> None:
    policy = ModelCard(name="p", kind="rl_dqn", feature_names=("a", "w"), feature_spec_hash="h1", window=1,
                       output_name="target_weight", output_kind="target_weight", state_feature_names=("w",),
                       action_levels=(0.0, 0.5, 1.0), max_weight=0.8)
    loaded = parse_card(json.loads(policy.model_dump_json()))
    assert loaded == policy and loaded.output_kind == "target_weight" and loaded.action_levels == (0.0, 0.5, 1.0)
    assert CARD.output_kind == "probabilities" and CARD.state_feature_names == () and not CARD.allow_short
    with pytest.raises(ModelRefusedError, match=r"output_kind.*'scores'"):
        parse_card({**json.loads(CARD.model_dump_json()), "output_kind": "scores"})
