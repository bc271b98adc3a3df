"""Portfolio construction: covariance shrinkage, optimisers (equal weight, inverse volatility, risk parity,
minimum variance, mean-variance, Black-Litterman) and the portfolio step that turns target weights into
orders under the engine's risk rules. Numpy + pydantic; cvxpy is imported only inside the solvers."""

from tradeloom.portfolio.config import METHODS, PortfolioConfig, RebalanceConfig
from tradeloom.portfolio.constraints import WeightConstraints, violations
from tradeloom.portfolio.construct import target_weights
from tradeloom.portfolio.rebalance import RebalanceInputs, RebalanceResult, portfolio_step

__all__ = ["METHODS", "PortfolioConfig", "RebalanceConfig", "RebalanceInputs", "RebalanceResult",
           "WeightConstraints", "portfolio_step", "target_weights", "violations"]
