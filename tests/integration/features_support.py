"""Helpers shared by the feature integration tests: read the dbt tables back and replay the online engine."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tradeloom.adapters.db import Database
from tradeloom.features.online import OnlineFeatureEngine
from tradeloom.features.spec import DEFAULT_SPEC


def instrument_keys(db: Database) -> dict[int, str]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select instrument_id, exchange || ':' || symbol from instruments")
        return {int(row[0]): str(row[1]) for row in cur.fetchall()}


def adjusted_bars(db: Database, timeframe: str, ids: list[int]) -> tuple[npt.NDArray[np.int64], np.ndarray]:
    """Bars of the intermediate model aligned on a (time x instrument x OHLCV) grid, NaN where missing."""
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            "select instrument_id, (extract(epoch from bar_at) * 1e6)::bigint * 1000, open, high, low, close, volume "
            "from int_bars_adjusted where timeframe = %s and instrument_id = any(%s) order by bar_at",
            (timeframe, ids),
        )
        rows = cur.fetchall()
    stamps = np.unique(np.array([row[1] for row in rows], dtype=np.int64))
    grid = np.full((len(stamps), len(ids), 5), np.nan)
    position = {instrument_id: index for index, instrument_id in enumerate(ids)}
    where = np.searchsorted(stamps, [row[1] for row in rows])
    for row, at in zip(rows, where, strict=True):
        grid[at, position[row[0]]] = row[2:]
    return stamps, grid


def table_features(db: Database, timeframe: str, ids: list[int], stamps: npt.NDArray[np.int64]) -> np.ndarray:
    """The dbt `features` table on the same grid (NaN for NULL or missing rows)."""
    columns = ", ".join(DEFAULT_SPEC.names)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            f"select instrument_id, (extract(epoch from bar_at) * 1e6)::bigint * 1000, {columns} "
            "from features where timeframe = %s and instrument_id = any(%s)", (timeframe, ids),
        )
        rows = cur.fetchall()
    out = np.full((len(stamps), len(ids), len(DEFAULT_SPEC.names)), np.nan)
    position = {instrument_id: index for index, instrument_id in enumerate(ids)}
    for row in rows:
        at = int(np.searchsorted(stamps, row[1]))
        out[at, position[row[0]]] = [np.nan if value is None else value for value in row[2:]]
    return out


def online_features(keys: list[str], timeframe: str, stamps: npt.NDArray[np.int64], grid: np.ndarray) -> np.ndarray:
    engine = OnlineFeatureEngine(keys, timeframe)
    out = np.empty((len(stamps), len(keys), len(DEFAULT_SPEC.names)))
    for row, stamp in enumerate(stamps):
        bars = grid[row]
        out[row] = engine.step(int(stamp), bars[:, 0], bars[:, 1], bars[:, 2], bars[:, 3], bars[:, 4])
    return out


def max_difference_by_feature(left: np.ndarray, right: np.ndarray) -> dict[str, float]:
    """Largest absolute difference per feature; a NaN on one side only counts as infinite."""
    result: dict[str, float] = {}
    for column, name in enumerate(DEFAULT_SPEC.names):
        a, b = left[..., column], right[..., column]
        mismatch = np.isnan(a) != np.isnan(b)
        both = ~np.isnan(a) & ~np.isnan(b)
        worst = float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0
        result[name] = float("inf") if mismatch.any() else worst
    return result
