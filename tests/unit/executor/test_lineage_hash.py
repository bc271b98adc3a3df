"""The feature snapshot hash in every order's lineage: the bytes of nan_to_num(matrix, nan=-1e300)."""

from __future__ import annotations

import hashlib

import numpy as np

from executor.trader import feature_snapshot_hash


def test_hash_equals_the_nan_to_num_definition_with_nan_and_infinities() -> None:
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(50, 31))
    matrix[rng.random(matrix.shape) < 0.2] = np.nan
    matrix[0, 0], matrix[1, 1], matrix[2, 2], matrix[3, 3] = np.inf, -np.inf, -0.0, 1e308
    expected = hashlib.sha256(np.nan_to_num(matrix, nan=-1e300).tobytes()).hexdigest()[:16]
    assert feature_snapshot_hash(matrix) == expected
    before = matrix.copy()
    feature_snapshot_hash(matrix)
    assert np.array_equal(matrix, before, equal_nan=True)  # the matrix itself is left alone
    matrix[4, 4] = 1.0
    assert feature_snapshot_hash(matrix) != expected
