"""Running Airflow 3 from the ML venv's tests: a private metadata database, `airflow dags test` as a
subprocess of `.loom/venv-airflow`, and reads of task states and XComs from the metadata tables."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

from tradeloom.adapters.pgcluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_VENV = ROOT / ".loom" / "venv-airflow" / "bin"
DAGS = ROOT / "dags"


@dataclass(frozen=True)
class AirflowRun:
    dag_id: str
    returncode: int
    output: str
    states: dict[str, str]
    xcoms: dict[str, Any]


@dataclass(frozen=True)
class AirflowHarness:
    cluster: LocalCluster
    metadata_db: str
    env: dict[str, str]

    def migrate(self) -> None:
        done = subprocess.run([str(AIRFLOW_VENV / "airflow"), "db", "migrate"], env=self.env, capture_output=True,
                              text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed: {done.stderr[-3000:]}")
        # Concurrent `dags test` runs would race to insert the same DAG rows: serialise them once first.
        done = subprocess.run([str(AIRFLOW_VENV / "airflow"), "dags", "reserialize"], env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"airflow dags reserialize failed: {done.stderr[-3000:]}")

    def start_dags_test(self, dag_id: str, logical_date: str, conf: dict[str, Any] | None = None
                        ) -> subprocess.Popen[str]:
        args = [str(AIRFLOW_VENV / "airflow"), "dags", "test", dag_id, logical_date]
        if conf:
            args += ["--conf", json.dumps(conf)]
        return subprocess.Popen(args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=ROOT)

    def finish(self, dag_id: str, process: subprocess.Popen[str], timeout: float = 600) -> AirflowRun:
        output, _ = process.communicate(timeout=timeout)
        states, xcoms = self.latest_run(dag_id)
        return AirflowRun(dag_id, process.returncode, output, states, xcoms)

    def latest_run(self, dag_id: str) -> tuple[dict[str, str], dict[str, Any]]:
        """Task states and return values of the DAG's newest run (mapped tasks as task_id[index])."""
        conn = psycopg2.connect(self.cluster.url("tradeloom_owner", self.metadata_db))
        try:
            with conn, conn.cursor() as cur:
                cur.execute("select run_id from dag_run where dag_id = %s order by id desc limit 1", (dag_id,))
                row = cur.fetchone()
                if row is None:
                    return {}, {}
                cur.execute("select task_id, map_index, state from task_instance where dag_id = %s and run_id = %s",
                            (dag_id, row[0]))
                states = {(t if m < 0 else f"{t}[{m}]"): str(s) for t, m, s in cur.fetchall()}
                cur.execute("select task_id, map_index, value from xcom where dag_id = %s and run_id = %s "
                            "and key = 'return_value'", (dag_id, row[0]))
                xcoms = {(t if m < 0 else f"{t}[{m}]"): v for t, m, v in cur.fetchall()}
        finally:
            conn.close()
        return states, xcoms


def harness(cluster: LocalCluster, metadata_db: str, home: Path, extra_env: dict[str, str]) -> AirflowHarness:
    cluster.psql(f"drop database if exists {metadata_db} with (force)")
    cluster.psql(f"create database {metadata_db} owner tradeloom_owner")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTEST"))}
    env.update({
        "PATH": f"{AIRFLOW_VENV}:{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cluster.sqlalchemy_url("tradeloom_owner", metadata_db),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "TRADELOOM_DAG_RETRIES": "0",  # a failing task fails the run at once instead of backing off
        "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        **extra_env,
    })
    return AirflowHarness(cluster, metadata_db, env)


def dagbag_report(env: dict[str, str]) -> dict[str, Any]:
    """Parse dags/ with Airflow's DagBag in the Airflow venv; import errors and each DAG's settings as JSON."""
    script = f"""
import json, sys
sys.path.append({str(DAGS)!r})  # Airflow's bundle DagBag puts the dags folder on sys.path the same way
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(DAGS)!r})
out = {{"import_errors": {{k: str(v)[-500:] for k, v in bag.import_errors.items()}}, "dags": {{}}}}
for dag in bag.dags.values():
    callbacks = []
    for t in dag.tasks:
        cb = t.on_failure_callback
        cb = cb if isinstance(cb, list) else [cb] if cb else []
        callbacks.append([type(c).__name__ + ":" + str(getattr(c, "smtp_conn_id", "")) for c in cb])
    out["dags"][dag.dag_id] = {{
        "fileloc": dag.fileloc, "tags": sorted(dag.tags), "catchup": dag.catchup,
        "start_tz": str(dag.start_date.tzinfo) if dag.start_date else None,
        "timezone": str(dag.timezone), "schedule": type(dag.timetable).__name__,
        "tasks": {{t.task_id: {{"retries": t.retries, "backoff": bool(t.retry_exponential_backoff),
                                "callbacks": callbacks[i], "operator": type(t).__name__}}
                  for i, t in enumerate(dag.tasks)}},
    }}
print("DAGBAG-JSON " + json.dumps(out))
"""
    done = subprocess.run([str(AIRFLOW_VENV / "python"), "-c", script], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("DAGBAG-JSON ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"DagBag script failed ({done.returncode}): {done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("DAGBAG-JSON "))
    return report
