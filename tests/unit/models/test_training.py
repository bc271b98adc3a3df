"""Training end to end without MLflow: skill on a planted signal, collapse with time-shuffled labels,
reproducibility, the ensemble, synthetic minute bars, and ONNX == native on real bundled daily bars."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.train import TrainingData, train
from pipelines.training_data import arrays_from_bars
from tests.unit.models.planted import planted_data, small_config
from tradeloom.adapters.onnx_model import OnnxScorer
from tradeloom.models.config import ModelKind
from tradeloom.synthetic import minute_bars, synthetic_instruments


def test_train_planted_signal_beats_chance_out_of_sample() -> None:
    result = train(planted_data(), small_config())
    metrics = result.outcomes[ModelKind.LIGHTGBM].oos_metrics
    assert metrics.balanced_accuracy > 0.45
    assert metrics.roc_auc > 0.6
    assert metrics.information_coefficient > 0.2


def test_train_labels_shuffled_in_time_skill_collapses_to_chance() -> None:
    data = planted_data()
    order = np.random.default_rng(5).permutation(data.labels.size)
    shuffled = TrainingData(
        features=data.features, labels=data.labels[order], forward_return=data.forward_return[order],
        timestamps_ns=data.timestamps_ns, feature_names=data.feature_names, spec_hash=data.spec_hash,
        next_return=data.next_return, close=data.close,
    )
    metrics = train(shuffled, small_config()).outcomes[ModelKind.LIGHTGBM].oos_metrics
    assert abs(metrics.roc_auc - 0.5) < 0.06
    assert abs(metrics.balanced_accuracy - 1 / 3) < 0.07
    assert abs(metrics.information_coefficient) < 0.1


def test_train_same_data_config_seed_identical_models_and_metrics() -> None:
    config = small_config(models=["lightgbm", "lstm"])
    first, second = train(planted_data(), config), train(planted_data(), config)
    for kind in (ModelKind.LIGHTGBM, ModelKind.LSTM):
        # JSON, because NaN precision (a class never predicted) is never == itself.
        assert first.outcomes[kind].oos_metrics.model_dump_json() == second.outcomes[kind].oos_metrics.model_dump_json()
        assert np.array_equal(first.outcomes[kind].oos_probabilities, second.outcomes[kind].oos_probabilities)
        scored = []
        for result in (first, second):
            outcome = result.outcomes[kind]
            assert outcome.final is not None and outcome.card is not None and outcome.onnx_bytes is not None
            windows = outcome.final.onnx_input(planted_data().features, result.test_rows)
            scored.append(OnnxScorer(outcome.onnx_bytes, outcome.card).predict_proba(windows))
        assert np.array_equal(scored[0], scored[1])


def test_train_ensemble_and_baselines_scored_on_same_rows() -> None:
    config = small_config(models=["lightgbm", "transformer"],
                          ensemble={"members": ["lightgbm", "transformer"]})
    result = train(planted_data(), config)
    ensemble = result.outcomes[ModelKind.ENSEMBLE]
    assert ensemble.oos_probabilities.shape == (result.test_rows.size, 3)
    assert np.allclose(ensemble.oos_probabilities.sum(axis=1), 1.0)
    assert set(result.baselines) == {"buy_and_hold", "sma_cross"}
    names = [row["model"] for row in result.comparison_rows()]
    assert names == ["lightgbm", "transformer", "ensemble", "buy_and_hold", "sma_cross"]


def test_train_synthetic_minute_bars_runs_and_probabilities_valid() -> None:
    bars_columns = minute_bars(synthetic_instruments(1), days=4, seed=7)
    bars = {name: getattr(bars_columns, name) for name in ("bar_at", "open", "high", "low", "close", "volume")}
    config = small_config(
        timeframe="1m",
        segments={"train": {"start": "2024-01-01", "end": "2024-01-03"},
                  "test": {"start": "2024-01-04", "end": "2024-01-05"}},
        walk_forward={"train_size": 600, "test_size": 150, "purge": 1},
        labels={"horizon": 5, "flat_threshold": 0.0005},
    )
    data = arrays_from_bars(bars, config)
    result = train(data, config)
    outcome = result.outcomes[ModelKind.LIGHTGBM]
    assert outcome.oos_metrics.rows == result.test_rows.size > 0
    assert result.config.effective_purge == 5
    assert np.allclose(outcome.oos_probabilities.sum(axis=1), 1.0)


@pytest.fixture(scope="module")
def aapl_bars() -> dict[str, np.ndarray]:
    from tradeloom.adapters.sources import bundled_batches

    batch = next(b for b in bundled_batches() if b.source.endswith("bokeh_sampledata")).bars
    mask = batch.instrument_key == "NASDAQ:AAPL"
    order = np.argsort(batch.bar_at[mask])
    return {name: getattr(batch, name)[mask][order] for name in ("bar_at", "open", "high", "low", "close", "volume")}


def test_onnx_export_real_daily_bars_matches_native_to_1e5(aapl_bars: dict[str, np.ndarray]) -> None:
    config = small_config(
        models=["lightgbm", "lstm", "transformer"],
        segments={"train": {"start": "2004-01-01", "end": "2010-12-31"},
                  "test": {"start": "2011-01-01", "end": "2011-12-31"}},
        walk_forward={"train_size": 500, "test_size": 250, "purge": 1},
        lightgbm={"n_estimators": 80, "num_leaves": 15, "early_stopping_rounds": 80},
    )
    data = arrays_from_bars(aapl_bars, config)
    result = train(data, config)
    rows = np.arange(max(config.window, 1), data.labels.size)  # every real row with a full window
    for kind in (ModelKind.LIGHTGBM, ModelKind.LSTM, ModelKind.TRANSFORMER):
        outcome = result.outcomes[kind]
        assert outcome.final is not None and outcome.card is not None and outcome.onnx_bytes is not None
        scorer = OnnxScorer(outcome.onnx_bytes, outcome.card)
        native = outcome.final.predict_raw(data.features, rows)
        exported = scorer.raw_probabilities(outcome.final.onnx_input(data.features, rows))
        assert np.max(np.abs(native - exported)) < 1e-5, kind


def test_training_data_with_a_nan_feature_names_the_feature_the_row_and_the_value() -> None:
    from dataclasses import replace

    from tradeloom.errors import DataQualityError

    data = planted_data()
    features = data.features.copy()
    features[7, 1] = np.nan
    with pytest.raises(DataQualityError, match=rf"1 cells; first: feature '{data.feature_names[1]}' at row 7 = nan"):
        replace(data, features=features)


def test_training_data_with_an_unknown_label_names_the_row_and_the_value() -> None:
    from dataclasses import replace

    from tradeloom.errors import DataQualityError

    data = planted_data()
    labels = data.labels.copy()
    labels[[4, 9]] = 7
    with pytest.raises(DataQualityError, match=r"2 are not; first: row 4 holds 7"):
        replace(data, labels=labels)


def test_unordered_timestamps_name_the_rows_that_break_the_order() -> None:
    from tradeloom.errors import ConfigError
    from tradeloom.models.folds import plan_folds

    data = planted_data()
    stamps = data.timestamps_ns.copy()
    stamps[5] = stamps[4]
    with pytest.raises(ConfigError, match=rf"row 5 \({int(stamps[5])}\) does not come after row 4"):
        plan_folds(stamps, small_config())


def test_ingest_batch_lineage_tag_never_ends_in_a_cut_off_id() -> None:
    from pipelines.training_data import batch_ids_tag

    assert batch_ids_tag([3, 17, 250]) == "3,17,250"
    tag = batch_ids_tag(list(range(1, 1201)))
    assert len(tag) <= 4000
    head, tail = tag.rsplit(",(+", 1)
    ids = [int(part) for part in head.split(",")]
    assert ids == list(range(1, len(ids) + 1))  # whole numbers, in order, none cut
    assert tail.startswith(f"{1200 - len(ids)} more; sha256 ")
