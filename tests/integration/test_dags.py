"""DAG integrity: Airflow's DagBag (in .loom/venv-airflow) loads every DAG in dags/ without import errors,
and each has tags, retries with back-off, the failure e-mail, explicit catchup and a tz-aware start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.airflow_support import AIRFLOW_VENV, DAGS, dagbag_report

EXPECTED_DAGS = {"premarket", "market_data_ingest", "build_features", "train_and_register", "drift_check",
                 "daily_report"}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not (AIRFLOW_VENV / "python").exists():
        pytest.fail(f"{AIRFLOW_VENV} missing: run `make setup`")
    home = tmp_path_factory.mktemp("airflow-home")
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS), "DO_NOT_TRACK": "1"})
    return dagbag_report(env)


def test_dagbag_every_file_imports_without_errors(dagbag: dict[str, Any]) -> None:
    assert dagbag["import_errors"] == {}


def test_dagbag_holds_the_six_dags_one_per_file(dagbag: dict[str, Any]) -> None:
    assert set(dagbag["dags"]) == EXPECTED_DAGS
    files = {Path(dag["fileloc"]).name for dag in dagbag["dags"].values()}
    assert files == {f"{dag_id}.py" for dag_id in EXPECTED_DAGS}


def test_dagbag_each_dag_tagged_catchup_explicit_tz_aware(dagbag: dict[str, Any]) -> None:
    for dag_id, dag in dagbag["dags"].items():
        assert "tradeloom" in dag["tags"] and len(dag["tags"]) >= 2, dag_id
        assert dag["catchup"] is False, dag_id
        assert dag["start_tz"] not in (None, "None"), dag_id
        assert dag["timezone"] == "Asia/Kolkata", dag_id


def test_dagbag_each_task_retries_with_backoff_and_emails_on_failure(dagbag: dict[str, Any]) -> None:
    for dag_id, dag in dagbag["dags"].items():
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 1, f"{dag_id}.{task_id}"  # TRADELOOM_DAG_RETRIES unset here
            assert task["backoff"], f"{dag_id}.{task_id}"
            assert task["callbacks"] == ["SmtpNotifier:smtp_default"], f"{dag_id}.{task_id}"


def test_dagbag_pipeline_tasks_run_in_the_ml_venv(dagbag: dict[str, Any]) -> None:
    operators = {op for dag in dagbag["dags"].values() for op in (t["operator"] for t in dag["tasks"].values())}
    assert "_PythonExternalDecoratedOperator" in operators
    for dag_id in ("train_and_register", "drift_check"):
        assert {t["operator"] for t in dagbag["dags"][dag_id]["tasks"].values()} == {
            "_PythonExternalDecoratedOperator"}


def test_dagbag_dag_files_import_nothing_heavy_at_top_level() -> None:
    heavy = ("pandas", "torch", "mlflow", "evidently", "great_expectations", "dbt", "lightgbm", "pipelines",
             "tradeloom.adapters")
    for path in DAGS.glob("*.py"):
        top = [line for line in path.read_text(encoding="utf-8").splitlines()
               if line.startswith(("import ", "from "))]
        for line in top:
            assert not any(f" {name}" in line.split(" import ")[0] for name in heavy), f"{path.name}: {line}"
