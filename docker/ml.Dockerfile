# The pipeline venv (.loom/venv-ml): torch CPU, LightGBM, MLflow, dbt, Great Expectations, Evidently.
# Also serves `mlflow server`. Built from the lock file: same versions as the development machines.
FROM python:3.11-slim-bookworm AS ml
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true DBT_SEND_ANONYMOUS_USAGE_STATS=false
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 curl && rm -rf /var/lib/apt/lists/*
COPY locks/ml.txt /tmp/ml.txt
RUN python -m venv /opt/venv-ml \
 && /opt/venv-ml/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/ml.txt
COPY pyproject.toml /opt/tradeloom/
COPY tradeloom /opt/tradeloom/tradeloom
COPY pipelines /opt/tradeloom/pipelines
COPY executor /opt/tradeloom/executor
COPY sql /opt/tradeloom/sql
COPY models /opt/tradeloom/models
COPY macros /opt/tradeloom/macros
COPY expectations /opt/tradeloom/expectations
COPY configs /opt/tradeloom/configs
COPY dbt_project.yml profiles.yml /opt/tradeloom/
RUN /opt/venv-ml/bin/pip install --no-deps -e /opt/tradeloom
COPY docker/entrypoint.sh /usr/local/bin/tradeloom-entrypoint
RUN useradd --system --uid 10001 --home-dir /var/lib/tradeloom --create-home tradeloom
USER tradeloom
WORKDIR /opt/tradeloom
ENV PATH=/opt/venv-ml/bin:$PATH TRADELOOM_HOME=/var/lib/tradeloom
ENTRYPOINT ["tradeloom-entrypoint"]
CMD ["tradeloom", "--help"]
