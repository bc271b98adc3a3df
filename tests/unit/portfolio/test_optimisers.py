"""Optimisers against closed-form answers on small problems."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf as sklearn_ledoit_wolf  # type: ignore[import-untyped]

from tradeloom.portfolio.black_litterman import Views, implied_returns, posterior, views_from_scores
from tradeloom.portfolio.constraints import WeightConstraints, violations
from tradeloom.portfolio.covariance import ledoit_wolf, sample_covariance
from tradeloom.portfolio.optimisers import (
    equal_weight,
    inverse_volatility,
    mean_variance,
    minimum_variance,
    risk_contributions,
    risk_parity,
)

LOOSE = WeightConstraints(long_only=False, max_weight=1.0, max_gross=2.0, net_exposure=1.0)


def _covariance(vols: list[float], correlation: float) -> np.ndarray:
    sigma = np.asarray(vols)
    corr = np.full((len(vols), len(vols)), correlation)
    np.fill_diagonal(corr, 1.0)
    return np.asarray(np.outer(sigma, sigma) * corr)


def test_ledoit_wolf_random_returns_matches_scikit_learn() -> None:
    returns = np.random.default_rng(3).normal(0.0, 0.01, size=(40, 6))
    ours, shrinkage = ledoit_wolf(returns)
    theirs, their_shrinkage = sklearn_ledoit_wolf(returns)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-14)
    assert shrinkage == pytest.approx(their_shrinkage)


def test_ledoit_wolf_fewer_rows_than_assets_is_invertible() -> None:
    returns = np.random.default_rng(4).normal(0.0, 0.01, size=(8, 12))
    assert np.linalg.matrix_rank(sample_covariance(returns)) < 12
    shrunk, shrinkage = ledoit_wolf(returns)
    assert 0.0 < shrinkage <= 1.0
    assert np.linalg.eigvalsh(shrunk).min() > 0.0
    assert np.linalg.cond(shrunk) < 1e6


def test_minimum_variance_loose_bounds_matches_inverse_covariance_formula() -> None:
    cov = np.array([[0.040, 0.006, 0.004], [0.006, 0.090, 0.010], [0.004, 0.010, 0.0625]])
    inverse_ones = np.linalg.solve(cov, np.ones(3))
    expected = inverse_ones / inverse_ones.sum()
    np.testing.assert_allclose(minimum_variance(cov, LOOSE), expected, atol=1e-6)


def test_minimum_variance_uncorrelated_long_only_is_inverse_variance() -> None:
    vols = np.array([0.1, 0.2, 0.3, 0.4])
    cov = np.diag(vols**2)
    expected = (1 / vols**2) / (1 / vols**2).sum()
    weights = minimum_variance(cov, WeightConstraints(max_weight=1.0))
    np.testing.assert_allclose(weights, expected, atol=1e-6)


def test_mean_variance_loose_bounds_matches_lagrangian_solution() -> None:
    cov = _covariance([0.01, 0.015, 0.02], 0.3)
    mu = np.array([0.0004, 0.0006, 0.0003])
    gamma = 20.0
    inv_mu, inv_one = np.linalg.solve(cov, mu), np.linalg.solve(cov, np.ones(3))
    # w = (Sigma^-1 mu - lambda Sigma^-1 1) / gamma with lambda fixing sum(w) = 1.
    lam = (inv_mu.sum() - gamma) / inv_one.sum()
    expected = (inv_mu - lam * inv_one) / gamma
    assert np.abs(expected).max() < 1.0
    np.testing.assert_allclose(mean_variance(mu, cov, LOOSE, risk_aversion=gamma), expected, atol=1e-5)


@pytest.mark.parametrize("correlation", [-0.5, 0.0, 0.4, 0.9])
def test_risk_parity_two_assets_weights_inverse_to_volatility(correlation: float) -> None:
    cov = _covariance([0.12, 0.30], correlation)
    weights = risk_parity(cov, WeightConstraints(max_weight=1.0))
    np.testing.assert_allclose(weights, [0.30 / 0.42, 0.12 / 0.42], atol=1e-9)


def test_risk_parity_four_assets_equalises_risk_contributions() -> None:
    cov, _ = ledoit_wolf(np.random.default_rng(5).normal(0, 0.01, size=(300, 4)) * [1, 2, 3, 4])
    weights = risk_parity(cov, WeightConstraints(max_weight=1.0))
    np.testing.assert_allclose(risk_contributions(weights, cov), np.full(4, 0.25), atol=1e-8)


def test_inverse_volatility_and_equal_weight_respect_the_cap() -> None:
    cov = np.diag(np.array([0.01, 0.5, 0.5, 0.5]) ** 2)
    capped = WeightConstraints(max_weight=0.4)
    iv = inverse_volatility(cov, capped)
    assert iv[0] == pytest.approx(0.4)
    np.testing.assert_allclose(iv[1:], 0.2)
    np.testing.assert_allclose(equal_weight(4, capped), 0.25)


def test_black_litterman_no_views_returns_the_prior_and_recovers_reference_weights() -> None:
    cov = _covariance([0.01, 0.012, 0.02, 0.015], 0.4)
    reference = np.array([0.4, 0.3, 0.2, 0.1])
    prior = implied_returns(cov, reference, 3.0)
    empty = Views(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 0)))
    mean, _ = posterior(cov, prior, empty, tau=0.05)
    np.testing.assert_allclose(mean, prior)
    np.testing.assert_allclose(mean_variance(prior, cov, LOOSE, risk_aversion=3.0), reference, atol=1e-5)


def test_black_litterman_confident_view_pulls_posterior_to_the_view() -> None:
    cov = _covariance([0.01, 0.012, 0.02], 0.3)
    prior = implied_returns(cov, np.full(3, 1 / 3), 3.0)
    scores = np.array([1.0, np.nan, np.nan])
    certain = views_from_scores(scores, np.array([1.0, 0.0, 0.0]), cov, tau=0.05, view_scale=0.2)
    vague = views_from_scores(scores, np.array([0.01, 0.0, 0.0]), cov, tau=0.05, view_scale=0.2)
    view = 0.2 * 1.0 * 0.01
    assert certain.picks.shape == (1, 3)
    certain_mean, _ = posterior(cov, prior, certain, tau=0.05)
    vague_mean, _ = posterior(cov, prior, vague, tau=0.05)
    assert certain_mean[0] == pytest.approx(view, rel=1e-4)
    assert abs(vague_mean[0] - prior[0]) < 0.05 * abs(view - prior[0])
    # A bullish view on asset 0 raises its weight.
    base = mean_variance(prior, cov, WeightConstraints(max_weight=1.0), risk_aversion=3.0)
    tilted = mean_variance(certain_mean, cov, WeightConstraints(max_weight=1.0), risk_aversion=3.0)
    assert tilted[0] > base[0] + 0.05


def test_mean_variance_turnover_limit_binds_and_stays_feasible() -> None:
    cov = _covariance([0.01, 0.012, 0.02, 0.015], 0.2)
    mu = np.array([0.002, -0.001, 0.0, 0.0005])
    previous = np.full(4, 0.25)
    limited = WeightConstraints(max_weight=0.6, max_turnover=0.1)
    weights = mean_variance(mu, cov, limited, risk_aversion=2.0, previous=previous)
    assert np.abs(weights - previous).sum() == pytest.approx(0.1, abs=1e-6)
    assert violations(weights, limited, previous) == []


def test_mean_variance_long_short_dollar_neutral_respects_gross() -> None:
    cov = _covariance([0.01, 0.012, 0.02, 0.015], 0.5)
    mu = np.array([0.004, -0.003, 0.002, -0.001])
    neutral = WeightConstraints(long_only=False, max_weight=0.3, net_exposure=0.0, max_gross=1.0)
    weights = mean_variance(mu, cov, neutral, risk_aversion=1.0)
    assert violations(weights, neutral) == []
    assert weights[0] > 0 > weights[1]
