"""Short seeded training runs are reproducible; the ONNX policy acts like the trained one."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from pipelines.rl.agents import AgentConfig, deterministic_action, policy_parameters, train_agent
from pipelines.rl.env import EnvConfig, PositionSizingEnv
from pipelines.rl.export import OUTPUT_NAME, PolicyTargetWeight, to_onnx
from tests.unit.rl.support import random_walk_data

TINY = {"ppo": {"timesteps": 128, "n_steps": 64, "batch_size": 32, "n_epochs": 2},
        "dqn": {"timesteps": 200, "learning_starts": 50, "buffer_size": 1_000, "target_update_interval": 50}}
ENV = EnvConfig(episode_bars=60)


@pytest.mark.parametrize("kind", ["ppo", "dqn"])
def test_train_agent_same_seed_identical_policy(kind: str) -> None:
    config = AgentConfig.model_validate({"kind": kind, "seed": 3, **TINY[kind]})
    data = random_walk_data(bars=200)
    first = policy_parameters(train_agent(config, data, ENV))
    second = policy_parameters(train_agent(config, data, ENV))
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    other = policy_parameters(train_agent(config.model_copy(update={"seed": 4}), data, ENV))
    assert any(not np.array_equal(first[name], other[name]) for name in first)


@pytest.mark.parametrize("kind", ["ppo", "dqn"])
def test_policy_onnx_matches_environment_actions(kind: str) -> None:
    config = AgentConfig.model_validate({"kind": kind, "seed": 1, **TINY[kind]})
    data = random_walk_data(bars=200)
    agent = train_agent(config, data, ENV)
    env_config = config.env_config(ENV)
    env = PositionSizingEnv(data, env_config.model_copy(update={"episode_bars": None}))
    mean, std = data.normalisation()
    module = PolicyTargetWeight(agent.policy, kind, mean, std, np.asarray(env_config.action_levels()),
                                env_config.max_weight, env_config.allow_short, 2)
    session = onnxruntime.InferenceSession(to_onnx(module, len(data.observation_names())),
                                           providers=["CPUExecutionProvider"])
    observation, _ = env.reset(seed=0)
    raw_rows, expected = [], []
    for step in range(40):
        raw_rows.append(np.concatenate([data.features[env.t],
                                        [env.position_weight(), 1.0 - env.equity / env.peak]]).astype(np.float32))
        action = deterministic_action(agent, observation)
        expected.append(env.target_weight(action))
        observation, *_ = env.step(action if step % 3 else np.array([0.7], dtype=np.float32)
                                   if kind == "ppo" else 1)
    (onnx_out,) = session.run([OUTPUT_NAME], {"features": np.stack(raw_rows)})
    np.testing.assert_allclose(onnx_out[:, 0], expected, atol=1e-5)
    with torch.no_grad():
        torch_out = module(torch.from_numpy(np.stack(raw_rows))).numpy()
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-6)


def test_policy_card_is_core_model_card_with_target_weight_output() -> None:
    from pipelines.rl.export import policy_card
    from tradeloom.models.compatibility import ModelCard, parse_card

    card = policy_card(name="rl", agent="dqn", feature_names=("f", "w", "d"), spec_hash="h",
                       state_feature_names=("w", "d"), action_levels=(0.0, 1.0), max_weight=0.5, allow_short=False)
    assert type(card) is ModelCard
    assert (card.kind, card.output_name, card.output_kind, card.window) == ("rl_dqn", OUTPUT_NAME, "target_weight", 1)
    assert parse_card(card.model_dump(mode="json")) == card
