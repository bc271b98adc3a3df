"""Seeded training arrays with a planted, learnable signal (and a config sized for seconds of training)."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np

from pipelines.train import TrainingData
from tradeloom.models.config import TrainConfig, parse_config
from tradeloom.models.labels import UNKNOWN, direction_labels

FEATURES = ("signal", "signal_lag", "noise_a", "noise_b")


def planted_data(rows: int = 900, horizon: int = 1, seed: int = 3, strength: float = 0.6) -> TrainingData:
    """Daily-stamped rows whose next return follows the observable `signal` feature, plus noise features."""
    rng = np.random.default_rng(seed)
    signal = np.zeros(rows)
    for t in range(1, rows):
        signal[t] = 0.7 * signal[t - 1] + rng.normal()
    returns = 0.01 * (strength * signal + rng.normal(size=rows))
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns[:-1])]))
    labels, forward = direction_labels(close, horizon, 0.004 * np.sqrt(horizon))
    features = np.column_stack([signal, np.roll(signal, 1), rng.normal(size=rows), rng.normal(size=rows)])
    keep = labels != UNKNOWN
    keep[0] = False
    stamps = (np.datetime64(date(2010, 1, 1), "ns") + np.arange(rows) * np.timedelta64(1, "D")).astype(np.int64)
    next_return = np.concatenate([np.diff(np.log(close)), [np.nan]])
    return TrainingData(
        features=features[keep], labels=labels[keep], forward_return=forward[keep], timestamps_ns=stamps[keep],
        feature_names=FEATURES, spec_hash="planted-spec-v1", next_return=next_return[keep], close=close[keep],
        lineage={"source": f"planted seed={seed}"},
    )


def small_config(**overrides: Any) -> TrainConfig:
    raw: dict[str, Any] = {
        "strategy": "planted", "seed": 11,
        "segments": {"train": {"start": "2010-01-01", "end": "2011-06-30"},
                     "test": {"start": "2011-07-01", "end": "2012-06-30"}},
        "walk_forward": {"train_size": 400, "test_size": 120, "purge": 0, "embargo": 2},
        "labels": {"horizon": 1, "flat_threshold": 0.004},
        "models": ["lightgbm"],
        "lightgbm": {"n_estimators": 60, "num_leaves": 7, "early_stopping_rounds": 10},
        "lstm": {"window": 5, "hidden": 8, "epochs": 3, "patience": 2, "batch_size": 64},
        "transformer": {"window": 5, "hidden": 8, "heads": 2, "epochs": 3, "patience": 2, "batch_size": 64},
        "costs": {"cost_bps": 1.0},
    }
    raw.update(overrides)
    return parse_config(raw)
