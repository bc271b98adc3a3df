"""Three-class direction labels (down / flat / up) from closes, `horizon` bars ahead."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tradeloom.errors import ConfigError

DOWN, FLAT, UP = 0, 1, 2
CLASSES = ("down", "flat", "up")
# Label of a row whose forward return is not known yet (the last `horizon` rows).
UNKNOWN = -1


def forward_log_returns(close: npt.NDArray[np.float64], horizon: int) -> npt.NDArray[np.float64]:
    """log(close[t + horizon] / close[t]); NaN where t + horizon is past the end."""
    if horizon < 1:
        raise ConfigError(f"label horizon must be >= 1, got {horizon}")
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] > horizon:
        out[:-horizon] = np.log(close[horizon:] / close[:-horizon])
    return out


def direction_labels(
    close: npt.NDArray[np.float64], horizon: int, flat_threshold: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Labels in {DOWN, FLAT, UP} (UNKNOWN for the last `horizon` rows) and the forward returns behind them."""
    forward = forward_log_returns(close, horizon)
    labels = np.full(close.shape[0], UNKNOWN, dtype=np.int64)
    known = np.isfinite(forward)
    labels[known] = FLAT
    labels[known & (forward > flat_threshold)] = UP
    labels[known & (forward < -flat_threshold)] = DOWN
    return labels, forward
