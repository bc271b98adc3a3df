"""Portfolio optimisers: equal weight, inverse volatility, risk parity, minimum variance and mean-variance
(long-only and long-short, weight, gross and turnover limits).

Solver choice: **cvxpy** (1.9, Clarabel interior point), not PyPortfolioOpt. PyPortfolioOpt is itself a
thin layer over cvxpy whose `EfficientFrontier` owns its own covariance/returns pipeline (pandas frames,
its own shrinkage, its own Black-Litterman class) and whose objectives are added as mutable state; we need
numpy in and numpy out inside the engine, one constraint set shared by every method (`WeightConstraints`),
an L1 turnover limit against the previous allocation and a turnover penalty in the same problem, and no
pandas in the core (the import contract forbids it). Writing the two convex programs in cvxpy directly is
~40 lines, keeps every constraint visible and testable, and drops a dependency that pins pandas and
scikit-learn. Risk parity, inverse volatility and equal weight need no solver (closed form or cyclical
coordinate descent in numpy), so they also run where cvxpy is absent (the live venv): cvxpy is imported
inside the functions that need it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from tradeloom.errors import InputError, TradeloomError
from tradeloom.portfolio.constraints import (
    WeightConstraints,
    capped_normalise,
    is_feasible,
    limit_turnover,
)

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]


class OptimisationError(TradeloomError):
    """The solver found no allocation: keep the previous weights for this rebalance and report it."""


def _square(covariance: FloatArray) -> FloatArray:
    if covariance.ndim != 2 or covariance.shape[0] != covariance.shape[1] or covariance.shape[0] < 1:
        raise InputError(f"covariance must be a square (N, N) matrix, got shape {covariance.shape}")
    if not np.isfinite(covariance).all():
        raise InputError("covariance holds NaN or infinite values")
    return np.asarray((covariance + covariance.T) / 2.0, dtype=np.float64)


def equal_weight(n: int, constraints: WeightConstraints) -> FloatArray:
    return capped_normalise(np.ones(n), constraints)


def inverse_volatility(covariance: FloatArray, constraints: WeightConstraints) -> FloatArray:
    sigma = np.sqrt(np.clip(np.diag(_square(covariance)), 1e-300, None))
    return capped_normalise(1.0 / sigma, constraints)


def risk_parity(covariance: FloatArray, constraints: WeightConstraints, budgets: FloatArray | None = None,
                *, tolerance: float = 1e-12, max_sweeps: int = 10_000) -> FloatArray:
    """Equal (or budgeted) risk contributions w_i (Sigma w)_i, long-only.

    Cyclical coordinate descent on the strictly convex problem min 1/2 y'Sigma y - sum b_i log y_i
    (Griveau-Billion, Richard & Roncalli 2013); w = y / sum(y). Each coordinate update is the positive root
    of Sigma_ii y_i^2 + c_i y_i - b_i = 0 with c_i = (Sigma y)_i - Sigma_ii y_i. Names hitting max_weight are
    then capped (their risk share falls below budget; the rest are re-scaled).
    """
    sigma = _square(covariance)
    n = sigma.shape[0]
    scale = float(np.mean(np.diag(sigma)))
    if scale <= 0:
        raise InputError("covariance has no positive variance; risk parity is undefined")
    sigma = sigma / scale
    b = np.full(n, 1.0 / n) if budgets is None else np.asarray(budgets, dtype=np.float64) / np.sum(budgets)
    if b.shape != (n,) or (b <= 0).any():
        raise InputError(f"risk budgets must be {n} positive numbers, got {b.tolist()}")
    diagonal = np.diag(sigma)
    y = 1.0 / np.sqrt(diagonal)
    for _ in range(max_sweeps):
        previous = y.copy()
        for i in range(n):
            c = float(sigma[i] @ y) - diagonal[i] * y[i]
            y[i] = (-c + np.sqrt(c * c + 4.0 * diagonal[i] * b[i])) / (2.0 * diagonal[i])
        if np.max(np.abs(y - previous) / y) < tolerance:
            break
    else:
        log.warning("risk parity did not converge in %d sweeps; using the last iterate", max_sweeps)
    return capped_normalise(y / y.sum(), constraints)


def risk_contributions(weights: FloatArray, covariance: FloatArray) -> FloatArray:
    """Each name's share of portfolio variance (sums to 1)."""
    marginal = covariance @ weights
    total = float(weights @ marginal)
    return np.asarray(weights * marginal / total, dtype=np.float64)


def mean_variance(expected_returns: FloatArray, covariance: FloatArray, constraints: WeightConstraints, *,
                  risk_aversion: float = 1.0, previous: FloatArray | None = None,
                  turnover_penalty: float = 0.0) -> FloatArray:
    """argmax mu'w - (risk_aversion / 2) w'Sigma w - turnover_penalty * |w - previous|_1 under the constraints.

    With mu = 0 this is the minimum-variance portfolio. The turnover limit applies only when `previous` is
    itself feasible; when the limit makes the problem infeasible, the unconstrained-turnover optimum is
    approached as far as the limit allows instead (still feasible: the set is convex).
    """
    import cvxpy

    cp: Any = cvxpy  # cvxpy's atoms are re-exported dynamically; mypy cannot see them
    sigma = _square(covariance)
    n = sigma.shape[0]
    mu = np.asarray(expected_returns, dtype=np.float64)
    if mu.shape != (n,) or not np.isfinite(mu).all():
        raise InputError(f"expected_returns must be {n} finite numbers, got shape {mu.shape}")
    if risk_aversion <= 0:
        raise InputError(f"risk_aversion must be > 0, got {risk_aversion}")
    constraints.check_size(n)
    # Rescale so the quadratic term is O(1): daily variances of ~1e-4 otherwise sit near solver tolerances.
    scale = float(np.mean(np.diag(sigma))) or 1.0
    prior = previous if previous is not None and previous.shape == (n,) else None
    turnover_applies = prior is not None and constraints.max_turnover is not None and is_feasible(prior, constraints)

    def solve(with_turnover: bool) -> FloatArray | None:
        w = cp.Variable(n)
        objective = mu @ w / scale - 0.5 * risk_aversion * cp.quad_form(w, cp.psd_wrap(sigma / scale))
        if prior is not None and turnover_penalty > 0:
            objective = objective - turnover_penalty / scale * cp.norm1(w - prior)
        rules = [cp.sum(w) == constraints.net_exposure, w <= constraints.max_weight]
        if constraints.long_only:
            rules.append(w >= 0)
        else:
            rules += [w >= -constraints.max_weight, cp.norm1(w) <= constraints.max_gross]
        if with_turnover and prior is not None and constraints.max_turnover is not None:
            rules.append(cp.norm1(w - prior) <= constraints.max_turnover)
        problem = cp.Problem(cp.Maximize(objective), rules)
        try:
            problem.solve(solver=cp.CLARABEL)
        except cp.error.SolverError as error:
            log.warning("mean-variance solve failed: %s", error)
            return None
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or w.value is None:
            return None
        return np.asarray(w.value, dtype=np.float64)

    weights = solve(turnover_applies)
    if weights is None and turnover_applies:
        free = solve(False)
        weights = None if free is None else limit_turnover(free, prior, constraints)
    if weights is None:
        raise OptimisationError(
            f"mean-variance found no allocation for {n} instruments under {constraints.model_dump()}"
        )
    return _tidy(weights, constraints)


def minimum_variance(covariance: FloatArray, constraints: WeightConstraints, *, previous: FloatArray | None = None,
                     turnover_penalty: float = 0.0) -> FloatArray:
    n = covariance.shape[0]
    return mean_variance(np.zeros(n), covariance, constraints, previous=previous, turnover_penalty=turnover_penalty)


def _tidy(weights: FloatArray, constraints: WeightConstraints) -> FloatArray:
    """Snap solver noise (~1e-9) onto the bounds so downstream order sizing sees exact zeros and caps."""
    lower = 0.0 if constraints.long_only else -constraints.max_weight
    out = np.clip(weights, lower, constraints.max_weight)
    out[np.abs(out) < 1e-9] = 0.0
    return np.asarray(out, dtype=np.float64)
