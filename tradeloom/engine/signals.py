"""Class probabilities (down, flat, up) -> signal in {-1, 0, +1} with a confidence, per instrument."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tradeloom.engine.config import SignalConfig
from tradeloom.engine.kernels import signal_kernel
from tradeloom.errors import InputError
from tradeloom.records import fast_init

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
DOWN, FLAT, UP = 0, 1, 2


@fast_init
@dataclass(frozen=True)
class Signals:
    """`direction` +1 buy, -1 sell, 0 hold, for entries (the enter threshold, either side); `exit_direction`
    the same with the exit threshold (a held position exits on the opposite sign); `confidence` is the winning
    class's probability."""

    direction: npt.NDArray[np.int8]
    confidence: FloatArray
    margin: FloatArray  # winning probability minus the runner-up
    exit_direction: npt.NDArray[np.int8]


def signals_from_probabilities(config: SignalConfig, probabilities: FloatArray) -> Signals:
    if probabilities.ndim != 2 or probabilities.shape[1] != 3:
        raise InputError(f"probabilities must have shape (N, 3) ordered down/flat/up, got {probabilities.shape}")
    if probabilities.dtype == np.float64:  # one compiled loop instead of ~30 numpy calls (same IEEE results)
        direction, exit_direction, confidence, margin = signal_kernel(
            probabilities, config.enter_threshold, config.exit_threshold, config.min_confidence)
        return Signals(direction, confidence, margin, exit_direction)
    return signals_by_numpy(config, probabilities)


def signals_by_numpy(config: SignalConfig, probabilities: FloatArray) -> Signals:
    """The array expression `signal_kernel` mirrors; used as is for other dtypes (float32 keeps float32)."""
    p = np.where(np.isnan(probabilities), 0.0, probabilities)
    down_p, flat_p, up_p = p[:, DOWN], p[:, FLAT], p[:, UP]
    top = np.maximum(np.maximum(down_p, flat_p), up_p)
    bottom = np.minimum(np.minimum(down_p, flat_p), up_p)
    margin = top - (down_p + flat_p + up_p - top - bottom)  # winner minus runner-up
    confident = margin >= config.min_confidence

    def sides(threshold: float) -> npt.NDArray[np.int8]:
        up = (up_p >= threshold) & (up_p > down_p)
        down = (down_p >= threshold) & (down_p > up_p)
        # `up` and `down` exclude each other (strict comparisons), so the difference is +1 / -1 / 0.
        wanted: npt.NDArray[np.int8] = (up & confident).view(np.int8) - (down & confident).view(np.int8)
        return wanted

    direction = sides(config.enter_threshold)
    confidence = np.where(direction > 0, up_p, np.where(direction < 0, down_p, flat_p))
    return Signals(direction, confidence, margin, sides(config.exit_threshold))


def entry_candidates(
    config: SignalConfig,
    signals: Signals,
    positions: IntArray,
    pending: IntArray,
    bars_since_exit: IntArray,
    confirm: FloatArray | None,
) -> npt.NDArray[np.int8]:
    """Side (+1/-1) of each wanted new entry, 0 where none: flat, nothing pending, cool-down over."""
    side = signals.direction.copy()
    if not config.allow_short:
        side[side < 0] = 0
    side[(positions != 0) | (pending != 0)] = 0
    if config.cooldown_bars:  # bars_since_exit is never negative: no cool-down, nothing to mask
        side[bars_since_exit < config.cooldown_bars] = 0
    if confirm is not None:
        side[np.sign(np.nan_to_num(confirm)) != side] = 0
    return side


def exit_wanted(
    config: SignalConfig, signals: Signals, positions: IntArray, holding_bars: IntArray
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(exit on an opposite signal, exit on max holding time) for held positions."""
    # exit direction == -sign(position) on a held position <=> their product is negative (0 when flat or hold).
    opposite = (signals.exit_direction * positions) < 0
    if config.max_holding_bars is None:
        return opposite, np.zeros(positions.shape, dtype=bool)
    timed = (positions != 0) & (holding_bars >= config.max_holding_bars)
    return opposite, timed & ~opposite
