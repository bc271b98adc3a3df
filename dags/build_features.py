"""build_features: after the end-of-day ingest, dbt runs staging -> intermediate -> marts over the
validated bars, one mapped task per group (timeframe) so groups scale out over workers; then one
`dbt build` runs the data and unit tests over all of them (the gate the trainer relies on)."""

from __future__ import annotations

from airflow.sdk import dag, get_current_context, task
from tradeloom_dag_support import ML_VENV, START_DATE, TAGS, default_args


@dag(dag_id="build_features", schedule="30 16 * * 1-5", start_date=START_DATE, catchup=False, max_active_runs=1,
     tags=[*TAGS, "features"], default_args=default_args(), doc_md=__doc__,
     params={"window_minutes": 24 * 60, "rewrite_window": False})
def build_features() -> None:
    @task
    def plan_window() -> dict[str, object]:
        context = get_current_context()
        params = context["params"]
        return {"logical": context["logical_date"].isoformat(), "minutes": int(params["window_minutes"]),
                "rewrite": bool(params["rewrite_window"])}

    @task.external_python(**ML_VENV)
    def groups() -> list[list[str]]:
        from pipelines.jobs import feature_groups

        return feature_groups()

    @task.external_python(**ML_VENV, max_active_tis_per_dagrun=1)
    def build(timeframes: list[str], window: dict[str, object]) -> dict[str, object]:
        from pipelines.jobs import build_feature_group

        return build_feature_group(timeframes, str(window["logical"]), int(str(window["minutes"])),
                                   bool(window["rewrite"]))

    @task.external_python(**ML_VENV)
    def verify() -> dict[str, object]:
        from pipelines.jobs import verify_features

        return verify_features()

    build.partial(window=plan_window()).expand(timeframes=groups()) >> verify()


build_features()
