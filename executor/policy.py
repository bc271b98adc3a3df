"""A registered RL sizing policy served as the champion: features + book state -> target weight per instrument.

The card's `output_kind == "target_weight"` selects this path (see `pipelines.rl.export`): the observation is
the online features in the card's order followed by the state features the executor computes from its own
book (`tradeloom.portfolio.sizing_policy.state_features`); the graph's output is read unchanged
(`raw_probabilities`: no temperature scaling) and traded through `tradeloom.portfolio.portfolio_step`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tradeloom.errors import InvariantViolation
from tradeloom.models.compatibility import ModelCard
from tradeloom.portfolio.config import RebalanceConfig
from tradeloom.portfolio.sizing_policy import bounded_targets

FloatArray = npt.NDArray[np.float64]
FLAT = np.array([0.0, 1.0, 0.0])


class PolicyChampion:
    """Stateless (window 1): warm-up and restart catch-up have nothing to remember, so `score` only keeps the
    direction-model interface the service's warm-up calls."""

    def __init__(self, scorer: object, card: ModelCard, name: str, version: str, rebalance: RebalanceConfig) -> None:
        self._scorer = scorer
        self.card, self.name, self.version, self.rebalance = card, name, version, rebalance

    def score(self, features: FloatArray, close: FloatArray) -> FloatArray:
        del features
        return np.tile(FLAT, (close.shape[0], 1))

    def target_weights(self, features: FloatArray, state: FloatArray) -> FloatArray:
        """(N, k) online features and (N, 2) state -> (N,) target weights as fractions of equity."""
        observation = np.concatenate([features, state], axis=1)
        raw = np.asarray(self._scorer.raw_probabilities(observation), dtype=np.float64)  # type: ignore[attr-defined]
        if raw.shape != (features.shape[0], 1):
            raise InvariantViolation(f"policy {self.name} v{self.version}: output shape {raw.shape}, expected "
                                     f"({features.shape[0]}, 1) target weights")
        return bounded_targets(raw[:, 0], max_weight=self.card.max_weight, allow_short=self.card.allow_short)
