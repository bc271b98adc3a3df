"""Return and covariance estimates for the optimisers: simple returns, the sample covariance and the
Ledoit-Wolf (2004) shrinkage towards a scaled identity, which stays well-conditioned (invertible) even when
the window has fewer rows than a sample covariance needs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tradeloom.errors import InputError

FloatArray = npt.NDArray[np.float64]


def simple_returns(close: FloatArray) -> FloatArray:
    """(T-1, N) close-to-close returns; NaN where either close is missing."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(close[1:] / close[:-1] - 1.0, dtype=np.float64)


def _checked(returns: FloatArray) -> FloatArray:
    if returns.ndim != 2 or returns.shape[0] < 2 or returns.shape[1] < 1:
        raise InputError(f"returns must be (T >= 2, N >= 1), got shape {returns.shape}")
    if not np.isfinite(returns).all():
        raise InputError("returns hold NaN or infinite values; drop or fill missing rows before estimating")
    return returns


def sample_covariance(returns: FloatArray) -> FloatArray:
    """Maximum-likelihood (divide by T) covariance, the quantity Ledoit-Wolf shrinks."""
    x = _checked(returns)
    centred = x - x.mean(axis=0)
    return np.asarray(centred.T @ centred / x.shape[0], dtype=np.float64)


def ledoit_wolf(returns: FloatArray) -> tuple[FloatArray, float]:
    """(shrunk covariance, shrinkage intensity in [0, 1]) towards mu * I, mu = mean sample variance.

    Ledoit & Wolf (2004), "A well-conditioned estimator for large-dimensional covariance matrices":
    intensity = min(beta, delta) / delta with delta = ||S - mu I||_F^2 and
    beta = (1 / T^2) * sum_t ||x_t x_t' - S||_F^2 (x_t the centred rows).
    """
    x = _checked(returns)
    t, n = x.shape
    centred = x - x.mean(axis=0)
    sample = centred.T @ centred / t
    mu = float(np.trace(sample)) / n
    delta = float(np.sum((sample - mu * np.eye(n)) ** 2))
    if delta <= 0.0:
        return np.asarray(sample, dtype=np.float64), 0.0
    # sum_t ||x_t x_t' - S||^2 = sum_t ||x_t||^4 - T ||S||^2 (cross term: sum_t x_t x_t' = T S).
    squared_norms = np.sum(centred**2, axis=1)
    beta = (float(np.sum(squared_norms**2)) - t * float(np.sum(sample**2))) / t**2
    shrinkage = min(max(beta, 0.0), delta) / delta
    shrunk = (1.0 - shrinkage) * sample + shrinkage * mu * np.eye(n)
    return np.asarray(shrunk, dtype=np.float64), float(shrinkage)


def correlation(covariance: FloatArray) -> FloatArray:
    std = np.sqrt(np.clip(np.diag(covariance), 1e-300, None))
    return np.asarray(covariance / np.outer(std, std), dtype=np.float64)
