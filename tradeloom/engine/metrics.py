"""Performance metrics from an equity curve and a list of round-trip trades."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from tradeloom.records import fast_init

FloatArray = npt.NDArray[np.float64]


@fast_init
@dataclass(frozen=True)
class Trade:
    """One round trip: from flat to flat on one instrument."""

    instrument_key: str
    side: int
    quantity: int
    entry_at_ns: int
    exit_at_ns: int
    entry_price: float  # volume-weighted
    exit_price: float
    pnl: float  # after costs
    fees: float
    return_pct: float  # pnl over entry notional


@dataclass(frozen=True)
class Metrics:
    total_return: float
    annual_return: float
    annual_volatility: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_bars: int
    trades: int
    win_rate: float
    profit_factor: float
    average_win: float
    average_loss: float
    exposure: float  # fraction of bars with any position
    turnover: float  # traded notional / average equity, per year
    costs_paid: float

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


def drawdown(equity: FloatArray) -> FloatArray:
    peak = np.maximum.accumulate(equity)
    return np.where(peak > 0, equity / peak - 1.0, 0.0)


def max_drawdown_duration(equity: FloatArray) -> int:
    """Longest stretch of bars spent below a previous peak."""
    below = drawdown(equity) < 0
    longest = current = 0
    for flag in below:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


def compute_metrics(
    equity: FloatArray,
    trades: list[Trade],
    *,
    bars_per_year: float,
    exposure: float = 0.0,
    traded_notional: float = 0.0,
    costs_paid: float = 0.0,
) -> Metrics:
    if equity.size < 2 or equity[0] <= 0:
        return Metrics(total_return=0.0, annual_return=0.0, annual_volatility=0.0, sharpe=0.0, sortino=0.0,
                       calmar=0.0, max_drawdown=0.0, max_drawdown_bars=0, trades=len(trades), win_rate=0.0,
                       profit_factor=0.0, average_win=0.0, average_loss=0.0, exposure=exposure, turnover=0.0,
                       costs_paid=costs_paid)
    returns = np.diff(equity) / equity[:-1]
    returns = np.nan_to_num(returns)
    years = max(returns.size / bars_per_year, 1e-12)
    total = float(equity[-1] / equity[0] - 1.0)
    annual = float((equity[-1] / equity[0]) ** (1.0 / years) - 1.0) if equity[-1] > 0 else -1.0
    std = float(returns.std(ddof=1)) if returns.size > 1 else 0.0
    volatility = std * np.sqrt(bars_per_year)
    mean = float(returns.mean())
    sharpe = mean / std * np.sqrt(bars_per_year) if std > 0 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    sortino = mean / downside * np.sqrt(bars_per_year) if downside > 0 else 0.0
    max_dd = float(-drawdown(equity).min())
    calmar = annual / max_dd if max_dd > 0 else 0.0
    pnl = np.array([trade.pnl for trade in trades], dtype=np.float64)
    wins, losses = pnl[pnl > 0], pnl[pnl <= 0]
    gross_loss = float(-losses.sum())
    profit_factor = float(wins.sum()) / gross_loss if gross_loss > 0 else (float("inf") if wins.size else 0.0)
    average_equity = float(equity.mean())
    return Metrics(
        total_return=total, annual_return=annual, annual_volatility=float(volatility), sharpe=float(sharpe),
        sortino=float(sortino), calmar=float(calmar), max_drawdown=max_dd,
        max_drawdown_bars=max_drawdown_duration(equity), trades=len(trades),
        win_rate=float(wins.size / pnl.size) if pnl.size else 0.0, profit_factor=profit_factor,
        average_win=float(wins.mean()) if wins.size else 0.0, average_loss=float(losses.mean()) if losses.size else 0.0,
        exposure=exposure, turnover=traded_notional / average_equity / years if average_equity > 0 else 0.0,
        costs_paid=costs_paid,
    )


def monthly_returns(equity: FloatArray, month_ids: npt.NDArray[np.int64]) -> dict[int, float]:
    """Return per month; `month_ids` = year * 12 + month - 1 for each equity point."""
    out: dict[int, float] = {}
    previous_end = float(equity[0])
    for month in np.unique(month_ids):
        last = float(equity[np.flatnonzero(month_ids == month)[-1]])
        out[int(month)] = last / previous_end - 1.0 if previous_end > 0 else 0.0
        previous_end = last
    return out
