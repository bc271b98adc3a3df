# The executor venv (.loom/venv-live): broker SDKs, onnxruntime, mlflow-skinny; no torch, no pandas stack.
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true
COPY locks/live.txt /tmp/live.txt
RUN python -m venv /opt/venv-live && /opt/venv-live/bin/pip install -r /tmp/live.txt
COPY pyproject.toml /opt/tradeloom/
COPY tradeloom /opt/tradeloom/tradeloom
COPY executor /opt/tradeloom/executor
COPY pipelines/__init__.py /opt/tradeloom/pipelines/__init__.py
RUN /opt/venv-live/bin/pip install --no-deps -e /opt/tradeloom
COPY docker/entrypoint.sh /usr/local/bin/tradeloom-entrypoint
RUN useradd --system --uid 10002 --home-dir /var/lib/tradeloom --create-home tradeloom-executor
USER tradeloom-executor
WORKDIR /opt/tradeloom
ENV PATH=/opt/venv-live/bin:$PATH
STOPSIGNAL SIGTERM
ENTRYPOINT ["tradeloom-entrypoint"]
CMD ["python", "-m", "executor", "run"]
