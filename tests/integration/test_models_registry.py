"""MLflow tracking + registry on the local PostgreSQL: logging, registration, aliases, ONNX loading,
refusal of incompatible models, the promotion gate (CLI), and loading the champion from the live venv."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines.mlflow_server import start_server
from pipelines.train import TrainResult, train
from tests.unit.models.planted import planted_data, small_config
from tradeloom.adapters.pgcluster import LocalCluster
from tradeloom.adapters.registry import (
    CHALLENGER,
    CHAMPION,
    RegistryTarget,
    alias_version,
    load_onnx,
    load_scorer,
    version_tags,
)
from tradeloom.models.compatibility import ModelRefusedError
from tradeloom.models.config import ModelKind
from tradeloom.settings import PipelineSettings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def mlflow_target(test_settings: PipelineSettings,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryTarget]:
    """A private MLflow database on the local cluster and artifacts under a tmp path."""
    cluster = LocalCluster(test_settings.pg_dir)
    cluster.up()
    name = f"mlflow_test_{os.getpid()}"
    cluster.psql(f"drop database if exists {name} with (force)")
    cluster.psql(f"create database {name} owner tradeloom_owner")
    yield RegistryTarget(cluster.sqlalchemy_url("tradeloom_owner", name), tmp_path_factory.mktemp("mlartifacts"))
    cluster.psql(f"drop database if exists {name} with (force)")


CONFIG = {"strategy": "planted", "models": ["lightgbm", "lstm"], "ensemble": {"members": ["lightgbm", "lstm"]}}


@pytest.fixture(scope="module")
def first_run(mlflow_target: RegistryTarget) -> TrainResult:
    return train(planted_data(), small_config(**CONFIG), mlflow_target)


def test_train_logged_run_has_fold_metrics_artifacts_and_lineage(
    mlflow_target: RegistryTarget, first_run: TrainResult
) -> None:
    client = mlflow_target.client()
    outcome = first_run.outcomes[ModelKind.LIGHTGBM]
    assert outcome.run_id is not None
    history = client.get_metric_history(outcome.run_id, "log_loss")
    assert sorted(m.step for m in history) == list(range(len(first_run.folds)))
    run = client.get_run(outcome.run_id)
    assert run.data.metrics["oos_log_loss"] == pytest.approx(outcome.oos_metrics.log_loss)
    assert run.data.tags["lineage_feature_spec_hash"] == "planted-spec-v1"
    assert len(run.data.tags["lineage_git_commit"]) >= 7
    assert json.loads(run.data.params["config_json"])["seed"] == 11
    paths = {a.path for a in client.list_artifacts(outcome.run_id)} | {
        a.path for folder in ("plots", "evaluation") for a in client.list_artifacts(outcome.run_id, folder)}
    assert {"tearsheet.html", "plots/equity_curve.png", "plots/calibration.png",
            "evaluation/confusion_matrix.json", "evaluation/feature_importance.json"} <= paths
    # The ensemble is tracked too, with metrics but no registered model.
    ensemble = first_run.outcomes[ModelKind.ENSEMBLE]
    assert ensemble.run_id is not None and ensemble.version is None


def test_train_registers_versions_sets_challenger_and_bootstraps_champion(
    mlflow_target: RegistryTarget, first_run: TrainResult
) -> None:
    name = first_run.config.registered_model_name
    versions = {first_run.outcomes[k].version for k in (ModelKind.LIGHTGBM, ModelKind.LSTM)}
    assert versions == {"1", "2"}
    assert alias_version(mlflow_target, name, CHALLENGER) == "2"
    champion = alias_version(mlflow_target, name, CHAMPION)
    best = max((first_run.outcomes[k] for k in (ModelKind.LIGHTGBM, ModelKind.LSTM)), key=lambda o: o.trading.sharpe)
    assert champion == best.version == first_run.champion_version
    tags = version_tags(mlflow_target, name, "1")
    assert tags["oos_window"] == first_run.oos_window and "fold_0_log_loss" in tags
    # The gate reads the engine's after-cost metrics.
    assert tags["trading_source"] == "engine"
    registered = next(o for o in first_run.outcomes.values() if o.version == "1")
    assert float(tags["oos_sharpe"]) == registered.trading.sharpe
    assert float(tags["oos_max_drawdown"]) == registered.trading.max_drawdown
    assert "direction model" in (mlflow_target.client().get_registered_model(name).description or "")


def test_load_champion_onnx_matches_native_calibrated_probabilities(
    mlflow_target: RegistryTarget, first_run: TrainResult
) -> None:
    data = planted_data()
    loaded, scorer = load_scorer(mlflow_target, first_run.config.registered_model_name, data.feature_names,
                                 data.spec_hash)
    outcome = next(o for o in first_run.outcomes.values() if o.version == loaded.version)
    assert outcome.final is not None
    rows = first_run.test_rows
    native = outcome.final.predict_raw(data.features, rows)
    from tradeloom.models.calibration import apply_temperature

    expected = apply_temperature(native, outcome.temperature)
    got = scorer.predict_proba(outcome.final.onnx_input(data.features, rows))
    assert np.max(np.abs(got - expected)) < 1e-5


def test_load_scorer_other_spec_hash_or_features_refused(mlflow_target: RegistryTarget, first_run: TrainResult) -> None:
    data = planted_data()
    name = first_run.config.registered_model_name
    with pytest.raises(ModelRefusedError, match="feature_spec_hash"):
        load_scorer(mlflow_target, name, data.feature_names, "another-spec")
    with pytest.raises(ModelRefusedError, match="feature_names differ"):
        load_scorer(mlflow_target, name, data.feature_names[::-1], data.spec_hash)
    with pytest.raises(ModelRefusedError, match="no alias @nonexistent"):
        load_onnx(mlflow_target, name, "nonexistent")


def _promote(mlflow_target: RegistryTarget, cli_env: dict[str, str], tmp_path: Path, version: str,
             gate: dict[str, float]) -> subprocess.CompletedProcess[str]:
    config = dict(CONFIG, strategy="planted", gate=gate)
    path = tmp_path / "workflow.yaml"
    base = small_config(**config).model_dump(mode="json")
    path.write_text(yaml.safe_dump(base), encoding="utf-8")
    env = dict(cli_env, TRADELOOM_MLFLOW_TRACKING_URI=mlflow_target.tracking_uri)
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "promote", "--config", str(path), "--version",
                           version], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_promote_gate_prints_comparison_and_moves_champion_only_when_passed(
    mlflow_target: RegistryTarget, first_run: TrainResult, cli_env: dict[str, str], tmp_path: Path
) -> None:
    name = first_run.config.registered_model_name
    champion = alias_version(mlflow_target, name, CHAMPION)
    other = "2" if champion == "1" else "1"
    # `other` has the lower Sharpe (the champion was the best): an impossible margin must refuse it.
    refused = _promote(mlflow_target, cli_env, tmp_path, other, {"min_sharpe_improvement": 5.0})
    assert refused.returncode == 2, refused.stderr
    assert "sharpe after costs" in refused.stdout and "fail" in refused.stdout
    assert "not promoted" in refused.stderr
    assert alias_version(mlflow_target, name, CHAMPION) == champion
    # Generous margins let it through; the alias moves.
    passed = _promote(mlflow_target, cli_env, tmp_path, other,
                      {"min_sharpe_improvement": -100.0, "max_drawdown_tolerance": 1.0, "max_log_loss_increase": 10.0})
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert alias_version(mlflow_target, name, CHAMPION) == other
    # Put the original champion back for the tests that follow.
    from tradeloom.adapters.registry import set_alias

    set_alias(mlflow_target, name, CHAMPION, champion or "1")


def test_second_training_run_gated_against_champion_on_same_window(
    mlflow_target: RegistryTarget, first_run: TrainResult
) -> None:
    second = train(planted_data(), small_config(strategy="planted", seed=12), mlflow_target, with_artifacts=False)
    outcome = second.outcomes[ModelKind.LIGHTGBM]
    assert outcome.version == "3"
    assert outcome.gate is not None and outcome.gate.checks
    assert alias_version(mlflow_target, second.config.registered_model_name, CHALLENGER) == "3"
    # Automatic promotion is off by default: the champion stays.
    assert alias_version(mlflow_target, second.config.registered_model_name, CHAMPION) == first_run.champion_version


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_live_venv_loads_champion_through_mlflow_server(
    mlflow_target: RegistryTarget, first_run: TrainResult, tmp_path: Path
) -> None:
    live_python = ROOT / ".loom" / "venv-live" / "bin" / "python"
    assert live_python.exists(), "the live venv is part of `make setup`"
    server = start_server(mlflow_target, _free_port(), tmp_path / "mlflow.log")
    try:
        data = planted_data()
        windows = first_run.outcomes[ModelKind.LSTM].final.onnx_input(  # type: ignore[union-attr]
            data.features, first_run.test_rows[:5])
        np.save(tmp_path / "windows.npy", windows)
        script = (
            "import json, sys, numpy as np\n"
            "from pathlib import Path\n"
            "from tradeloom.adapters.registry import RegistryTarget, load_scorer\n"
            f"target = RegistryTarget({server.url!r}, Path({str(mlflow_target.artifact_root)!r}))\n"
            f"loaded, scorer = load_scorer(target, 'tradeloom-planted', {list(data.feature_names)!r}, "
            f"{data.spec_hash!r})\n"
            "x = np.load(sys.argv[1])\n"
            "x = x if scorer.window > 1 else x[:, -1, :]\n"
            "print(json.dumps({'version': loaded.version, 'p': scorer.predict_proba(x).tolist()}))\n"
        )
        answer = subprocess.run([str(live_python), "-c", script, str(tmp_path / "windows.npy")], cwd=ROOT,
                                capture_output=True, text=True, timeout=120, check=False,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        server.stop()
    assert answer.returncode == 0, answer.stderr[-3000:]
    out = json.loads(answer.stdout.strip().splitlines()[-1])
    assert out["version"] == first_run.champion_version
    probabilities = np.array(out["p"])
    assert probabilities.shape == (5, 3) and np.allclose(probabilities.sum(axis=1), 1.0)
