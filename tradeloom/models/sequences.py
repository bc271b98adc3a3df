"""Windows of the last K feature rows, the input of sequence models (and of the ONNX scorer)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tradeloom.errors import ConfigError


def sliding_windows(
    features: npt.NDArray[np.floating], rows: npt.NDArray[np.int64], window: int
) -> npt.NDArray[np.float32]:
    """For each row index i, features[i - window + 1 : i + 1] as (len(rows), window, k) float32."""
    if rows.size and int(rows.min()) < window - 1:
        raise ConfigError(f"row {int(rows.min())} has fewer than window - 1 = {window - 1} rows of history")
    offsets = np.arange(-window + 1, 1, dtype=np.int64)
    return np.ascontiguousarray(features[rows[:, None] + offsets[None, :]], dtype=np.float32)
