"""Monte Carlo bootstrap of trade returns: distribution of final equity and max drawdown."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class BootstrapResult:
    final_equity: FloatArray  # one per path, starting from 1.0
    max_drawdown: FloatArray

    def quantiles(self, levels: tuple[float, ...] = (0.05, 0.5, 0.95)) -> dict[str, dict[str, float]]:
        return {
            "final_equity": {f"p{int(q * 100)}": float(np.quantile(self.final_equity, q)) for q in levels},
            "max_drawdown": {f"p{int(q * 100)}": float(np.quantile(self.max_drawdown, q)) for q in levels},
        }


def bootstrap_trades(
    trade_returns: FloatArray, *, paths: int, rng: np.random.Generator, trades_per_path: int | None = None
) -> BootstrapResult:
    """Resample trade returns with replacement and compound them sequentially (fully invested per trade)."""
    count = trades_per_path or trade_returns.size
    if trade_returns.size == 0 or count == 0:
        return BootstrapResult(np.ones(paths), np.zeros(paths))
    draws = rng.choice(trade_returns, size=(paths, count), replace=True)
    curves = np.cumprod(1.0 + draws, axis=1)
    curves = np.concatenate([np.ones((paths, 1)), curves], axis=1)
    peaks = np.maximum.accumulate(curves, axis=1)
    return BootstrapResult(curves[:, -1].astype(np.float64), (1.0 - curves / peaks).max(axis=1).astype(np.float64))
