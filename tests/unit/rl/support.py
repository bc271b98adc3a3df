"""A small seeded random-walk instrument for the RL tests (synthetic: no real data needed)."""

from __future__ import annotations

import numpy as np

from pipelines.rl.env import EnvData

DAY_NS = 86_400_000_000_000


def random_walk_data(bars: int = 300, seed: int = 0, drift: float = 0.0005) -> EnvData:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(drift, 0.01, bars)))
    opens = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, 0.002, bars))
    momentum = np.concatenate([[0.0], np.diff(np.log(close))])
    features = np.column_stack([momentum, rng.normal(size=bars)])
    return EnvData("SYN:WALK", np.arange(bars, dtype=np.int64) * DAY_NS, opens, np.maximum(opens, close) * 1.002,
                   np.minimum(opens, close) * 0.998, close, np.full(bars, 1e7), features, ("momentum", "noise"))
