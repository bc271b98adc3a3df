"""drift_check: daily, Evidently data drift of the latest feature window against the training reference,
prediction drift of the champion's scores, performance decay of live decisions, live-vs-reference
execution parity; stored in `drift_runs`, HTML under .loom/reports/."""

from __future__ import annotations

from airflow.sdk import dag, task
from tradeloom_dag_support import ML_VENV, START_DATE, TAGS, default_args


@dag(dag_id="drift_check", schedule="0 19 * * 1-5", start_date=START_DATE, catchup=False, max_active_runs=1,
     tags=[*TAGS, "monitoring"], default_args=default_args(), doc_md=__doc__)
def drift_check() -> None:
    @task.external_python(**ML_VENV)
    def drift(window_end: str) -> dict[str, object]:
        from pipelines.jobs import drift

        return drift(window_end)

    drift("{{ ts }}")


drift_check()
