"""MLflow on the local cluster: the tracking URI (database `mlflow`), the artifact root under `.loom`,
and `mlflow server` for `tradeloom ui`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tradeloom.adapters.pgcluster import LocalCluster
from tradeloom.adapters.registry import RegistryTarget, quiet_mlflow
from tradeloom.errors import ConfigError, DatabaseUnavailableError
from tradeloom.settings import PipelineSettings

log = logging.getLogger(__name__)
MLFLOW_DATABASE = "mlflow"
MLFLOW_ROLE = "tradeloom_owner"


def tracking_uri(settings: PipelineSettings, database: str = MLFLOW_DATABASE) -> str:
    """`TRADELOOM_MLFLOW_TRACKING_URI`/`MLFLOW_TRACKING_URI` when set, else the local cluster's database."""
    explicit = os.environ.get("TRADELOOM_MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which the venvs do not carry.
    return LocalCluster(settings.pg_dir).sqlalchemy_url(MLFLOW_ROLE, database)


def artifact_root(settings: PipelineSettings) -> Path:
    return settings.home / "mlartifacts"


def registry_target(settings: PipelineSettings, database: str = MLFLOW_DATABASE) -> RegistryTarget:
    return RegistryTarget(tracking_uri(settings, database), artifact_root(settings))


@dataclass
class MlflowServer:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's whole process group (gunicorn/uvicorn workers included)."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


def start_server(target: RegistryTarget, port: int, log_file: Path, host: str = "127.0.0.1",
                 wait_seconds: float = 120.0) -> MlflowServer:
    """`mlflow server` from this venv against the target's store, without the job runner (~475 MB, not 1.9 GB)."""
    quiet_mlflow()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    if not mlflow_bin.exists():
        raise ConfigError(f"{mlflow_bin} not found: the mlflow server runs from .loom/venv-ml")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="1")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    target.artifact_root.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as sink:
        process = subprocess.Popen(
            [str(mlflow_bin), "server", "--backend-store-uri", target.tracking_uri,
             "--default-artifact-root", target.artifact_root.resolve().as_uri(), "--no-serve-artifacts",
             "--host", host, "--port", str(port), "--workers", "1"],
            stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    server = MlflowServer(process, f"http://{host}:{port}")
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise DatabaseUnavailableError(f"mlflow server exited with {process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as answer:  # noqa: S310 - local URL
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise DatabaseUnavailableError(f"mlflow server on {server.url} not healthy after {wait_seconds:.0f}s")
