"""Weight constraints every optimiser honours, and the check that proves a weight vector does."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradeloom.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
TOLERANCE = 1e-6


class WeightConstraints(BaseModel):
    """Weights are fractions of equity, one per instrument.

    Long-only: 0 <= w_i <= max_weight and sum(w) == net_exposure (the invested fraction).
    Long-short: -max_weight <= w_i <= max_weight, sum(w) == net_exposure, sum(|w|) <= max_gross.
    `max_turnover` bounds sum(|w - w_previous|) per rebalance once a previous allocation exists.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    long_only: bool = True
    max_weight: float = Field(default=0.5, gt=0.0, le=1.0)
    net_exposure: float = Field(default=1.0, ge=-1.0, le=1.0)
    max_gross: float = Field(default=1.0, gt=0.0, le=2.0)
    max_turnover: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _consistent(self) -> WeightConstraints:
        if self.long_only and self.net_exposure < 0:
            raise ValueError(f"net_exposure {self.net_exposure} must be >= 0 for a long-only portfolio")
        if abs(self.net_exposure) > self.max_gross:
            raise ValueError(f"|net_exposure| {self.net_exposure} cannot exceed max_gross {self.max_gross}")
        return self

    def check_size(self, n: int) -> None:
        """A universe of n instruments must be able to hold the net exposure under the per-name cap."""
        if self.max_weight * n < abs(self.net_exposure) - TOLERANCE:
            raise ConfigError(
                f"max_weight {self.max_weight} x {n} instruments cannot reach net_exposure {self.net_exposure}; "
                f"expected max_weight >= {abs(self.net_exposure) / n:.4f}"
            )


def violations(weights: FloatArray, constraints: WeightConstraints, previous: FloatArray | None = None,
               tolerance: float = TOLERANCE) -> list[str]:
    """Every constraint the weights break, as readable messages (empty: all satisfied)."""
    found: list[str] = []
    if not np.isfinite(weights).all():
        return [f"weights must be finite, got {weights.tolist()}"]
    lower = 0.0 if constraints.long_only else -constraints.max_weight
    if weights.min() < lower - tolerance:
        found.append(f"weight {weights.min():.6f} below the lower bound {lower}")
    if weights.max() > constraints.max_weight + tolerance:
        found.append(f"weight {weights.max():.6f} above max_weight {constraints.max_weight}")
    if abs(weights.sum() - constraints.net_exposure) > tolerance:
        found.append(f"sum of weights {weights.sum():.6f} differs from net_exposure {constraints.net_exposure}")
    if np.abs(weights).sum() > constraints.max_gross + tolerance:
        found.append(f"gross {np.abs(weights).sum():.6f} above max_gross {constraints.max_gross}")
    if previous is not None and constraints.max_turnover is not None:
        turnover = float(np.abs(weights - previous).sum())
        if turnover > constraints.max_turnover + tolerance:
            found.append(f"turnover {turnover:.6f} above max_turnover {constraints.max_turnover}")
    return found


def is_feasible(weights: FloatArray, constraints: WeightConstraints) -> bool:
    """Feasible ignoring turnover (which depends on the previous allocation)."""
    return not violations(weights, constraints)


def capped_normalise(raw: FloatArray, constraints: WeightConstraints) -> FloatArray:
    """Scale non-negative scores to sum to net_exposure with no weight above max_weight (water-filling:
    capped names are fixed at the cap and the rest re-scaled, until nothing exceeds it)."""
    n = raw.shape[0]
    constraints.check_size(n)
    target = abs(constraints.net_exposure)
    scores = np.clip(np.nan_to_num(raw, nan=0.0), 0.0, None)
    if scores.sum() <= 0:
        scores = np.ones(n)
    weights = np.zeros(n)
    free = np.ones(n, dtype=bool)
    for _ in range(n + 1):
        remaining = target - weights[~free].sum()
        free_scores = np.where(free, scores, 0.0)
        if free_scores.sum() <= 0:
            # Only zero-score names are left: they share what the capped names could not take.
            free_scores = free.astype(np.float64)
        weights = np.where(free, remaining * free_scores / free_scores.sum(), weights)
        over = free & (weights > constraints.max_weight)
        if not over.any():
            break
        weights[over] = constraints.max_weight
        free &= ~over
    return np.asarray(np.sign(constraints.net_exposure or 1.0) * weights, dtype=np.float64)


def limit_turnover(target: FloatArray, previous: FloatArray | None, constraints: WeightConstraints) -> FloatArray:
    """Move from `previous` towards `target` only as far as max_turnover allows. Both ends feasible means
    the blend is too (the constraint set is convex); an infeasible start (e.g. the first, all-cash
    allocation) is exempt, since no path of bounded turnover may reach the feasible set from it."""
    if previous is None or constraints.max_turnover is None or not is_feasible(previous, constraints):
        return target
    distance = float(np.abs(target - previous).sum())
    if distance <= constraints.max_turnover:
        return target
    step = constraints.max_turnover / distance
    return np.asarray(previous + step * (target - previous), dtype=np.float64)
