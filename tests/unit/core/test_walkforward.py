from __future__ import annotations

import numpy as np
import pytest

from tradeloom.errors import ConfigError
from tradeloom.walkforward import walk_forward_splits


def test_walk_forward_purge_separates_train_and_test() -> None:
    folds = walk_forward_splits(100, train_size=30, test_size=10, purge=5)
    assert len(folds) == 6
    for fold in folds:
        assert fold.train.max() + 5 < fold.test.min()
        assert np.intersect1d(fold.train, fold.test).size == 0
        assert fold.train.size == 30


def test_walk_forward_expanding_with_embargo_drops_rows_after_earlier_tests() -> None:
    folds = walk_forward_splits(100, train_size=30, test_size=10, purge=2, embargo=3, expanding=True)
    later = folds[2]
    first_test_end = int(folds[0].test[-1])
    assert not np.isin(np.arange(first_test_end + 1, first_test_end + 4), later.train).any()
    assert later.train.min() == 0


def test_walk_forward_too_few_rows_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="at least"):
        walk_forward_splits(10, train_size=8, test_size=5)
