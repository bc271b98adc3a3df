"""What every tradeloom DAG shares: where the pipeline venv is, schedules' time zone, retries with
exponential back-off and the failure e-mail. Holds no DAG; Airflow parses it and finds none.

Nothing heavy is imported here: the pipeline code runs in the ML venv (`ML_VENV`) and the broker calls in
the live venv (`LIVE_VENV`), never in Airflow's.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.smtp.notifications.smtp import SmtpNotifier

REPO = Path(__file__).resolve().parents[1]
# The pipeline venv: torch, mlflow, dbt, GX and Evidently cannot share Airflow's dependency pins.
ML_PYTHON = os.environ.get("TRADELOOM_ML_PYTHON", str(REPO / ".loom" / "venv-ml" / "bin" / "python"))
# The live venv: the broker SDKs (kiteconnect, fyers-apiv3) pin requests/aiohttp versions the others cannot take.
LIVE_PYTHON = os.environ.get("TRADELOOM_LIVE_PYTHON", str(REPO / ".loom" / "venv-live" / "bin" / "python"))
EXCHANGE_TZ = pendulum.timezone("Asia/Kolkata")
# Early enough to backfill the bundled history (2000-2013) on purpose; catchup stays off everywhere.
START_DATE = pendulum.datetime(2000, 1, 3, tz=EXCHANGE_TZ)
SMTP_CONN_ID = "smtp_default"
ALERT_TO = "{{ var.value.get('tradeloom_alert_email', 'operator@localhost') }}"
TAGS = ["tradeloom"]
# Keyword arguments of `@task.external_python` for pipeline tasks. Spelled out at each task (not wrapped in a
# helper decorator) because Airflow strips only `@task.external_python(...)` from the source it ships to the
# venv. The function imports what it needs and returns builtins (unpickled back in Airflow's venv).
ML_VENV: dict[str, Any] = {"python": ML_PYTHON, "expect_airflow": False, "expect_pendulum": False}
# The same for tasks that talk to the broker (history fetch, session check, instrument master refresh).
LIVE_VENV: dict[str, Any] = {"python": LIVE_PYTHON, "expect_airflow": False, "expect_pendulum": False}


def failure_email() -> SmtpNotifier:
    return SmtpNotifier(
        to=ALERT_TO,
        smtp_conn_id=SMTP_CONN_ID,
        subject="[tradeloom] FAILED {{ ti.dag_id }}.{{ ti.task_id }} ({{ ds }})",
        html_content=(
            "<p>Task <b>{{ ti.dag_id }}.{{ ti.task_id }}</b> failed on try {{ ti.try_number }} for the run of "
            "{{ ds }}.</p><p>Run id: {{ run_id }}</p>"
        ),
    )


def default_args(retries: int = 2) -> dict[str, Any]:
    # TRADELOOM_DAG_RETRIES caps retries for the whole deployment (0 in tests: a failure shows at once).
    cap = int(os.environ.get("TRADELOOM_DAG_RETRIES", retries))
    return {
        "owner": "tradeloom",
        "retries": min(retries, cap),
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=20),
        "on_failure_callback": failure_email(),
    }
