"""Training folds: walk-forward splits placed by the config's dated segments, each train window split
into a fit part and a newer validation part (with a purge gap) for early stopping and calibration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt

from tradeloom.errors import ConfigError
from tradeloom.models.config import TrainConfig
from tradeloom.walkforward import walk_forward_splits

IndexArray = npt.NDArray[np.int64]
NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class TrainingFold:
    number: int
    fit: IndexArray
    valid: IndexArray
    test: IndexArray
    purge: int


def day_ns(day: date) -> int:
    return int(np.datetime64(day, "ns").astype(np.int64))


def plan_folds(timestamps_ns: npt.NDArray[np.int64], config: TrainConfig) -> list[TrainingFold]:
    """Folds over time-ordered rows; test windows tile the test segment, train rows precede each by
    at least the effective purge (>= label horizon), and no row needs history before the first row."""
    if timestamps_ns.ndim != 1 or timestamps_ns.size == 0:
        raise ConfigError(f"timestamps must be a non-empty 1-d array, got shape {timestamps_ns.shape}")
    steps = np.diff(timestamps_ns)
    if np.any(steps <= 0):
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise ConfigError(f"timestamps must be strictly increasing (one instrument, time-ordered rows): row {row} "
                          f"({int(timestamps_ns[row])}) does not come after row {row - 1} "
                          f"({int(timestamps_ns[row - 1])})")
    segments, walk = config.segments, config.walk_forward
    purge = config.effective_purge
    first_train = max(int(np.searchsorted(timestamps_ns, day_ns(segments.train.start))), config.window - 1)
    first_test = int(np.searchsorted(timestamps_ns, day_ns(segments.test.start)))
    end = int(np.searchsorted(timestamps_ns, day_ns(segments.test.end) + NS_PER_DAY))
    base = first_train if walk.expanding else max(first_train, first_test - purge - walk.train_size)
    train_size = first_test - purge - base
    if train_size < 10:
        raise ConfigError(
            f"segments leave {train_size} train rows before the test start {segments.test.start} "
            f"(need >= 10 after a purge of {purge} and a warm-up of {config.window - 1} rows)"
        )
    splits = walk_forward_splits(
        end - base, train_size=train_size, test_size=walk.test_size, purge=purge, embargo=walk.embargo,
        expanding=walk.expanding,
    )
    folds: list[TrainingFold] = []
    for split in splits:
        train = split.train + base
        n_valid = max(1, int(np.ceil(train.size * walk.validation_fraction)))
        fit = train[: train.size - n_valid - purge]
        if fit.size < 10:
            raise ConfigError(
                f"fold {split.number}: {fit.size} fit rows after validation ({n_valid}) and purge ({purge}); "
                "raise walk_forward.train_size or lower validation_fraction"
            )
        folds.append(TrainingFold(split.number, fit, train[train.size - n_valid:], split.test + base, purge))
    return folds
