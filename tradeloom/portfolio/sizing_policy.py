"""What a sizing policy (an RL agent's target-weight output) sees of the book, and how its target is traded.

One definition shared by the training environment (`pipelines.rl.env`) and the executor, so the state a
policy was evaluated on is the state it is served with: the position as a fraction of equity and the
drawdown from the equity peak, both marked at the bar's close, appended after the market features.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tradeloom.domain import ProductType
from tradeloom.engine.config import RiskConfig
from tradeloom.portfolio.config import RebalanceConfig

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
STATE_FEATURES: tuple[str, ...] = ("rl_position_weight", "rl_drawdown")


def book_equity(positions: IntArray, close: FloatArray, cash: float) -> float:
    """Cash plus held positions marked at `close` (what `SimulatedBroker.equity` and the portfolio step use)."""
    held = positions != 0
    return float(cash + (positions[held] * close[held]).sum())


def state_features(positions: IntArray, close: FloatArray, equity: float, peak: float) -> FloatArray:
    """(N, 2): `rl_position_weight` = position x close / equity per instrument, `rl_drawdown` = 1 - equity / peak
    (the same for every instrument: it is the book's)."""
    weight = positions.astype(np.float64) * close / equity if equity > 0 else np.zeros(positions.shape[0])
    drawdown = 1.0 - equity / peak if peak > 0 else 0.0
    return np.column_stack([np.nan_to_num(weight), np.full(positions.shape[0], drawdown)])


def serving_rebalance(evaluated: RebalanceConfig | None, *, strategy: str, product: ProductType,
                      risk: RiskConfig) -> RebalanceConfig:
    """The rebalance config a served policy trades with: the operator's strategy name, product and risk
    limits (the risk layer is the executor's, never the model's), and the policy's own sizing parameters
    (cash buffer, minimum trade) as evaluated, since they change what a target weight turns into."""
    base = evaluated or RebalanceConfig()
    return base.model_copy(update={"strategy": strategy, "product": product, "risk": risk, "rebalance_every": 1})


def bounded_targets(raw: FloatArray, *, max_weight: float, allow_short: bool) -> FloatArray:
    """A policy's target weights within what its card promises ([0 or -max_weight, max_weight], NaN -> flat),
    so a faulty graph can never ask for more than the policy was evaluated with; the risk rules cap further."""
    low = -max_weight if allow_short else 0.0
    return np.clip(np.nan_to_num(np.asarray(raw, dtype=np.float64), nan=0.0), low, max_weight)
