"""Training: walk-forward folds of LightGBM / LSTM / Transformer direction models and their ensemble,
calibrated, evaluated out of sample next to the baselines, then logged and registered in MLflow.

`train(data, config)` takes plain time-ordered arrays (one instrument); `train_from_db` reads them from
the store; `demo_train` is the lead's demo hook.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.backtest import MarketData
from pipelines.learners import FittedModel, fit_model, lightgbm_importance
from pipelines.train_engine import TRADING_SOURCE, backtest_folds, baselines_through_engine, market_data
from tradeloom.errors import ConfigError, DataQualityError
from tradeloom.models.calibration import apply_temperature, fit_temperature
from tradeloom.models.compatibility import ModelCard
from tradeloom.models.config import GateConfig, ModelKind, TrainConfig
from tradeloom.models.folds import TrainingFold, plan_folds
from tradeloom.models.gate import CandidateSummary, GateDecision, decide
from tradeloom.models.labels import CLASSES
from tradeloom.models.metrics import FoldMetrics, evaluate
from tradeloom.models.trading import TradingMetrics
from tradeloom.settings import project_root

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BASELINES = ("buy_and_hold", "sma_cross")


@dataclass(frozen=True)
class TrainingData:
    """One instrument's time-ordered rows with known labels (the last `horizon` rows already dropped)."""

    features: FloatArray
    labels: IntArray
    forward_return: FloatArray
    timestamps_ns: IntArray
    feature_names: tuple[str, ...]
    spec_hash: str
    # Close-to-next-close log return per row: what a position held for one bar earns.
    next_return: FloatArray | None = None
    close: FloatArray | None = None
    # The bars the engine backtest fills against; derived from `close` when absent (see train_engine).
    open: FloatArray | None = None
    high: FloatArray | None = None
    low: FloatArray | None = None
    volume: FloatArray | None = None
    lineage: dict[str, str] = field(default_factory=dict)
    # Features present in every training row (None: all of them); the others (a timeframe never fills them)
    # were fed as 0. A served row missing one of these is out of what the model saw: it is not scored.
    required_features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.features.ndim != 2 or self.features.shape != (n, len(self.feature_names)):
            raise DataQualityError(
                f"features shape {self.features.shape} must be (rows={n}, features={len(self.feature_names)})"
            )
        for name in ("forward_return", "timestamps_ns", "next_return", "close", "open", "high", "low", "volume"):
            value = getattr(self, name)
            if value is not None and value.shape != (n,):
                raise DataQualityError(f"{name} shape {value.shape} must be ({n},)")
        unknown = ~np.isin(self.labels, (0, 1, 2))
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise DataQualityError(f"labels must be in {{0, 1, 2}} ({', '.join(CLASSES)}): {int(unknown.sum())} "
                                   f"are not; first: row {row} holds {self.labels[row].item()!r}; drop unknown rows "
                                   "first")
        bad = ~np.isfinite(self.features)
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            name = self.feature_names[column]
            raise DataQualityError(
                f"features hold NaN or infinite values ({int(bad.sum())} cells; first: feature {name!r} at row "
                f"{row} = {float(self.features[row, column])!r}); drop warm-up rows first")

    def returns_for_trading(self) -> FloatArray:
        # With a one-bar horizon the label's forward return is exactly the next-bar return.
        return self.next_return if self.next_return is not None else self.forward_return


@dataclass
class ModelOutcome:
    kind: ModelKind
    fold_metrics: list[FoldMetrics]
    oos_metrics: FoldMetrics
    trading: TradingMetrics
    fold_trading: list[TradingMetrics]
    oos_probabilities: FloatArray
    valid_probabilities: list[FloatArray]
    test_probabilities: list[FloatArray]
    temperature: float
    seconds: float
    # Chained out-of-sample equity through the engine, starting at 1.0.
    equity: FloatArray = field(default_factory=lambda: np.ones(1))
    final: FittedModel | None = None
    card: ModelCard | None = None
    onnx_bytes: bytes | None = None
    run_id: str | None = None
    version: str | None = None
    gate: GateDecision | None = None


@dataclass
class TrainResult:
    config: TrainConfig
    folds: list[TrainingFold]
    test_rows: IntArray
    oos_window: str
    outcomes: dict[ModelKind, ModelOutcome]
    baselines: dict[str, TradingMetrics]
    trading_source: str
    lineage: dict[str, str]
    champion_version: str | None = None
    baseline_fold_trading: dict[str, list[TradingMetrics]] = field(default_factory=dict)
    baseline_equity: dict[str, FloatArray] = field(default_factory=dict)
    evaluation: dict[str, str] = field(default_factory=dict)

    def comparison_rows(self) -> list[dict[str, Any]]:
        """The side-by-side out-of-sample table: models and baselines on the same test rows, after costs."""
        rows: list[dict[str, Any]] = []
        for kind, outcome in self.outcomes.items():
            rows.append({
                "model": kind.value, "version": outcome.version or "-", "log_loss": outcome.oos_metrics.log_loss,
                "accuracy": outcome.oos_metrics.accuracy,
                "balanced_accuracy": outcome.oos_metrics.balanced_accuracy,
                "roc_auc": outcome.oos_metrics.roc_auc, "ic": outcome.oos_metrics.information_coefficient,
                **outcome.trading.model_dump(), "train_seconds": outcome.seconds,
            })
        for name, metrics in self.baselines.items():
            rows.append({"model": name, "version": "-", "log_loss": float("nan"), "accuracy": float("nan"),
                         "balanced_accuracy": float("nan"), "roc_auc": float("nan"), "ic": float("nan"),
                         **metrics.model_dump(), "train_seconds": 0.0})
        return rows


def _git_commit() -> str:
    try:
        answer = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True,  # noqa: S607
                                text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return answer.stdout.strip() or "unknown"


def _stamp(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns").astype("datetime64[s]")) + "Z"


def _fit_kind(kind: ModelKind, data: TrainingData, folds: list[TrainingFold], config: TrainConfig,
              market: MarketData) -> ModelOutcome:
    started = time.perf_counter()
    params = config.lightgbm if kind is ModelKind.LIGHTGBM else config.sequence_params(kind)
    valid_p, test_p, fold_metrics = [], [], []
    model: FittedModel | None = None
    temperature = 1.0
    for fold in folds:
        model = fit_model(kind, data.features, data.labels, fold.fit, fold.valid, params, config.seed)
        raw_valid = model.predict_raw(data.features, fold.valid)
        temperature = fit_temperature(raw_valid, data.labels[fold.valid])
        valid_p.append(apply_temperature(raw_valid, temperature))
        test_p.append(apply_temperature(model.predict_raw(data.features, fold.test), temperature))
        fold_metrics.append(evaluate(data.labels[fold.test], test_p[-1], data.forward_return[fold.test]))
        log.info("%s fold %d: %s", kind.value, fold.number, fold_metrics[-1].flat())
    outcome = _outcome(kind, data, folds, config, market, valid_p, test_p, fold_metrics, temperature,
                       time.perf_counter() - started)
    outcome.final = model
    return outcome


def _outcome(kind: ModelKind, data: TrainingData, folds: list[TrainingFold], config: TrainConfig,
             market: MarketData, valid_p: list[FloatArray], test_p: list[FloatArray], fold_metrics: list[FoldMetrics],
             temperature: float, seconds: float) -> ModelOutcome:
    test_rows = np.concatenate([fold.test for fold in folds])
    oos = np.vstack(test_p)
    trading = backtest_folds(market, folds, test_p, config, kind.value)
    return ModelOutcome(
        kind=kind, fold_metrics=fold_metrics,
        oos_metrics=evaluate(data.labels[test_rows], oos, data.forward_return[test_rows]),
        trading=trading.metrics, fold_trading=trading.fold_metrics, oos_probabilities=oos,
        valid_probabilities=valid_p, test_probabilities=test_p, temperature=temperature, seconds=seconds,
        equity=trading.equity,
    )


def _ensemble(outcomes: dict[ModelKind, ModelOutcome], data: TrainingData, folds: list[TrainingFold],
              config: TrainConfig, market: MarketData) -> ModelOutcome:
    assert config.ensemble is not None  # noqa: S101 - callers check
    members = config.ensemble.members
    weights = np.asarray(config.ensemble.weights or [1.0] * len(members), dtype=np.float64)
    weights = weights / weights.sum()
    valid_p, test_p, fold_metrics = [], [], []
    temperature = 1.0
    for position, fold in enumerate(folds):
        valid = sum(w * outcomes[m].valid_probabilities[position] for w, m in zip(weights, members, strict=True))
        test = sum(w * outcomes[m].test_probabilities[position] for w, m in zip(weights, members, strict=True))
        temperature = fit_temperature(np.asarray(valid), data.labels[fold.valid])
        valid_p.append(apply_temperature(np.asarray(valid), temperature))
        test_p.append(apply_temperature(np.asarray(test), temperature))
        fold_metrics.append(evaluate(data.labels[fold.test], test_p[-1], data.forward_return[fold.test]))
    seconds = sum(outcomes[m].seconds for m in members)
    return _outcome(ModelKind.ENSEMBLE, data, folds, config, market, valid_p, test_p, fold_metrics, temperature,
                    seconds)


def _card(kind: ModelKind, model: FittedModel, data: TrainingData, config: TrainConfig,
          temperature: float) -> ModelCard:
    required = data.feature_names if data.required_features is None else data.required_features
    return ModelCard(name=config.registered_model_name, kind=kind.value, feature_names=data.feature_names,
                     feature_spec_hash=data.spec_hash, window=model.window, temperature=temperature,
                     required_features=required)


def train(data: TrainingData, config: TrainConfig, target: Any | None = None, *,
          with_artifacts: bool = True) -> TrainResult:
    """Walk-forward training and evaluation; with a RegistryTarget, also logs, registers and gates."""
    if config.ensemble is not None:
        missing = [m.value for m in config.ensemble.members if m not in config.models]
        if missing:
            raise ConfigError(f"ensemble members {missing} are not trained models {[m.value for m in config.models]}")
    folds = plan_folds(data.timestamps_ns, config)
    test_rows = np.concatenate([fold.test for fold in folds])
    market = market_data(data, config)
    outcomes: dict[ModelKind, ModelOutcome] = {}
    for kind in config.models:
        outcome = _fit_kind(kind, data, folds, config, market)
        assert outcome.final is not None  # noqa: S101 - _fit_kind always fits at least one fold
        outcome.card = _card(kind, outcome.final, data, config, outcome.temperature)
        outcome.onnx_bytes = outcome.final.to_onnx(len(data.feature_names))
        outcomes[kind] = outcome
    if config.ensemble is not None:
        outcomes[ModelKind.ENSEMBLE] = _ensemble(outcomes, data, folds, config, market)
    lineage = {
        **data.lineage, "feature_spec_hash": data.spec_hash, "git_commit": _git_commit(),
        "data_first_at": _stamp(int(data.timestamps_ns[0])), "data_last_at": _stamp(int(data.timestamps_ns[-1])),
        "rows": str(data.labels.size),
    }
    oos_window = f"{_stamp(int(data.timestamps_ns[test_rows[0]]))}..{_stamp(int(data.timestamps_ns[test_rows[-1]]))}"
    baselines = baselines_through_engine(data, market, folds, config)
    result = TrainResult(config=config, folds=folds, test_rows=test_rows, oos_window=oos_window, outcomes=outcomes,
                         evaluation=evaluation_settings(config, data, test_rows),
                         baselines={name: run.metrics for name, run in baselines.items()},
                         trading_source=TRADING_SOURCE, lineage=lineage,
                         baseline_fold_trading={name: run.fold_metrics for name, run in baselines.items()},
                         baseline_equity={name: run.equity for name, run in baselines.items()})
    if target is not None:
        from pipelines.train_tracking import log_and_register

        log_and_register(result, data, target, with_artifacts=with_artifacts)
    return result


def evaluation_settings(config: TrainConfig, data: TrainingData, test_rows: IntArray) -> dict[str, str]:
    """What a version's out-of-sample metrics depend on besides the model: the gate compares two versions
    only when every entry is equal (a changed annualisation alone scaled a Sharpe by 4.4x)."""
    rows = hashlib.sha256(data.timestamps_ns[test_rows].tobytes() + data.labels[test_rows].tobytes()).hexdigest()
    return {
        "instrument": config.instrument, "timeframe": config.timeframe,
        "labels": config.labels.model_dump_json(), "costs": config.costs.model_dump_json(),
        "trading": config.trading.model_dump_json(), "periods_per_year": str(config.periods_per_year),
        "walk_forward": config.walk_forward.model_dump_json(), "feature_spec_hash": data.spec_hash,
        "test_rows": rows[:16],
    }


def gate_against_champion(target: Any, name: str, challenger: CandidateSummary, gate: GateConfig) -> GateDecision:
    from tradeloom.adapters.registry import CHAMPION, alias_version, candidate_summary

    champion_version = alias_version(target, name, CHAMPION)
    champion = candidate_summary(target, name, champion_version) if champion_version else None
    return decide(challenger, champion, gate)


def load_config(path: Path) -> TrainConfig:
    import yaml

    from tradeloom.models.config import parse_config

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"training config {path}: cannot read YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"training config {path}: expected a mapping at the top level, got {type(raw).__name__}")
    return parse_config(raw)


def config_json(config: TrainConfig) -> str:
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


def summary_metrics(outcome: ModelOutcome) -> dict[str, float]:
    out = {f"oos_{key}": value for key, value in outcome.oos_metrics.flat().items()}
    out.update({f"oos_{key}": value for key, value in outcome.trading.model_dump().items()})
    out["train_seconds"] = outcome.seconds
    out["temperature"] = outcome.temperature
    return out


def feature_importance(outcome: ModelOutcome, names: Sequence[str]) -> dict[str, float] | None:
    if outcome.kind is ModelKind.LIGHTGBM and outcome.final is not None:
        return lightgbm_importance(outcome.final, list(names))
    return None


DEFAULT_CONFIG = Path("configs") / "direction_daily.yaml"


def train_from_db(db: Any, config: TrainConfig, target: Any | None) -> tuple[TrainResult, TrainingData]:
    from pipelines.training_data import load_training_data

    data, config = load_training_data(db, config)
    return train(data, config, target), data


def demo_train(db: Any) -> list[dict[str, Any]]:
    """The demo hook: LightGBM + LSTM on the bundled AAPL daily bars, logged and registered in the local
    MLflow, `@champion` set if there is none; returns the side-by-side out-of-sample table rows."""
    from pipelines.mlflow_server import registry_target

    config = load_config(project_root() / DEFAULT_CONFIG)
    result, _ = train_from_db(db, config, registry_target(db.settings))
    rows = result.comparison_rows()
    for row in rows:
        row["oos_window"] = result.oos_window
        row["champion"] = "@champion" if row["version"] == result.champion_version else ""
    return rows
