"""Target weights at one rebalance: estimates from the trailing window, then the configured optimiser.

Deterministic: the same window, scores and previous weights always give the same weights.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from tradeloom.portfolio.black_litterman import implied_returns, posterior, views_from_scores
from tradeloom.portfolio.config import PortfolioConfig
from tradeloom.portfolio.constraints import WeightConstraints, limit_turnover
from tradeloom.portfolio.covariance import ledoit_wolf
from tradeloom.portfolio.optimisers import (
    OptimisationError,
    equal_weight,
    inverse_volatility,
    mean_variance,
    minimum_variance,
    risk_parity,
)

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]


def _weights_on(config: PortfolioConfig, constraints: WeightConstraints, returns: FloatArray,
                previous: FloatArray | None, scores: FloatArray | None, confidences: FloatArray | None) -> FloatArray:
    n = returns.shape[1]
    method = config.method
    if method == "equal_weight":
        return limit_turnover(equal_weight(n, constraints), previous, constraints)
    covariance, _ = ledoit_wolf(returns)
    if method == "inverse_volatility":
        return limit_turnover(inverse_volatility(covariance, constraints), previous, constraints)
    if method == "risk_parity":
        return limit_turnover(risk_parity(covariance, constraints), previous, constraints)
    if method == "min_variance":
        return minimum_variance(covariance, constraints, previous=previous, turnover_penalty=config.turnover_penalty)
    if method == "mean_variance":
        return mean_variance(returns.mean(axis=0), covariance, constraints, risk_aversion=config.risk_aversion,
                             previous=previous, turnover_penalty=config.turnover_penalty)
    # Black-Litterman: equilibrium from the reference allocation, tilted by the model's views.
    reference_constraints = WeightConstraints(max_weight=1.0, net_exposure=1.0)
    reference = (equal_weight(n, reference_constraints) if config.reference == "equal_weight"
                 else risk_parity(covariance, reference_constraints))
    prior = implied_returns(covariance, reference, config.risk_aversion)
    mean, cov = prior, covariance * (1.0 + config.tau)
    if scores is not None and confidences is not None:
        views = views_from_scores(scores, confidences, covariance, tau=config.tau, view_scale=config.view_scale)
        mean, cov = posterior(covariance, prior, views, tau=config.tau)
    return mean_variance(mean, cov, constraints, risk_aversion=config.risk_aversion, previous=previous,
                         turnover_penalty=config.turnover_penalty)


def target_weights(config: PortfolioConfig, returns: FloatArray, *, previous: FloatArray | None = None,
                   scores: FloatArray | None = None, confidences: FloatArray | None = None) -> FloatArray:
    """(N,) weights from a (T, N) window of returns. Instruments without a full window get 0 (and the net
    exposure shrinks if the rest cannot hold it under max_weight); a failed solve keeps `previous`."""
    n = returns.shape[1]
    window = returns[-config.lookback:]
    usable = np.flatnonzero(np.isfinite(window).all(axis=0))
    out = np.zeros(n)
    if usable.size == 0 or window.shape[0] < 2:
        return out if previous is None else previous.copy()
    constraints = config.constraints
    reachable = constraints.max_weight * usable.size
    if reachable < abs(constraints.net_exposure):
        constraints = constraints.model_copy(update={"net_exposure": float(np.sign(constraints.net_exposure))
                                                     * reachable})
    sub_previous = previous[usable] if previous is not None else None
    if sub_previous is not None and previous is not None and np.abs(np.delete(previous, usable)).sum() > 0:
        sub_previous = None  # a name dropped out of the universe: the old allocation is not comparable
    try:
        out[usable] = _weights_on(config, constraints, window[:, usable], sub_previous,
                                  None if scores is None else scores[usable],
                                  None if confidences is None else confidences[usable])
    except OptimisationError as error:
        log.warning("%s: %s; keeping the previous weights", config.method, error)
        return out if previous is None else previous.copy()
    return out
