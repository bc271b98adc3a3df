"""train_and_register: after the close, walk-forward train the strategy's models, log them to MLflow,
register the candidate as `@challenger` with its comparison against `@champion`; promotion only when the
config's gate has auto_promote on (off by default: a quant promotes in the MLflow UI or `tradeloom promote`)."""

from __future__ import annotations

from airflow.sdk import dag, task
from tradeloom_dag_support import ML_VENV, START_DATE, TAGS, default_args


@dag(dag_id="train_and_register", schedule="0 18 * * 1-5", start_date=START_DATE, catchup=False,
     max_active_runs=1, tags=[*TAGS, "models"], default_args=default_args(retries=1), doc_md=__doc__,
     params={"train_config": "configs/direction_daily.yaml"})
def train_and_register() -> None:
    @task.external_python(**ML_VENV)
    def train(config_path: str) -> dict[str, object]:
        from pipelines.jobs import train_and_register

        return train_and_register(config_path)

    train("{{ params.train_config }}")


train_and_register()
