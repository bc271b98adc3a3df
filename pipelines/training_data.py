"""Training arrays from bars: the features helper's `feature_matrix` when present, else a small built-in
set of price/volume features (named, with its own spec hash) so training works on any bars."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.train import TrainingData
from tradeloom.adapters.store import load_splits
from tradeloom.corporate import back_adjust
from tradeloom.errors import DataQualityError
from tradeloom.models.config import TrainConfig
from tradeloom.models.labels import UNKNOWN, direction_labels

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FALLBACK_VERSION = "tradeloom-fallback-features-v1"
FALLBACK_NAMES = ("return_1", "return_5", "return_10", "return_20", "volatility_10", "volatility_20",
                  "range_1", "volume_z_20", "sma_ratio_10_50")


@dataclass(frozen=True)
class FeatureRows:
    """Every warm feature row of one instrument, labelled or not: what the model sees in service, including
    the newest `horizon` bars whose labels are not known yet (drift watches those too)."""

    features: FloatArray
    timestamps_ns: IntArray
    feature_names: tuple[str, ...]
    spec_hash: str
    labelled: BoolArray


def fallback_spec_hash() -> str:
    return hashlib.sha256(f"{FALLBACK_VERSION}:{','.join(FALLBACK_NAMES)}".encode()).hexdigest()


def _rolling_mean(values: FloatArray, window: int) -> FloatArray:
    out = np.full(values.size, np.nan)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    if values.size >= window:
        out[window - 1:] = (cumulative[window:] - cumulative[:-window]) / window
    return out


def _rolling_std(values: FloatArray, window: int) -> FloatArray:
    mean = _rolling_mean(values, window)
    square = _rolling_mean(values**2, window)
    return np.asarray(np.sqrt(np.maximum(square - mean**2, 0.0)), dtype=np.float64)


def fallback_features(close: FloatArray, high: FloatArray, low: FloatArray, volume: FloatArray) -> FloatArray:
    """(n, 9) features from data up to and including each row (NaN during the 50-bar warm-up)."""
    log_close = np.log(close)
    one = np.concatenate([[np.nan], np.diff(log_close)])

    def back(k: int) -> FloatArray:
        out = np.full(close.size, np.nan)
        out[k:] = log_close[k:] - log_close[:-k]
        return out

    log_volume = np.log1p(volume)
    volume_std = _rolling_std(log_volume, 20)
    volume_z = (log_volume - _rolling_mean(log_volume, 20)) / np.where(volume_std > 0, volume_std, np.nan)
    columns = [back(1), back(5), back(10), back(20), _rolling_std(np.nan_to_num(one), 10),
               _rolling_std(np.nan_to_num(one), 20), np.log(high / low), np.nan_to_num(volume_z),
               np.log(_rolling_mean(close, 10) / _rolling_mean(close, 50))]
    return np.column_stack(columns)


def arrays_from_bars(bars: dict[str, Any], config: TrainConfig,
                     lineage: dict[str, str] | None = None) -> TrainingData:
    """Features, labels and returns for one instrument's time-ordered bars (dict of numpy arrays)."""
    return _fallback(bars, config, lineage)[0]


def _fallback(bars: dict[str, Any], config: TrainConfig,
              lineage: dict[str, str] | None = None) -> tuple[TrainingData, FeatureRows]:
    close = np.asarray(bars["close"], dtype=np.float64)
    high, low = np.asarray(bars["high"], dtype=np.float64), np.asarray(bars["low"], dtype=np.float64)
    features = fallback_features(close, high, low, np.asarray(bars["volume"], dtype=np.float64))
    labels, forward = direction_labels(close, config.labels.horizon, config.labels.flat_threshold)
    next_return = np.concatenate([np.diff(np.log(close)), [np.nan]])
    warm = np.isfinite(features).all(axis=1)
    keep = warm & (labels != UNKNOWN)
    if keep.sum() < 50:
        raise DataQualityError(f"only {int(keep.sum())} usable rows for {config.instrument}; need >= 50")
    stamps = np.asarray(bars["bar_at"], dtype=np.int64)
    rows = FeatureRows(features=features[warm], timestamps_ns=stamps[warm], feature_names=FALLBACK_NAMES,
                       spec_hash=fallback_spec_hash(), labelled=(labels != UNKNOWN)[warm])
    return TrainingData(
        features=features[keep], labels=labels[keep], forward_return=forward[keep],
        timestamps_ns=np.asarray(bars["bar_at"], dtype=np.int64)[keep], feature_names=FALLBACK_NAMES,
        spec_hash=fallback_spec_hash(), next_return=next_return[keep], close=close[keep],
        open=np.asarray(bars["open"], dtype=np.float64)[keep], high=high[keep], low=low[keep],
        volume=np.asarray(bars["volume"], dtype=np.float64)[keep], lineage=dict(lineage or {}),
    ), rows


TIMEFRAME_TABLES = {"1m": "bars_1m", "1h": "bars_1h", "1d": "bars_1d"}


def _instrument_id(db: Any, key: str) -> int:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select instrument_id from instruments where exchange || ':' || symbol = %s", (key,))
        row = cur.fetchone()
    if row is None:
        raise DataQualityError(f"instrument {key!r} not in the instrument master: ingest it first")
    return int(row[0])


def _bars(db: Any, instrument_id: int, timeframe: str) -> dict[str, Any]:
    table = TIMEFRAME_TABLES.get(timeframe)
    if table is None:
        raise DataQualityError(f"timeframe {timeframe!r} unknown; expected one of {sorted(TIMEFRAME_TABLES)}")
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            f"select (extract(epoch from bar_at) * 1e6)::bigint, open, high, low, close, volume, "
            f"coalesce(ingest_batch_id, -1) from {table} where instrument_id = %s order by bar_at",
            (instrument_id,),
        )
        rows = cur.fetchall()
        splits = load_splits(conn, [instrument_id]).get(instrument_id, [])
        # Days the data gate failed are never trained on (the marts see passed days only; the built-in
        # features, used before the marts are built, at least never see a failed one).
        cur.execute("select (day - date '1970-01-01') from data_gate where target_table = %s and instrument_id = %s"
                    " and status = 'failed'", (table, instrument_id))
        failed_days = np.array([int(row[0]) for row in cur.fetchall()], dtype=np.int64)
    if not rows:
        raise DataQualityError(f"no {timeframe} bars for instrument_id {instrument_id}: ingest them first")
    bar_at = np.array([row[0] for row in rows], dtype=np.int64) * 1000
    if failed_days.size:
        passed = ~np.isin(bar_at // (86_400 * 1_000_000_000), failed_days)
        log.info("training data for instrument_id %s leaves out %d bars on %d days the data gate failed",
                 instrument_id, int((~passed).sum()), failed_days.size)
        rows = [row for row, keep in zip(rows, passed.tolist(), strict=True) if keep]
        bar_at = bar_at[passed]
        if not rows:
            raise DataQualityError(f"every {timeframe} bar of instrument_id {instrument_id} is on a day the data "
                                   "gate failed: fix the data and validate again")
    columns = np.array(rows, dtype=np.float64)
    # Back-adjusted for splits, as the feature marts are (int_bars_adjusted): features, labels and the
    # backtest of the trained model see one price series.
    prices, volume = back_adjust(bar_at, columns[:, 1:5], columns[:, 5], splits)
    return {"bar_at": bar_at, "open": prices[:, 0], "high": prices[:, 1], "low": prices[:, 2], "close": prices[:, 3],
            "volume": volume, "ingest_batch_ids": sorted({int(row[6]) for row in rows if row[6] != -1})}


def _from_feature_marts(db: Any, config: TrainConfig, instrument_id: int, bars: dict[str, Any],
                        lineage: dict[str, str]) -> tuple[TrainingData, TrainConfig, FeatureRows] | None:
    """The dbt marts (features + labels) when built; None when the marts are empty or missing."""
    try:
        from pipelines.features import feature_matrix
        from tradeloom.features.spec import DEFAULT_SPEC
    except ImportError:
        return None
    try:
        matrix = feature_matrix(db, timeframe=config.timeframe, instrument_ids=[instrument_id])
    except Exception as error:  # marts not built yet: fall back rather than fail the demo
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning("feature marts unavailable (%s); using the built-in features", reason)
        return None
    if matrix.instrument_id.size == 0:
        return None
    # The horizon comes from the feature spec's labels; the purge must follow it.
    labels = config.labels.model_copy(update={"horizon": DEFAULT_SPEC.labels.horizon})
    config = config.model_copy(update={"labels": labels})
    usable_columns = np.isfinite(matrix.features).any(axis=0)
    warm = np.isfinite(matrix.features[:, usable_columns]).all(axis=1)
    keep = warm & np.isfinite(matrix.direction)
    row_at = {int(ns): row for row, ns in enumerate(bars["bar_at"].tolist())}
    rows = np.array([row_at.get(int(ns), -1) for ns in matrix.bar_at_ns[keep]], dtype=np.int64)
    if keep.sum() < 50 or (rows < 0).any() or not np.isfinite(bars["close"][rows]).all():
        missing = matrix.bar_at_ns[keep][rows < 0]
        log.warning("feature marts not usable for instrument_id %s: %d complete rows (50 needed), %d mart rows "
                    "without a stored bar%s", instrument_id, int(keep.sum()), int(missing.size),
                    f" (first at {int(missing[0])} ns)" if missing.size else "")
        return None
    close = bars["close"][rows]
    next_return = np.concatenate([np.diff(np.log(close)), [np.nan]])
    # Columns the timeframe never fills (e.g. order-book features on daily bars) are fed as 0, as the scorer does.
    features = np.nan_to_num(matrix.features[keep], nan=0.0)
    data = TrainingData(
        features=features, labels=(matrix.direction[keep] + 1).astype(np.int64),
        forward_return=matrix.forward_return[keep], timestamps_ns=matrix.bar_at_ns[keep],
        feature_names=matrix.names, spec_hash=matrix.spec_hash, next_return=next_return, close=close,
        open=bars["open"][rows], high=bars["high"][rows], low=bars["low"][rows], volume=bars["volume"][rows],
        lineage={**lineage, "features": "dbt marts"},
        required_features=tuple(matrix.names[column] for column in np.flatnonzero(usable_columns).tolist()),
    )
    rows_all = FeatureRows(features=np.nan_to_num(matrix.features[warm], nan=0.0),
                           timestamps_ns=np.asarray(matrix.bar_at_ns[warm], dtype=np.int64),
                           feature_names=matrix.names, spec_hash=matrix.spec_hash,
                           labelled=np.isfinite(matrix.direction[warm]))
    return data, config, rows_all


def batch_ids_tag(ids: list[int], limit: int = 4000) -> str:
    """The ingest batch ids as an MLflow tag (values are capped): every id when they fit, else as many as fit,
    cut at a comma, then how many more and a digest of the full list (never a cut-off number)."""
    full = ",".join(str(b) for b in ids)
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:12]
    head = full[: limit - 40].rsplit(",", 1)[0]
    shown = head.count(",") + 1
    return f"{head},(+{len(ids) - shown} more; sha256 {digest})"


def load_training_data(db: Any, config: TrainConfig) -> tuple[TrainingData, TrainConfig]:
    """The config's instrument from the store: dbt feature marts when built, else the built-in features."""
    data, config, _ = _load(db, config)
    return data, config


def load_feature_rows(db: Any, config: TrainConfig) -> tuple[TrainingData, TrainConfig, FeatureRows]:
    """The training data and, from the same features, every warm row up to the newest bar (labelled or not)."""
    return _load(db, config)


def _load(db: Any, config: TrainConfig) -> tuple[TrainingData, TrainConfig, FeatureRows]:
    instrument_id = _instrument_id(db, config.instrument)
    bars = _bars(db, instrument_id, config.timeframe)
    lineage = {"instrument": config.instrument, "timeframe": config.timeframe,
               "ingest_batch_ids": batch_ids_tag(bars["ingest_batch_ids"])}
    marts = _from_feature_marts(db, config, instrument_id, bars, lineage)
    if marts is not None:
        return marts
    log.warning("training %s on the built-in features (%s): the online engine's spec hash differs, so the executor"
                " will refuse to serve this model; build the dbt feature marts (`tradeloom features build`) first",
                config.instrument, FALLBACK_VERSION)
    data, rows = _fallback(bars, config, {**lineage, "features": FALLBACK_VERSION})
    return data, config, rows
