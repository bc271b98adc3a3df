"""Temperature scaling of predicted probabilities, fitted on the validation slice only.

One parameter keeps the class ranking (so accuracy and AUC are unchanged) while fixing over- or
under-confidence, and it applies identically to native and ONNX outputs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tradeloom.errors import ConfigError

EPSILON = 1e-12
MIN_LOG_T, MAX_LOG_T = np.log(0.05), np.log(20.0)


def apply_temperature(p: npt.NDArray[np.float64], temperature: float) -> npt.NDArray[np.float64]:
    if temperature <= 0 or not np.isfinite(temperature):
        raise ConfigError(f"calibration temperature must be a positive number, got {temperature}")
    logits = np.log(np.clip(p, EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return np.asarray(scaled / scaled.sum(axis=1, keepdims=True), dtype=np.float64)


def _nll(p: npt.NDArray[np.float64], y: npt.NDArray[np.int64], temperature: float) -> float:
    scaled = apply_temperature(p, temperature)
    return float(-np.mean(np.log(np.clip(scaled[np.arange(y.size), y], EPSILON, 1.0))))


def fit_temperature(p: npt.NDArray[np.float64], y: npt.NDArray[np.int64], iterations: int = 60) -> float:
    """The temperature minimising validation log loss (golden-section search over log T)."""
    if y.size == 0:
        raise ConfigError("temperature calibration needs validation rows, got none")
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = MIN_LOG_T, MAX_LOG_T
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = _nll(p, y, float(np.exp(a))), _nll(p, y, float(np.exp(b)))
    for _ in range(iterations):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _nll(p, y, float(np.exp(a)))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll(p, y, float(np.exp(b)))
    best = float(np.exp((low + high) / 2.0))
    # Keep T = 1 unless scaling actually helps on the validation rows.
    return best if _nll(p, y, best) < _nll(p, y, 1.0) else 1.0
