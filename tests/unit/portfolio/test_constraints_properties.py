"""Property tests: whatever the returns, every method's weights satisfy the constraints."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeloom.portfolio.config import METHODS, PortfolioConfig
from tradeloom.portfolio.constraints import WeightConstraints, violations
from tradeloom.portfolio.construct import target_weights


@st.composite
def problems(draw: st.DrawFn) -> tuple[PortfolioConfig, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 6))
    rows = draw(st.integers(25, 80))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    vols = rng.uniform(0.005, 0.04, size=n)
    common = rng.normal(0, 0.01, size=(rows, 1)) * draw(st.floats(0.0, 2.0))
    returns = rng.normal(draw(st.floats(-0.002, 0.002)), 1.0, size=(rows, n)) * vols + common
    long_only = draw(st.booleans())
    max_weight = draw(st.floats(1.0 / n + 0.01, 1.0))
    if long_only:
        net = draw(st.floats(0.2, 1.0))
        net = min(net, max_weight * n)
        gross = 1.0
    else:
        net = draw(st.floats(-0.5, 0.5))
        gross = draw(st.floats(max(abs(net), 0.3), 2.0))
    turnover = draw(st.none() | st.floats(0.05, 1.0))
    constraints = WeightConstraints(long_only=long_only, max_weight=max_weight, net_exposure=net, max_gross=gross,
                                    max_turnover=turnover)
    method = draw(st.sampled_from(METHODS))
    if not long_only and method in ("equal_weight", "inverse_volatility", "risk_parity"):
        # Heuristic allocators are long-only by construction; long-short goes through the solvers.
        method = "mean_variance"
    config = PortfolioConfig(method=method, constraints=constraints, lookback=rows,
                             turnover_penalty=draw(st.sampled_from([0.0, 0.0005])))
    # A feasible previous allocation: equal weight under the same caps (long-only) or the solver's own.
    previous = target_weights(config.model_copy(update={"method": "equal_weight" if long_only else "min_variance",
                                                        "constraints": constraints.model_copy(
                                                            update={"max_turnover": None})}), returns)
    scores = rng.uniform(-1, 1, size=n)
    confidences = rng.uniform(0.0, 1.0, size=n)
    return config, returns, previous, scores, confidences


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_target_weights_any_problem_satisfy_constraints(
    problem: tuple[PortfolioConfig, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    config, returns, previous, scores, confidences = problem
    assert violations(previous, config.constraints) == []
    weights = target_weights(config, returns, previous=previous, scores=scores, confidences=confidences)
    assert violations(weights, config.constraints, previous) == [], config.method


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(METHODS))
def test_target_weights_same_inputs_twice_identical(seed: int, method: str) -> None:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0005, 0.01, size=(60, 4))
    config = PortfolioConfig.model_validate({"method": method, "lookback": 60,
                                             "constraints": {"max_weight": 0.4, "max_turnover": 0.3}})
    previous = np.full(4, 0.25)
    scores, confidences = rng.uniform(-1, 1, 4), rng.uniform(0, 1, 4)
    first = target_weights(config, returns, previous=previous, scores=scores, confidences=confidences)
    second = target_weights(config, returns.copy(), previous=previous.copy(), scores=scores.copy(),
                            confidences=confidences.copy())
    np.testing.assert_array_equal(first, second)
