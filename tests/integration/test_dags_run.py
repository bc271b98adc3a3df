"""Every DAG end to end with `airflow dags test` (no scheduler) against the local TimescaleDB (the test
database), a private Airflow metadata database, a private MLflow registry and a real SMTP server.

Independent DAGs run concurrently in three phases to keep the suite short; each test then checks one DAG.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.smtp_capture import Capture, captured_smtp
from tests.integration.airflow_support import AirflowRun, harness
from tests.integration.monitoring_support import STRATEGY, clear_journal, load_aapl, write_journal
from tradeloom.adapters.db import Database
from tradeloom.settings import project_root

HOLIDAY = "2024-03-08"  # Mahashivratri: NSE closed
SESSION = "2024-03-05"
RECIPIENTS = ["quant@example.test", "ops@example.test"]
ALERT_TO = "oncall@example.test"


def _tiny_train_config(path: Path) -> Path:
    config = yaml.safe_load((project_root() / "configs" / "direction_daily.yaml").read_text(encoding="utf-8"))
    config.update(models=["lightgbm"], ensemble=None)
    config["lightgbm"].update(n_estimators=25, early_stopping_rounds=5)
    config["walk_forward"].update(train_size=500, test_size=500)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class Runs:
    def __init__(self, runs: dict[str, AirflowRun], inbox: Capture, tmp: Path, day_end: datetime) -> None:
        self.runs, self.inbox, self.tmp, self.day_end = runs, inbox, tmp, day_end

    def ok(self, name: str) -> AirflowRun:
        run = self.runs[name]
        assert run.returncode == 0, f"{name} exited {run.returncode}:\n{run.output[-6000:]}"
        assert run.states, f"{name}: no run recorded\n{run.output[-4000:]}"
        bad = {task: state for task, state in run.states.items() if state not in ("success", "skipped")}
        assert not bad, f"{name}: {bad}\n{run.output[-8000:]}"
        return run


@pytest.fixture(scope="module")
def dag_runs(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    tmp = tmp_path_factory.mktemp("dag-runs")
    last_bar = load_aapl(database)
    day_end = (last_bar + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    clear_journal(database)
    write_journal(database, day_end, prophetic=True, slippage_bps=2.0, fill_fraction=1.0)
    with captured_smtp() as inbox:
        smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": inbox.port,
                "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.test",
                          "retry_limit": 0, "timeout": 10}}
        airflow = harness(database.cluster, f"airflow_test_{os.getpid()}", tmp / "airflow-home", {
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp),
            "AIRFLOW_VAR_TRADELOOM_ALERT_EMAIL": ALERT_TO,
            "TRADELOOM_DATABASE_NAME": database.settings.database_name,
            "TRADELOOM_HOME": str(database.settings.home),
            "TRADELOOM_MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'registry.db'}",
            "TRADELOOM_PREMARKET_HEALTH_DIR": str(tmp / "health"),
            "TRADELOOM_PREMARKET_REGISTERED_MODEL": "tradeloom-premarket_probe",
            "TRADELOOM_DRIFT_REPORT_DIR": str(tmp / "reports"),
            "TRADELOOM_DRIFT_MIN_DECISIONS": "5",
            "TRADELOOM_REPORT_REPORT_DIR": str(tmp / "reports"),
            "TRADELOOM_REPORT_RECIPIENTS": json.dumps(RECIPIENTS),
            "TRADELOOM_REPORT_SENDER": "tradeloom@example.test",
            "TRADELOOM_SYNTHETIC_INSTRUMENTS": "2",
        })
        airflow.migrate()
        day = 24 * 60
        runs: dict[str, AirflowRun] = {}
        phases: list[dict[str, tuple[str, str, dict[str, Any] | None]]] = [
            {"premarket_holiday": ("premarket", HOLIDAY, None),
             "market_data_ingest": ("market_data_ingest", SESSION, {"window_minutes": day}),
             "train_and_register": ("train_and_register", SESSION,
                                    {"train_config": str(_tiny_train_config(tmp / "tiny.yaml"))})},
            {"premarket_session": ("premarket", SESSION, None),
             "build_features": ("build_features", SESSION, {"window_minutes": day}),
             "drift_check": ("drift_check", day_end.isoformat(), None)},
            {"daily_report": ("daily_report", (day_end - timedelta(days=1)).date().isoformat(), None),
             "market_data_ingest_bad_source": ("market_data_ingest", SESSION, {"source": "no_such_source"})},
        ]
        for phase in phases:
            started = {name: airflow.start_dags_test(dag_id, date, conf)
                       for name, (dag_id, date, conf) in phase.items()}
            for name, process in started.items():
                runs[name] = airflow.finish(phase[name][0], process)
        yield Runs(runs, inbox, tmp, day_end)
    database.cluster.psql(f"drop database if exists airflow_test_{os.getpid()} with (force)")


def test_premarket_holiday_short_circuits_checks(dag_runs: Runs) -> None:
    run = dag_runs.ok("premarket_holiday")
    assert run.xcoms["session_check"]["is_session"] is False
    assert run.states["health_checks"] == "skipped" and run.states["alert_if_red"] == "skipped"


def test_premarket_session_without_champion_writes_red_flag_and_emails(dag_runs: Runs) -> None:
    run = dag_runs.ok("premarket_session")
    assert run.states["health_checks"] == "success" and run.xcoms["alert_if_red"] == "red"
    flag = json.loads((dag_runs.tmp / "health" / "premarket.json").read_text(encoding="utf-8"))
    assert flag["session_date"] == SESSION and flag["status"] == "red"
    assert flag["checks"]["database"]["ok"] and flag["checks"]["mlflow"]["ok"]
    assert not flag["checks"]["champion"]["ok"] and "premarket_probe" in flag["checks"]["champion"]["detail"]
    alerts = [m for m in dag_runs.inbox.messages if ALERT_TO in m.recipients and b"premarket RED" in m.content]
    assert alerts, "no premarket alert e-mail arrived"
    message = BytesParser(policy=policy.default).parsebytes(alerts[-1].content)
    assert f"premarket RED for {SESSION}" in message["Subject"]


def test_market_data_ingest_lands_and_validates_the_interval(dag_runs: Runs, database: Database) -> None:
    run = dag_runs.ok("market_data_ingest")
    ingested = run.xcoms["ingest"]
    assert ingested["rows"] > 0 and ingested["inserted"] + ingested["unchanged"] == ingested["rows"]
    assert run.xcoms["validate"]["status"] == "passed" and run.xcoms["validate"]["rows_checked"] > 0
    with database.transaction() as conn, conn.cursor() as cur:
        cur.execute("select count(*) from bars_1m where bar_at >= '2024-03-04' and bar_at < '2024-03-05'")
        row = cur.fetchone()
    assert row is not None and row[0] == ingested["rows"]


def test_build_features_maps_one_task_per_group(dag_runs: Runs) -> None:
    run = dag_runs.ok("build_features")
    groups = run.xcoms["groups"]
    assert ["1m"] in groups and ["1d"] in groups
    built = [value for key, value in run.xcoms.items() if key.startswith("build[")]
    assert len(built) == len(groups) and all(item["success"] for item in built)
    assert sorted(item["timeframes"][0] for item in built) == sorted(g[0] for g in groups)
    verified = run.xcoms["verify"]
    assert verified["success"] and verified["failed"] == [] and verified["feature_rows"] > 0


def test_train_and_register_registers_a_challenger(dag_runs: Runs) -> None:
    run = dag_runs.ok("train_and_register")
    result = run.xcoms["train"]
    assert result["strategy"] == STRATEGY
    assert "lightgbm" in [row["model"] for row in result["comparison"]]
    # The first registered version of a model with no champion becomes @champion (bootstrap, no gate).
    assert result["versions"] == {"lightgbm": "1"} and result["champion_version"] == "1"


def test_drift_check_stores_a_run_with_a_report(dag_runs: Runs, database: Database) -> None:
    run = dag_runs.ok("drift_check")
    summary = run.xcoms["drift"]
    assert summary["status"] in ("green", "amber", "red")
    assert summary["verdicts"]["performance"]["status"] == "green"
    assert Path(summary["report_path"]).is_file()
    with database.transaction() as conn, conn.cursor() as cur:
        cur.execute("select status from drift_runs where drift_run_id = %s", (summary["drift_run_id"],))
        row = cur.fetchone()
    assert row == (summary["status"],)


def test_daily_report_emails_recipients_with_drift_attachment(dag_runs: Runs, database: Database) -> None:
    run = dag_runs.ok("daily_report")
    prepared = run.xcoms["prepare"]
    reports = [m for m in dag_runs.inbox.messages if set(m.recipients) == set(RECIPIENTS)]
    assert len(reports) == 1
    message = BytesParser(policy=policy.default).parsebytes(reports[0].content)
    assert message["Subject"] == prepared["subject"] and "PnL 1,250.00" in message["Subject"]
    names = [part.get_filename() for part in message.iter_attachments()]
    assert names == [Path(path).name for path in prepared["attachments"]] and str(names[0]).startswith("drift_")
    body = message.get_body(preferencelist=("html",))
    assert body is not None and "@champion" in body.get_content()
    with database.transaction() as conn, conn.cursor() as cur:
        cur.execute("select sent from daily_reports where strategy = %s and report_date = %s",
                    (STRATEGY, prepared["day"]))
        assert cur.fetchone() == (True,)


def test_failed_task_emails_the_operator_through_the_smtp_connection(dag_runs: Runs) -> None:
    run = dag_runs.runs["market_data_ingest_bad_source"]
    assert run.returncode != 0 and run.states["ingest"] == "failed"
    assert run.states["validate"] == "upstream_failed"
    failures = [BytesParser(policy=policy.default).parsebytes(m.content) for m in dag_runs.inbox.messages
                if m.recipients == (ALERT_TO,)]
    subjects = [str(message["Subject"]) for message in failures]
    assert f"[tradeloom] FAILED market_data_ingest.ingest ({SESSION})" in subjects
