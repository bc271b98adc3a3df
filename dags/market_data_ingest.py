"""market_data_ingest: every 15 minutes in the NSE session and once after the close, pull the interval's
bars from the configured source, ingest them (idempotent upsert) and run the data gate over the interval.
The end-of-day run covers the whole day.

Sources: `synthetic`, or a broker (`kite`, `fyers`): `fetch` pulls the broker's history in the live venv
(the SDKs live there) into a spool file under `.loom/spool/history/`, `ingest` lands it from the ML venv."""

from __future__ import annotations

from airflow.sdk import MultipleCronTriggerTimetable, dag, get_current_context, task
from tradeloom_dag_support import EXCHANGE_TZ, LIVE_VENV, ML_VENV, START_DATE, TAGS, default_args

END_OF_DAY_HOUR = 16


@dag(dag_id="market_data_ingest",
     schedule=MultipleCronTriggerTimetable("*/15 9-15 * * 1-5", "0 16 * * 1-5", timezone=EXCHANGE_TZ),
     start_date=START_DATE, catchup=False, max_active_runs=1, tags=[*TAGS, "data"], default_args=default_args(),
     doc_md=__doc__, params={"window_minutes": 15, "source": "synthetic", "table": "bars_1m"})
def market_data_ingest() -> None:
    @task
    def plan_window() -> dict[str, object]:
        context = get_current_context()
        logical = context["logical_date"]
        minutes = int(context["params"]["window_minutes"])
        if logical.astimezone(EXCHANGE_TZ).hour >= END_OF_DAY_HOUR:
            minutes = max(minutes, 24 * 60)
        return {"logical": logical.isoformat(), "minutes": minutes}

    @task.external_python(**LIVE_VENV)
    def fetch(window: dict[str, object], source: str) -> dict[str, object]:
        from pipelines.jobs import fetch_broker_history

        return fetch_broker_history(window["logical"], int(window["minutes"]), source)

    @task.external_python(**ML_VENV)
    def ingest(window: dict[str, object], source: str, fetched: dict[str, object]) -> dict[str, object]:
        from pipelines.jobs import ingest_interval

        return ingest_interval(window["logical"], int(window["minutes"]), source, fetched["path"])

    @task.external_python(**ML_VENV)
    def validate(window: dict[str, object], table: str, ingested: dict[str, object]) -> dict[str, object]:
        from pipelines.jobs import validate_interval

        return validate_interval(table, window["logical"], int(window["minutes"]))

    window = plan_window()
    fetched = fetch(window, "{{ params.source }}")
    validate(window, "{{ params.table }}", ingest(window, "{{ params.source }}", fetched))


market_data_ingest()
