"""Position sizing: fixed fractional, capped Kelly, volatility targeting, fixed notional, all-in;
quantities rounded down to the lot size."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tradeloom.engine.config import SizingConfig
from tradeloom.engine.kernels import fixed_quantity_kernel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def kelly_fraction(probability_win: FloatArray, payoff: float, cap: float) -> FloatArray:
    """f* = p - (1 - p) / b, clipped to [0, cap]."""
    raw = probability_win - (1.0 - probability_win) / payoff
    return np.clip(raw, 0.0, cap)


def round_to_lot(quantity: FloatArray, lot_size: IntArray) -> IntArray:
    """Whole lots, towards zero (never more than was sized)."""
    lots = np.floor(np.abs(quantity) / lot_size)
    return (np.sign(quantity) * lots * lot_size).astype(np.int64)


def target_quantity(
    config: SizingConfig,
    *,
    equity: float,
    cash: float,
    price: FloatArray,
    stop_distance: FloatArray,
    probability_win: FloatArray,
    realised_vol: FloatArray | None,
    lot_size: IntArray,
) -> IntArray:
    """Unsigned quantity per instrument before risk caps; 0 where it cannot be sized (NaN inputs)."""
    if config.method == "fixed_quantity":  # one compiled loop (see the kernel for the expression it mirrors)
        return fixed_quantity_kernel(price, float(config.quantity), lot_size)
    safe_price = np.where(np.isfinite(price) & (price > 0), price, np.nan)
    if config.method == "fixed_fractional":
        distance = np.where(np.isfinite(stop_distance) & (stop_distance > 0), stop_distance, np.nan)
        quantity = config.risk_fraction * equity / distance
    elif config.method == "kelly":
        quantity = kelly_fraction(probability_win, config.kelly_payoff, config.kelly_cap) * equity / safe_price
    elif config.method == "volatility_target":
        if realised_vol is None:
            quantity = np.full_like(price, np.nan)
        else:
            annual = realised_vol * np.sqrt(config.bars_per_year)
            annual = np.where(np.isfinite(annual) & (annual > 0), annual, np.nan)
            quantity = np.minimum(config.target_volatility / annual, 1.0) * equity / safe_price
    elif config.method == "fixed_notional":
        quantity = config.notional_fraction * equity / safe_price
    else:  # all_in: floor division exactly as a broker computing affordable whole units
        quantity = np.floor_divide(cash, safe_price * (1.0 + config.cost_buffer_rate))
    quantity = np.where(np.isfinite(quantity) & (quantity > 0), quantity, 0.0)
    # round_to_lot on a quantity that is now >= 0: abs and sign are identities, the floor and product the same.
    return (np.floor(quantity / lot_size) * lot_size).astype(np.int64)
