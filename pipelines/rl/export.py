"""The trained policy as an ONNX graph the executor serves through the same port as the direction models
(`tradeloom.adapters.registry.load_onnx` + `tradeloom.adapters.onnx_model.OnnxScorer`).

The graph maps `features` (batch, k) raw observations -> `target_weight` (batch, 1): the feature
standardisation of the training window is inside the graph, PPO's deterministic action is its mean clipped
to [-1, 1] (then clipped at 0 when shorting is off) x max_weight, DQN's is the level of its arg-max
Q-value. Its `ModelCard` says so with `output_kind="target_weight"` (see `policy_card`).

How the executor maps the output (the card's `output_kind` tells it which path to take):
- `probabilities` (direction models): as today, `engine.step` turns (down, flat, up) into entries.
- `target_weight`: the last two observation columns are portfolio state the executor computes itself
  (`rl_position_weight` = position x close / equity, `rl_drawdown` = 1 - equity / peak; listed in
  `state_feature_names`), appended after the online features in `feature_names` order; the output is
  the target position as a fraction of equity, handed to `tradeloom.portfolio.portfolio_step` as a
  one-instrument target weight, whose risk rules cap it and whose intents go to the broker. The card's
  `rebalance` is the environment's (cash buffer, minimum trade): the executor keeps those and puts its own
  strategy name and risk limits in (`tradeloom.portfolio.sizing_policy.serving_rebalance`); both sides
  compute the state with `tradeloom.portfolio.sizing_policy.state_features` (`executor.policy`). The
  executor must not feed this output to `OnnxScorer.predict_proba` (temperature scaling of a
  probability vector): it reads `raw_probabilities`, which returns the named output unchanged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from tradeloom.models.compatibility import ModelCard
from tradeloom.portfolio.config import RebalanceConfig

FloatArray = npt.NDArray[np.float64]
OUTPUT_NAME = "target_weight"
ONNX_OPSET = 17


def policy_card(*, name: str, agent: Literal["ppo", "dqn"], feature_names: tuple[str, ...], spec_hash: str,
                state_feature_names: tuple[str, ...], action_levels: tuple[float, ...], max_weight: float,
                allow_short: bool, rebalance: RebalanceConfig | None = None) -> ModelCard:
    """The card of a sizing policy: one observation row in, a target weight out; the last inputs are state."""
    return ModelCard(name=name, kind=f"rl_{agent}", feature_names=feature_names, feature_spec_hash=spec_hash,
                     window=1, output_name=OUTPUT_NAME, output_kind="target_weight",
                     state_feature_names=state_feature_names, action_levels=action_levels, max_weight=max_weight,
                     allow_short=allow_short, rebalance=rebalance)


class PolicyTargetWeight(torch.nn.Module):
    """Raw observation -> deterministic target weight (batch, 1); module-level so MLflow can pickle it."""

    def __init__(self, policy: torch.nn.Module, kind: str, mean: FloatArray, std: FloatArray, levels: FloatArray,
                 max_weight: float, allow_short: bool, n_state: int) -> None:
        super().__init__()
        self.policy = policy
        self.kind = kind
        self.max_weight = float(max_weight)
        self.allow_short = allow_short
        # State (and probability) columns pass through unscaled, exactly as the environment builds them.
        self.register_buffer("mean", torch.tensor(np.concatenate([mean, np.zeros(n_state)]), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(np.concatenate([std, np.ones(n_state)]), dtype=torch.float32))
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = torch.clamp((features - self.get_buffer("mean")) / self.get_buffer("std"), -10.0, 10.0)
        policy: Any = self.policy
        if self.kind == "dqn":
            q = policy.q_net(z)
            return self.get_buffer("levels")[torch.argmax(q, dim=1)].unsqueeze(1)
        latent_pi, _ = policy.mlp_extractor(policy.extract_features(z, policy.pi_features_extractor))
        action = torch.clamp(policy.action_net(latent_pi), -1.0, 1.0)
        if not self.allow_short:
            action = torch.clamp(action, min=0.0)
        return action * self.max_weight


def to_onnx(module: torch.nn.Module, n_inputs: int) -> bytes:
    module.eval()
    example = torch.zeros(2, n_inputs, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "policy.onnx"
        # The TorchScript exporter: the dynamo one needs onnxscript, which the venvs do not carry.
        torch.onnx.export(module, (example,), str(path), input_names=["features"], output_names=[OUTPUT_NAME],
                          dynamic_axes={"features": {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)
        return path.read_bytes()
