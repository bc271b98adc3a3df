"""MLflow tracking and model registry: log a training run, register a version, move aliases, and load
`models:/<name>@<alias>` as ONNX bytes plus its model card.

Must import in the live venv (mlflow-skinny + onnxruntime only): lightgbm, torch and mlflow's heavy
flavours are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tradeloom.errors import ConfigError, DatabaseUnavailableError
from tradeloom.models.compatibility import (
    ModelCard,
    ModelRefusedError,
    check_compatible,
    check_policy_compatible,
    parse_card,
)
from tradeloom.models.gate import EVALUATION_TAG, CandidateSummary

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
CARD_FILE = "tradeloom_model.json"
ONNX_MODEL_NAME = "onnx"


def quiet_mlflow() -> None:
    """No telemetry and no job runner: nothing may call out, and batch jobs stay small."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@dataclass(frozen=True)
class RegistryTarget:
    """Where runs and models go: a tracking URI (postgresql://... or http://...) and an artifact root."""

    tracking_uri: str
    artifact_root: Path
    experiment: str = "tradeloom"

    def client(self) -> Any:
        quiet_mlflow()
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def activate(self) -> str:
        """Point the fluent API here and return the experiment id (created with a local artifact root)."""
        quiet_mlflow()
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        client = self.client()
        try:
            experiment = client.get_experiment_by_name(self.experiment)
            if experiment is None:
                self.artifact_root.mkdir(parents=True, exist_ok=True)
                return str(client.create_experiment(self.experiment,
                                                    artifact_location=self.artifact_root.resolve().as_uri()))
        except Exception as error:
            raise DatabaseUnavailableError(f"MLflow tracking at {self.tracking_uri} unavailable: {error}") from error
        return str(experiment.experiment_id)


@dataclass
class LoggedModel:
    """One trained model to log: native object + flavour, its ONNX export and card, an input example."""

    card: ModelCard
    onnx_bytes: bytes
    native: Any
    flavour: str  # "lightgbm" or "pytorch"
    input_example: Any  # float32 array shaped like the ONNX input
    output_example: Any


@dataclass
class RunRecord:
    run_name: str
    params: Mapping[str, str | int | float]
    metrics_by_step: Sequence[tuple[int, Mapping[str, float]]]
    summary_metrics: Mapping[str, float]
    tags: Mapping[str, str]
    artifacts: Mapping[str, bytes | str] = field(default_factory=dict)
    model: LoggedModel | None = None


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    onnx_model_uri: str | None


def _pins(*packages: str) -> list[str]:
    return [f"{package}=={metadata.version(package)}" for package in packages]


def log_run(target: RegistryTarget, record: RunRecord) -> LoggedRun:
    """One MLflow run: params, per-fold metrics (step = fold), artifacts, native + ONNX models."""
    experiment_id = target.activate()
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id, run_name=record.run_name) as run:
        mlflow.log_params({key: str(value)[:6000] for key, value in record.params.items()})
        mlflow.set_tags(dict(record.tags))
        for step, metrics in record.metrics_by_step:
            mlflow.log_metrics({key: value for key, value in metrics.items() if _finite(value)}, step=step)
        mlflow.log_metrics({key: value for key, value in record.summary_metrics.items() if _finite(value)})
        with tempfile.TemporaryDirectory() as scratch:
            for name, content in record.artifacts.items():
                path = Path(scratch) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content, encoding="utf-8")
                mlflow.log_artifact(str(path), artifact_path=str(Path(name).parent) if "/" in name else None)
            onnx_uri = _log_models(record.model, Path(scratch)) if record.model else None
        return LoggedRun(run.info.run_id, onnx_uri)


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _log_models(model: LoggedModel, scratch: Path) -> str:
    import mlflow
    import onnx
    from mlflow.models import infer_signature

    signature = infer_signature(model.input_example, model.output_example)
    card_path = scratch / CARD_FILE
    card_path.write_text(model.card.model_dump_json(indent=2), encoding="utf-8")
    if model.flavour == "lightgbm":
        import mlflow.lightgbm

        mlflow.lightgbm.log_model(model.native, name="native", signature=signature,
                                  pip_requirements=_pins("lightgbm", "numpy"))
    elif model.flavour == "pytorch":
        import mlflow.pytorch

        # Pickle needs the class importable where it is loaded: pipelines.sequence_nets in the ML venv.
        mlflow.pytorch.log_model(model.native, name="native", signature=signature, serialization_format="pickle",
                                 pip_requirements=_pins("torch", "numpy"))
    else:
        raise ConfigError(f"model flavour {model.flavour!r} unknown; expected lightgbm or pytorch")
    import mlflow.onnx

    info = mlflow.onnx.log_model(
        onnx.load_from_string(model.onnx_bytes), name=ONNX_MODEL_NAME, signature=signature,
        input_example=model.input_example, pip_requirements=_pins("onnxruntime", "numpy"),
        metadata={"tradeloom": model.card.model_dump(mode="json")}, extra_files=[str(card_path)],
        save_as_external_data=False, onnx_execution_providers=["CPUExecutionProvider"],
    )
    return str(info.model_uri)


# -- registry ---------------------------------------------------------------------------------------------

DIRECTION_MODEL_DESCRIPTION = "tradeloom direction model (down/flat/up), ONNX served"


def register_version(target: RegistryTarget, name: str, model_uri: str, run_id: str,
                     tags: Mapping[str, str], description: str = DIRECTION_MODEL_DESCRIPTION) -> str:
    """A new version of the strategy's registered model; it also becomes `@challenger`.

    `description` is given to the registered model when this call creates it, and to the version."""
    client = target.client()
    try:
        client.get_registered_model(name)
    except Exception:  # mlflow raises RestException/MlflowException for a missing model
        client.create_registered_model(name, description=description)
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=dict(tags),
                                          description=description)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


def set_alias(target: RegistryTarget, name: str, alias: str, version: str) -> None:
    target.client().set_registered_model_alias(name, alias, version)


def alias_version(target: RegistryTarget, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the model or alias does not exist."""
    try:
        return str(target.client().get_model_version_by_alias(name, alias).version)
    except Exception:  # missing model or alias
        return None


def version_tags(target: RegistryTarget, name: str, version: str) -> dict[str, str]:
    return dict(target.client().get_model_version(name, version).tags)


def candidate_summary(target: RegistryTarget, name: str, version: str) -> CandidateSummary:
    tags = version_tags(target, name, version)
    try:
        return CandidateSummary(version=version, oos_window=tags["oos_window"], sharpe=float(tags["oos_sharpe"]),
                                max_drawdown=float(tags["oos_max_drawdown"]), log_loss=float(tags["oos_log_loss"]),
                                evaluation={key.removeprefix(EVALUATION_TAG): value for key, value in tags.items()
                                            if key.startswith(EVALUATION_TAG)})
    except (KeyError, ValueError) as error:
        raise ConfigError(
            f"model {name} version {version} lacks gate tags (oos_window, oos_sharpe, oos_max_drawdown, "
            f"oos_log_loss): {error}"
        ) from error


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    card: ModelCard
    onnx_bytes: bytes


def load_onnx(target: RegistryTarget, name: str, alias: str = CHAMPION) -> LoadedModel:
    """Download `models:/<name>@<alias>` and return its ONNX bytes and card; refuse anything incomplete."""
    version = alias_version(target, name, alias)
    if version is None:
        raise ModelRefusedError(f"registered model {name!r} has no alias @{alias} at {target.tracking_uri}")
    quiet_mlflow()
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as scratch:
        try:
            # Resolve the source through our client: `models:/name/1` alone would use the process-wide
            # registry URI, which may point elsewhere (or at a store mlflow-skinny cannot open).
            source = target.client().get_model_version_download_uri(name, version)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=scratch,
                                                             tracking_uri=target.tracking_uri))
        except Exception as error:
            raise ModelRefusedError(
                f"model {name!r} version {version}: artifacts failed to download: {error}"
            ) from error
        onnx_files = sorted(local.glob("*.onnx"))
        cards = sorted(local.rglob(CARD_FILE))  # mlflow keeps extra files under extra_files/
        card_file = cards[0] if cards else local / CARD_FILE
        if not onnx_files or not card_file.exists():
            found = sorted(path.name for path in local.iterdir())
            raise ModelRefusedError(
                f"model {name!r} version {version}: expected an .onnx file and {CARD_FILE}, found {found}"
            )
        try:
            card = parse_card(json.loads(card_file.read_text(encoding="utf-8")))
        except json.JSONDecodeError as error:
            raise ModelRefusedError(
                f"model {name!r} version {version}: {CARD_FILE} is not JSON: {error}"
            ) from error
        return LoadedModel(name, version, card, onnx_files[0].read_bytes())


def load_scorer(target: RegistryTarget, name: str, feature_names: Sequence[str], spec_hash: str,
                alias: str = CHAMPION) -> tuple[LoadedModel, Any]:
    """The served model and its scorer, after the feature spec and signature checks (raise ModelRefusedError).

    A sizing policy (`output_kind="target_weight"`) is checked against the online features followed by the
    portfolio state features; read it with `raw_probabilities`, never `predict_proba`."""
    from tradeloom.adapters.onnx_model import OnnxScorer

    loaded = load_onnx(target, name, alias)
    if loaded.card.output_kind == "target_weight":
        check_policy_compatible(loaded.card, tuple(feature_names), spec_hash)
    else:
        check_compatible(loaded.card, tuple(feature_names), spec_hash)
    return loaded, OnnxScorer(loaded.onnx_bytes, loaded.card)
