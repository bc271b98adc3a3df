"""The sizing policy's served contract: state features, bounds, the serving rebalance config, and the card check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.rl.agents import AgentConfig
from pipelines.rl.env import EnvConfig, PositionSizingEnv
from pipelines.rl.evaluate import run_target_policy
from tests.unit.rl.support import random_walk_data
from tradeloom.domain import ProductType
from tradeloom.engine.config import RiskConfig
from tradeloom.models.compatibility import ModelCard, ModelRefusedError, check_policy_compatible
from tradeloom.portfolio.config import RebalanceConfig
from tradeloom.portfolio.sizing_policy import (
    STATE_FEATURES,
    book_equity,
    bounded_targets,
    serving_rebalance,
    state_features,
)

ONLINE = ("ret_1", "rvol_20", "atr_14")


def _card(**overrides: object) -> ModelCard:
    values: dict[str, object] = {
        "name": "rl", "kind": "rl_ppo", "feature_names": (*ONLINE, *STATE_FEATURES), "feature_spec_hash": "h",
        "window": 1, "output_name": "target_weight", "output_kind": "target_weight",
        "state_feature_names": STATE_FEATURES,
    }
    values.update(overrides)
    return ModelCard.model_validate(values)


def test_state_features_long_book_in_drawdown_weight_and_drawdown() -> None:
    positions = np.array([10, 0, -5], dtype=np.int64)
    close = np.array([100.0, 50.0, 20.0])
    equity = book_equity(positions, close, 9_000.0)
    assert equity == 9_000.0 + 1_000.0 - 100.0
    state = state_features(positions, close, equity, peak=12_000.0)
    np.testing.assert_allclose(state[:, 0], [1_000.0 / 9_900.0, 0.0, -100.0 / 9_900.0])
    np.testing.assert_allclose(state[:, 1], 1.0 - 9_900.0 / 12_000.0)


def test_state_features_no_equity_zero_weights() -> None:
    state = state_features(np.array([3], dtype=np.int64), np.array([10.0]), 0.0, peak=100.0)
    assert state[0, 0] == 0.0 and state[0, 1] == 1.0


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=8),
       st.floats(min_value=0.1, max_value=5.0), st.booleans())
def test_bounded_targets_any_output_within_card_bounds(raw: list[float], max_weight: float, short: bool) -> None:
    out = bounded_targets(np.array(raw), max_weight=max_weight, allow_short=short)
    assert np.isfinite(out).all()
    assert (out <= max_weight).all() and (out >= (-max_weight if short else 0.0)).all()


def test_serving_rebalance_operator_risk_policy_sizing_kept() -> None:
    evaluated = RebalanceConfig(strategy="rl-sizing", min_trade_fraction=0.02, cash_buffer=0.05,
                                risk=RiskConfig(max_position_fraction=1.0))
    risk = RiskConfig(max_position_fraction=0.1)
    served = serving_rebalance(evaluated, strategy="live", product=ProductType.INTRADAY, risk=risk)
    assert (served.strategy, served.product, served.risk) == ("live", ProductType.INTRADAY, risk)
    assert (served.min_trade_fraction, served.cash_buffer) == (0.02, 0.05)
    assert serving_rebalance(None, strategy="s", product=ProductType.DELIVERY, risk=risk).cash_buffer == \
        RebalanceConfig().cash_buffer


def test_check_policy_compatible_online_then_state_accepted() -> None:
    check_policy_compatible(_card(), ONLINE, "h")


@pytest.mark.parametrize(("overrides", "field"), [
    ({"feature_names": ("ret_1", "atr_14", "rvol_20", *STATE_FEATURES)}, "feature_names"),
    ({"feature_names": (*ONLINE, "p_down", "p_flat", "p_up", *STATE_FEATURES)}, "feature_names"),
    ({"feature_names": ONLINE}, "feature_names"),
    ({"state_feature_names": ("rl_drawdown",)}, "state_feature_names"),
    ({"feature_spec_hash": "other"}, "feature_spec_hash"),
    ({"output_kind": "probabilities"}, "output_kind"),
])
def test_check_policy_compatible_mismatch_refused_naming_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ModelRefusedError, match=field):
        check_policy_compatible(_card(**overrides), ONLINE, "h")


def test_env_state_observation_uses_shared_state_features() -> None:
    """The environment's observation tail is `state_features` of its own book (what the executor computes)."""
    data = random_walk_data(bars=60)
    config = AgentConfig(kind="ppo").env_config(EnvConfig(episode_bars=None))
    env = PositionSizingEnv(data, config)
    env.reset(seed=0)
    for _ in range(20):
        env.step_to_target(0.6)
    expected = state_features(env.broker.positions, data.close[env.t:env.t + 1], env.equity, env.peak)[0]
    assert env.broker.positions[0] > 0
    np.testing.assert_array_equal(env.raw_observation()[-2:], expected)
    episode = run_target_policy(data, config, lambda env: 0.6)
    assert episode.intents and len(episode.target_weights) == len(data) - 1
