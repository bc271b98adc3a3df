"""`tradeloom ui --stop` semantics: whole process groups stopped, state file removed; the Airflow env."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pipelines.ui import Service, _group_alive, airflow_environment, read_state, stop_ui, write_state
from tradeloom.settings import PipelineSettings, project_root


def _group_with_child() -> subprocess.Popen[bytes]:
    """A leader in a new session that spawns a grandchild: both must die with the group."""
    code = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_stop_ui_kills_each_recorded_group_and_forgets_it(tmp_path: Path) -> None:
    settings = PipelineSettings(home=tmp_path)
    first, second = _group_with_child(), _group_with_child()
    time.sleep(0.5)
    write_state(settings, [Service("mlflow", first.pid, "http://127.0.0.1:1", "a.log"),
                           Service("airflow", second.pid, "http://127.0.0.1:2", "b.log")])
    assert read_state(settings)[1].name == "airflow"
    stopped = stop_ui(settings)
    assert stopped == ["mlflow", "airflow"]
    for process in (first, second):
        process.wait(timeout=10)
        assert not _group_alive(process.pid)
    assert read_state(settings) == []
    assert stop_ui(settings) == []


def test_airflow_environment_small_workers_repo_dags_and_airflow_database(tmp_path: Path) -> None:
    settings = PipelineSettings(home=tmp_path)
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "port").write_text("5999\n", encoding="utf-8")
    env = airflow_environment(settings, 8123, base={"PATH": "/usr/bin"})
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4" and env["AIRFLOW__API__WORKERS"] == "1"
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(project_root() / "dags")
    assert env["PATH"].startswith(str(tmp_path / "venv-airflow" / "bin"))
    assert "/airflow?" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] and "port=5999" in env[
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__API__PORT"] == "8123"
