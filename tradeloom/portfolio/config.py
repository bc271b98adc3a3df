"""Portfolio construction and rebalancing configuration: frozen, safe defaults, reproducible from the config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tradeloom.domain import ProductType
from tradeloom.engine.config import RiskConfig
from tradeloom.portfolio.constraints import WeightConstraints

Method = Literal["equal_weight", "inverse_volatility", "risk_parity", "min_variance", "mean_variance",
                 "black_litterman"]
METHODS: tuple[Method, ...] = ("equal_weight", "inverse_volatility", "risk_parity", "min_variance",
                               "mean_variance", "black_litterman")


class PortfolioConfig(BaseModel):
    """How target weights are computed at each rebalance."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    method: Method = "equal_weight"
    constraints: WeightConstraints = WeightConstraints()
    lookback: int = Field(default=252, ge=20)  # bars of returns behind the covariance (and mean) estimates
    risk_aversion: float = Field(default=5.0, gt=0.0)  # delta in mu'w - delta/2 w'Sigma w (per-bar units)
    turnover_penalty: float = Field(default=0.0, ge=0.0)  # per unit of |w - w_prev|_1, in per-bar return units
    tau: float = Field(default=0.05, gt=0.0, le=1.0)  # Black-Litterman prior uncertainty
    view_scale: float = Field(default=0.1, gt=0.0)  # Black-Litterman: expected return per unit score, in sigmas
    # Black-Litterman's prior: the allocation whose implied returns are the equilibrium (no market caps here).
    reference: Literal["equal_weight", "risk_parity"] = "equal_weight"


class RebalanceConfig(BaseModel):
    """Turning target weights into orders: the engine's risk rules decide what is allowed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    strategy: str = "portfolio"
    product: ProductType = ProductType.DELIVERY
    risk: RiskConfig = RiskConfig()
    # Trades smaller than this fraction of equity are skipped (costs more than they fix); exits never are.
    min_trade_fraction: float = Field(default=0.002, ge=0.0, lt=1.0)
    # Fraction of equity kept in cash so next-open fills and their costs never bounce on cash.
    cash_buffer: float = Field(default=0.01, ge=0.0, lt=1.0)
    rebalance_every: int = Field(default=21, ge=1)  # bars between rebalances
