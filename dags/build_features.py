"""build_features: after the end-of-day ingest, dbt builds staging -> intermediate -> marts over the
day's validated bars; one mapped task per group (timeframe), so groups scale out over workers."""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, get_current_context, task
from tradeloom_dag_support import START_DATE, TAGS, default_args, ml_task


@dag(dag_id="build_features", schedule="30 16 * * 1-5", start_date=START_DATE, catchup=False, max_active_runs=1,
     tags=[*TAGS, "features"], default_args=default_args(), doc_md=__doc__, params={"window_minutes": 24 * 60})
def build_features() -> None:
    @task
    def plan_window() -> dict[str, Any]:
        context = get_current_context()
        return {"logical": context["logical_date"].isoformat(), "minutes": int(context["params"]["window_minutes"])}

    @ml_task()
    def groups() -> list[list[str]]:
        from pipelines.jobs import feature_groups

        return feature_groups()

    @ml_task(max_active_tis_per_dagrun=1)
    def build(timeframes: list[str], window: dict[str, Any]) -> dict[str, Any]:
        from pipelines.jobs import build_feature_group

        return build_feature_group(timeframes, window["logical"], int(window["minutes"]))

    build.partial(window=plan_window()).expand(timeframes=groups())


build_features()
