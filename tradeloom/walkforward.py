"""Walk-forward splits with purge and embargo (López de Prado), shared by backtests and training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tradeloom.errors import ConfigError


@dataclass(frozen=True)
class Fold:
    """Index ranges into a time-ordered array; train and test never overlap or touch within the purge."""

    number: int
    train: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]


def walk_forward_splits(
    n_rows: int,
    *,
    train_size: int,
    test_size: int,
    purge: int = 0,
    embargo: int = 0,
    expanding: bool = False,
    step: int | None = None,
) -> list[Fold]:
    """Rolling (or expanding) train windows each followed by a test window.

    `purge` rows are dropped between the end of train and the start of test, so a label looking `purge`
    rows ahead never sees the test window; set it to at least the label horizon. `embargo` rows after a
    test window are kept out of any later train window (only matters for expanding windows that would
    otherwise re-use rows right after an earlier test window's start).
    """
    for name, value in {"train_size": train_size, "test_size": test_size}.items():
        if value < 1:
            raise ConfigError(f"walk-forward {name} must be >= 1, got {value}")
    for name, value in {"purge": purge, "embargo": embargo}.items():
        if value < 0:
            raise ConfigError(f"walk-forward {name} must be >= 0, got {value}")
    step = step or test_size
    folds: list[Fold] = []
    test_start = train_size + purge
    number = 0
    while test_start + test_size <= n_rows:
        train_end = test_start - purge
        train_start = 0 if expanding else train_end - train_size
        train = np.arange(train_start, train_end, dtype=np.int64)
        if embargo and folds:
            # Rows within `embargo` after an earlier test window's end may carry its information.
            blocked = np.zeros(n_rows, dtype=bool)
            for earlier in folds:
                end = int(earlier.test[-1]) + 1
                blocked[end:end + embargo] = True
            train = train[~blocked[train]]
        test = np.arange(test_start, test_start + test_size, dtype=np.int64)
        folds.append(Fold(number, train, test))
        number += 1
        test_start += step
    if not folds:
        raise ConfigError(
            f"walk-forward needs at least train_size + purge + test_size = {train_size + purge + test_size} rows, "
            f"got {n_rows}"
        )
    return folds
