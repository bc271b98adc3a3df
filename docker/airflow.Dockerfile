# Airflow 3.3 in its own venv (.loom/venv-airflow) plus the pipeline venv its tasks run in
# (`@task.external_python(python=/opt/venv-ml/bin/python)`) and the live venv for the broker tasks
# (market_data_ingest `fetch`, premarket `broker_checks`): the three cannot share one set of pins.
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    AIRFLOW_HOME=/opt/airflow DO_NOT_TRACK=1
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 curl && rm -rf /var/lib/apt/lists/*
COPY locks/airflow.txt /tmp/airflow.txt
RUN python -m venv /opt/venv-airflow && /opt/venv-airflow/bin/pip install -r /tmp/airflow.txt
COPY --from=ml /opt/venv-ml /opt/venv-ml
COPY --from=ml /opt/tradeloom /opt/tradeloom
COPY --from=live /opt/venv-live /opt/venv-live
COPY dags /opt/tradeloom/dags
COPY docker/entrypoint.sh /usr/local/bin/tradeloom-entrypoint
RUN useradd --system --uid 10001 --home-dir /opt/airflow --create-home tradeloom
USER tradeloom
WORKDIR /opt/tradeloom
ENV PATH=/opt/venv-airflow/bin:$PATH TRADELOOM_ML_PYTHON=/opt/venv-ml/bin/python \
    TRADELOOM_LIVE_PYTHON=/opt/venv-live/bin/python
ENTRYPOINT ["tradeloom-entrypoint"]
CMD ["airflow", "version"]
