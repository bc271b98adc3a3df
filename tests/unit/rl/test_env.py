"""The position-sizing environment: Gymnasium's checker, rewards from equity, the risk layer binding."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from pipelines.rl.env import EnvConfig, PositionSizingEnv
from tests.unit.rl.support import random_walk_data
from tradeloom.engine import RiskConfig
from tradeloom.portfolio.config import RebalanceConfig


@pytest.mark.parametrize("action", ["continuous", "discrete"])
def test_env_check_env_passes(action: str) -> None:
    env = PositionSizingEnv(random_walk_data(), EnvConfig(action=action, allow_short=True))  # type: ignore[arg-type]
    check_env(env, skip_render_check=True)


def test_env_discrete_levels_cover_short_flat_long_buckets() -> None:
    config = EnvConfig(action="discrete", size_buckets=(0.5, 1.0), allow_short=True)
    assert config.action_levels() == (0.0, 0.5, 1.0, -0.5, -1.0)
    assert PositionSizingEnv(random_walk_data(), config).action_space.n == 5  # type: ignore[attr-defined]


def test_env_reward_is_equity_change_after_costs_without_penalty() -> None:
    env = PositionSizingEnv(random_walk_data(), EnvConfig(penalty="none", reward_scale=1.0, episode_bars=None))
    env.reset(seed=0)
    equity = env.equity
    for _ in range(20):
        _, reward, _, _, info = env.step(np.array([1.0], dtype=np.float32))
        assert reward == pytest.approx(info["equity"] / equity - 1.0)
        equity = info["equity"]
    assert info["fees"] > 0  # the entry paid the cost model


def test_env_drawdown_penalty_lowers_reward_only_on_new_drawdown() -> None:
    data = random_walk_data(seed=3, drift=-0.002)
    plain = PositionSizingEnv(data, EnvConfig(penalty="none", episode_bars=None))
    penalised = PositionSizingEnv(data, EnvConfig(penalty="drawdown", penalty_weight=2.0, episode_bars=None))
    plain.reset(seed=0)
    penalised.reset(seed=0)
    differences = []
    for _ in range(60):
        _, a, *_ = plain.step(np.array([1.0], dtype=np.float32))
        _, b, *_ = penalised.step(np.array([1.0], dtype=np.float32))
        differences.append(a - b)
    assert min(differences) >= -1e-12 and max(differences) > 0


def test_env_same_seed_same_episode() -> None:
    def run() -> list[float]:
        env = PositionSizingEnv(random_walk_data(), EnvConfig(episode_bars=50))
        env.reset(seed=7)
        env.action_space.seed(7)
        return [env.step(env.action_space.sample())[1] for _ in range(30)]

    assert run() == run()


def test_env_adversarial_agent_huge_positions_limits_hold() -> None:
    """An agent asking for 5x equity every bar (long and short): the engine's caps still bind."""
    risk = RiskConfig(max_position_fraction=0.3, max_gross_exposure=0.5, daily_loss_limit=None, max_drawdown=0.5,
                      max_positions=None)
    config = EnvConfig(max_weight=5.0, allow_short=True, episode_bars=None,
                       rebalance=RebalanceConfig(risk=risk, cash_buffer=0.0, min_trade_fraction=0.0))
    env = PositionSizingEnv(random_walk_data(bars=200), config)
    env.reset(seed=0)
    done, step, held = False, 0, 0
    while not done:
        action = np.array([1.0 if (step // 10) % 2 == 0 else -1.0], dtype=np.float32)
        _, _, terminated, truncated, info = env.step(action)
        assert abs(info["target_weight"]) == pytest.approx(5.0)
        # The cap binds on what the orders add: a position may drift above it with the price, never be grown.
        grew = abs(info["position"]) > abs(held) or np.sign(info["position"]) != np.sign(held)
        if grew and info["position"] != 0:
            assert abs(info["approved_weight"]) <= 0.3 + 1e-9
        held = info["position"]
        assert abs(info["position"]) * env.data.close[env.t] <= 0.3 * info["equity"] * 1.1
        done, step = terminated or truncated, step + 1
    assert env.rule_events > 0


def test_env_drawdown_halt_terminates_episode() -> None:
    risk = RiskConfig(max_position_fraction=1.0, daily_loss_limit=None, max_drawdown=0.05, max_positions=None)
    config = EnvConfig(episode_bars=None, rebalance=RebalanceConfig(risk=risk))
    env = PositionSizingEnv(random_walk_data(bars=400, seed=5, drift=-0.004), config)
    env.reset(seed=0)
    steps, terminated = 0, False
    while not terminated and steps < 399:
        _, _, terminated, _, _ = env.step(np.array([1.0], dtype=np.float32))
        steps += 1
    assert terminated and env.state.halted_for_drawdown
    assert steps < 398
