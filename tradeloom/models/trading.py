"""Trading metrics of the out-of-sample signals, and the engine configuration they are traded with.

Training reports the engine's walk-forward backtest (`pipelines.train_engine`, through
`pipelines.backtest.run_backtest`); `engine_configs` maps the training config's costs and trading section
onto the engine's `EngineConfig` / `BrokerConfig`. The vectorised helpers below (a position decided at bar
t's close earns the log return from t to t+1, every unit of position change pays `cost_bps`) stay as a
quick cross-check and for the research notebooks; they are not what runs are tagged with.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from tradeloom.engine.config import (
    BrokerConfig,
    CostConfig,
    EngineConfig,
    RiskConfig,
    SignalConfig,
    SizingConfig,
    StopConfig,
    cost_preset,
)
from tradeloom.engine.metrics import Metrics
from tradeloom.errors import ConfigError
from tradeloom.models.config import Costs, Trading

FloatArray = npt.NDArray[np.float64]


class TradingMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)
    sharpe: float
    total_return: float
    max_drawdown: float
    turnover: float
    exposure: float
    trades: int = 0
    costs_paid: float = 0.0

    @classmethod
    def from_engine(cls, metrics: Metrics) -> TradingMetrics:
        """The engine's metrics: turnover is traded notional over average equity per year, exposure the
        fraction of bars holding a position, costs in account currency."""
        return cls(sharpe=metrics.sharpe, total_return=metrics.total_return, max_drawdown=metrics.max_drawdown,
                   turnover=metrics.turnover, exposure=metrics.exposure, trades=metrics.trades,
                   costs_paid=metrics.costs_paid)


def cost_config(costs: Costs) -> CostConfig:
    """The engine cost model for a training config: its preset, else `cost_bps` commission per fill."""
    if costs.preset is not None:
        return cost_preset(costs.preset)
    return CostConfig(name=f"commission_{costs.cost_bps:g}bps", commission_rate=costs.cost_bps / 10_000.0)


def engine_configs(strategy: str, costs: Costs, trading: Trading) -> tuple[EngineConfig, BrokerConfig]:
    """Engine and simulated-broker configs that trade (down, flat, up) probabilities as `trading` says."""
    engine = EngineConfig(
        strategy=strategy,
        signal=SignalConfig(enter_threshold=trading.enter_threshold, exit_threshold=trading.exit_threshold,
                            allow_short=trading.allow_short),
        stops=StopConfig(stop_loss_pct=trading.stop_loss_pct),
        sizing=SizingConfig(method="fixed_notional", notional_fraction=trading.position_fraction),
        risk=RiskConfig(max_position_fraction=1.0, max_gross_exposure=1.0, max_net_exposure=1.0, max_positions=1,
                        daily_loss_limit=None, max_drawdown=None),
    )
    # A gap up between the decision and the next open must shrink the order, not cancel the trade.
    broker = BrokerConfig(costs=cost_config(costs), insufficient_cash="reduce", allow_short=trading.allow_short)
    return engine, broker


def positions_from_probabilities(p: FloatArray, min_confidence: float = 0.0) -> FloatArray:
    """-1 for down, 0 for flat, +1 for up; flat when the winning class is below `min_confidence`."""
    winner = np.argmax(p, axis=1)
    positions: FloatArray = (winner - 1).astype(np.float64)
    positions[p.max(axis=1) < min_confidence] = 0.0
    return positions


def strategy_returns(positions: FloatArray, next_return: FloatArray, cost_bps: float) -> FloatArray:
    """Per-bar log returns after costs; the position is entered from flat at the first bar."""
    if positions.shape != next_return.shape:
        raise ConfigError(f"positions {positions.shape} and next returns {next_return.shape} must match")
    changes = np.abs(np.diff(positions, prepend=0.0))
    return np.asarray(positions * np.nan_to_num(next_return) - changes * cost_bps / 10_000.0, dtype=np.float64)


def max_drawdown(returns: FloatArray) -> float:
    """Largest peak-to-trough fall of the equity curve exp(cumsum(returns)), as a positive fraction."""
    if returns.size == 0:
        return 0.0
    equity = np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    return float(np.max(1.0 - equity / np.maximum.accumulate(equity)))


def trading_metrics(returns: FloatArray, positions: FloatArray, periods_per_year: int) -> TradingMetrics:
    std = float(np.std(returns, ddof=1)) if returns.size > 1 else 0.0
    sharpe = float(np.mean(returns) / std * np.sqrt(periods_per_year)) if std > 0 else 0.0
    return TradingMetrics(
        sharpe=sharpe, total_return=float(np.expm1(np.sum(returns))), max_drawdown=max_drawdown(returns),
        turnover=float(np.abs(np.diff(positions, prepend=0.0)).sum() / max(positions.size, 1)),
        exposure=float(np.mean(np.abs(positions))) if positions.size else 0.0,
    )


def sma_cross_positions(close: FloatArray, fast: int = 10, slow: int = 50) -> FloatArray:
    """Long when the fast SMA is above the slow one, short when below, flat while either is undefined."""
    if fast >= slow:
        raise ConfigError(f"SMA fast window must be shorter than slow, got fast={fast}, slow={slow}")
    cumulative = np.concatenate([[0.0], np.cumsum(close)])

    def sma(window: int) -> FloatArray:
        out = np.full(close.size, np.nan)
        if close.size >= window:
            out[window - 1:] = (cumulative[window:] - cumulative[:-window]) / window
        return out

    fast_line, slow_line = sma(fast), sma(slow)
    positions: FloatArray = np.nan_to_num(np.sign(fast_line - slow_line))
    return positions
