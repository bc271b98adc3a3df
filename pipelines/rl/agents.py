"""PPO and DQN agents (stable-baselines3 on PyTorch, CPU), seeded so a run is reproducible bit for bit.

Reproducibility: SB3's `seed` seeds Python, numpy, torch and the action space, and the environment is
reset with the same seed; torch runs on one thread (the result of a multi-threaded CPU reduction may
depend on scheduling, and the machine's two cores are shared anyway).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from pipelines.rl.env import EnvConfig, EnvData, PositionSizingEnv

log = logging.getLogger(__name__)
AgentKind = Literal["ppo", "dqn"]


class AgentConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: AgentKind = "ppo"
    timesteps: int = Field(default=10_000, ge=1)
    seed: int = 0
    hidden: tuple[int, ...] = (32, 32)
    learning_rate: float = Field(default=3e-4, gt=0.0)
    gamma: float = Field(default=0.95, gt=0.0, le=1.0)
    # PPO
    n_steps: int = Field(default=512, ge=8)
    batch_size: int = Field(default=64, ge=2)
    n_epochs: int = Field(default=5, ge=1)
    ent_coef: float = Field(default=0.0, ge=0.0)
    # DQN
    buffer_size: int = Field(default=20_000, ge=100)
    learning_starts: int = Field(default=500, ge=0)
    train_freq: int = Field(default=4, ge=1)
    target_update_interval: int = Field(default=500, ge=1)
    exploration_fraction: float = Field(default=0.3, gt=0.0, le=1.0)

    def env_config(self, base: EnvConfig) -> EnvConfig:
        """PPO acts continuously, DQN over the discrete size buckets."""
        return base.model_copy(update={"action": "continuous" if self.kind == "ppo" else "discrete"})


def make_agent(config: AgentConfig, env: PositionSizingEnv) -> Any:
    import torch
    from stable_baselines3 import DQN, PPO

    torch.set_num_threads(1)
    policy_kwargs = {"net_arch": list(config.hidden)}
    if config.kind == "ppo":
        return PPO("MlpPolicy", env, learning_rate=config.learning_rate, n_steps=config.n_steps,
                   batch_size=config.batch_size, n_epochs=config.n_epochs, gamma=config.gamma,
                   ent_coef=config.ent_coef, seed=config.seed, device="cpu", verbose=0,
                   policy_kwargs={"net_arch": {"pi": list(config.hidden), "vf": list(config.hidden)}})
    return DQN("MlpPolicy", env, learning_rate=config.learning_rate, buffer_size=config.buffer_size,
               learning_starts=config.learning_starts, batch_size=config.batch_size, gamma=config.gamma,
               train_freq=config.train_freq, target_update_interval=config.target_update_interval,
               exploration_fraction=config.exploration_fraction, seed=config.seed, device="cpu", verbose=0,
               policy_kwargs=policy_kwargs)


def train_agent(config: AgentConfig, data: EnvData, env_config: EnvConfig | None = None) -> Any:
    """Train on `data` (a walk-forward fold's training rows) with random episode windows."""
    env = PositionSizingEnv(data, config.env_config(env_config or EnvConfig()))
    env.reset(seed=config.seed)
    agent = make_agent(config, env)
    agent.learn(total_timesteps=config.timesteps, progress_bar=False)
    return agent


def policy_parameters(agent: Any) -> dict[str, npt.NDArray[np.float32]]:
    """The policy network's weights as numpy (what reproducibility tests compare)."""
    return {name: value.detach().cpu().numpy().copy() for name, value in agent.policy.state_dict().items()}


def deterministic_action(agent: Any, observation: npt.NDArray[np.float32]) -> Any:
    action, _ = agent.predict(observation, deterministic=True)
    return action
