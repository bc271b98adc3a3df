"""Black-Litterman: equilibrium returns implied by reference weights, blended with views from model scores.

Views are absolute, one per instrument with a score: Q_i = view_scale * score_i * sigma_i (Grinold's
"alpha = IC x volatility x score" with the IC folded into `view_scale`), and the view's uncertainty
Omega_ii = tau * sigma_i^2 * (1 - c_i) / c_i from the model's confidence c_i in (0, 1) (Idzorek's reading:
c -> 1 trusts the view fully, c -> 0 ignores it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tradeloom.errors import InputError

FloatArray = npt.NDArray[np.float64]
MIN_CONFIDENCE, MAX_CONFIDENCE = 1e-4, 1.0 - 1e-6


@dataclass(frozen=True)
class Views:
    picks: FloatArray  # P, (K, N)
    returns: FloatArray  # Q, (K,)
    uncertainty: FloatArray  # Omega, (K, K) diagonal


def implied_returns(covariance: FloatArray, reference_weights: FloatArray, risk_aversion: float) -> FloatArray:
    """pi = delta * Sigma * w_ref: the returns under which w_ref is the mean-variance optimum."""
    return np.asarray(risk_aversion * covariance @ reference_weights, dtype=np.float64)


def views_from_scores(scores: FloatArray, confidences: FloatArray, covariance: FloatArray, *, tau: float,
                      view_scale: float) -> Views:
    n = covariance.shape[0]
    if scores.shape != (n,) or confidences.shape != (n,):
        raise InputError(f"scores and confidences must have shape ({n},), got {scores.shape} and {confidences.shape}")
    usable = np.flatnonzero(np.isfinite(scores) & np.isfinite(confidences) & (confidences > 0))
    sigma = np.sqrt(np.diag(covariance))
    picks = np.zeros((usable.size, n))
    picks[np.arange(usable.size), usable] = 1.0
    confidence = np.clip(confidences[usable], MIN_CONFIDENCE, MAX_CONFIDENCE)
    returns = view_scale * scores[usable] * sigma[usable]
    uncertainty = np.diag(tau * sigma[usable] ** 2 * (1.0 - confidence) / confidence)
    return Views(picks, np.asarray(returns, dtype=np.float64), uncertainty)


def posterior(covariance: FloatArray, prior_returns: FloatArray, views: Views, *,
              tau: float) -> tuple[FloatArray, FloatArray]:
    """(posterior mean, posterior covariance), in the form that never inverts Sigma:
    mu = pi + tau Sigma P' (P tau Sigma P' + Omega)^-1 (Q - P pi);
    Sigma_bl = Sigma + tau Sigma - tau Sigma P' (P tau Sigma P' + Omega)^-1 P tau Sigma.
    """
    if tau <= 0:
        raise InputError(f"tau must be > 0, got {tau}")
    scaled = tau * covariance
    if views.picks.shape[0] == 0:
        return prior_returns.copy(), np.asarray(covariance + scaled, dtype=np.float64)
    p = views.picks
    middle = p @ scaled @ p.T + views.uncertainty
    gain = np.linalg.solve(middle, p @ scaled).T  # tau Sigma P' middle^-1, (N, K)
    mean = prior_returns + gain @ (views.returns - p @ prior_returns)
    cov = covariance + scaled - gain @ p @ scaled
    return np.asarray(mean, dtype=np.float64), np.asarray((cov + cov.T) / 2.0, dtype=np.float64)
