"""Log a TrainResult to MLflow: one run per model (the ensemble's run carries metrics only), every base
model registered as a new version of the strategy's model, `@challenger` on the newest, `@champion` set
only when there is none yet or when automatic promotion is on and the gate passes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from tradeloom.adapters.registry import (
    CHAMPION,
    LoggedModel,
    RegistryTarget,
    RunRecord,
    alias_version,
    log_run,
    register_version,
    set_alias,
)
from tradeloom.models.config import ModelKind
from tradeloom.models.gate import EVALUATION_TAG, CandidateSummary

if TYPE_CHECKING:
    from pipelines.train import ModelOutcome, TrainingData, TrainResult

log = logging.getLogger(__name__)


def _params(result: TrainResult, kind: ModelKind) -> dict[str, str | int | float]:
    from pipelines.train import config_json

    config = result.config
    params: dict[str, str | int | float] = {
        "model_kind": kind.value, "seed": config.seed, "instrument": config.instrument,
        "timeframe": config.timeframe, "label_horizon": config.labels.horizon,
        "flat_threshold": config.labels.flat_threshold, "purge": config.effective_purge,
        "embargo": config.walk_forward.embargo, "train_size": config.walk_forward.train_size,
        "test_size": config.walk_forward.test_size, "folds": len(result.folds),
        "cost_bps": config.costs.cost_bps, "config_json": config_json(config),
    }
    if kind is ModelKind.LIGHTGBM:
        params.update({f"lgb_{k}": v for k, v in config.lightgbm.model_dump().items()})
    elif kind in (ModelKind.LSTM, ModelKind.TRANSFORMER):
        params.update({f"seq_{k}": v for k, v in config.sequence_params(kind).model_dump().items()})
    return params


def _tags(result: TrainResult, outcome: ModelOutcome) -> dict[str, str]:
    tags = {f"lineage_{key}": value for key, value in result.lineage.items()}
    tags.update({
        "model_kind": outcome.kind.value, "oos_window": result.oos_window, "trading_source": result.trading_source,
        "oos_sharpe": repr(outcome.trading.sharpe), "oos_max_drawdown": repr(outcome.trading.max_drawdown),
        "oos_log_loss": repr(outcome.oos_metrics.log_loss), "oos_accuracy": repr(outcome.oos_metrics.accuracy),
        "feature_spec_hash": result.lineage["feature_spec_hash"],
    })
    tags.update({f"{EVALUATION_TAG}{key}": value for key, value in result.evaluation.items()})
    for number, metrics in enumerate(outcome.fold_metrics):
        tags[f"fold_{number}_log_loss"] = f"{metrics.log_loss:.5f}"
        tags[f"fold_{number}_balanced_accuracy"] = f"{metrics.balanced_accuracy:.5f}"
        tags[f"fold_{number}_sharpe"] = f"{outcome.fold_trading[number].sharpe:.5f}"
    return tags


def _logged_model(outcome: ModelOutcome, data: TrainingData, rows: np.ndarray) -> LoggedModel:
    assert outcome.final is not None and outcome.card is not None and outcome.onnx_bytes is not None  # noqa: S101
    example = outcome.final.onnx_input(data.features, rows)
    return LoggedModel(card=outcome.card, onnx_bytes=outcome.onnx_bytes, native=outcome.final.native,
                       flavour="lightgbm" if outcome.kind is ModelKind.LIGHTGBM else "pytorch",
                       input_example=example,
                       output_example=outcome.final.predict_raw(data.features, rows).astype(np.float32))


def log_and_register(result: TrainResult, data: TrainingData, target: RegistryTarget, *,
                     with_artifacts: bool = True) -> None:
    from pipelines.train import summary_metrics
    from pipelines.train_reports import build_artifacts

    name = result.config.registered_model_name
    example_rows = result.test_rows[:2]
    candidates: list[tuple[ModelOutcome, CandidateSummary]] = []
    for kind, outcome in result.outcomes.items():
        fold_steps = [
            (number, {**metrics.flat(),
                      **{f"trading_{k}": v for k, v in outcome.fold_trading[number].model_dump().items()}})
            for number, metrics in enumerate(outcome.fold_metrics)
        ]
        record = RunRecord(
            run_name=f"{result.config.strategy}-{kind.value}", params=_params(result, kind),
            metrics_by_step=fold_steps, summary_metrics=summary_metrics(outcome), tags=_tags(result, outcome),
            artifacts=build_artifacts(result, outcome, data) if with_artifacts else {},
            model=None if kind is ModelKind.ENSEMBLE else _logged_model(outcome, data, example_rows),
        )
        logged = log_run(target, record)
        outcome.run_id = logged.run_id
        if logged.onnx_model_uri is None:
            continue
        outcome.version = register_version(target, name, logged.onnx_model_uri, logged.run_id, _tags(result, outcome))
        candidates.append((outcome, CandidateSummary(
            version=outcome.version, oos_window=result.oos_window, sharpe=outcome.trading.sharpe,
            max_drawdown=outcome.trading.max_drawdown, log_loss=outcome.oos_metrics.log_loss,
            evaluation=result.evaluation)))
    _gate_and_promote(result, target, name, candidates)


def _gate_and_promote(result: TrainResult, target: RegistryTarget, name: str,
                      candidates: list[tuple[ModelOutcome, CandidateSummary]]) -> None:
    from pipelines.train import gate_against_champion

    if not candidates:
        return
    champion = alias_version(target, name, CHAMPION)
    if champion is None:
        # Bootstrap: with no champion the executor has nothing to serve; the best candidate starts.
        best = max(candidates, key=lambda item: item[1].sharpe)
        set_alias(target, name, CHAMPION, best[1].version)
        log.info("no champion: version %s (%s) becomes @champion", best[1].version, best[0].kind.value)
        result.champion_version = best[1].version
        return
    for outcome, summary in candidates:
        outcome.gate = gate_against_champion(target, name, summary, result.config.gate)
    result.champion_version = champion
    if result.config.gate.auto_promote:
        passing = [(o, s) for o, s in candidates if o.gate is not None and o.gate.promotable]
        if passing:
            best = max(passing, key=lambda item: item[1].sharpe)
            set_alias(target, name, CHAMPION, best[1].version)
            result.champion_version = best[1].version
