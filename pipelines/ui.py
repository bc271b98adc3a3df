"""`tradeloom ui`: Airflow (`airflow standalone` from .loom/venv-airflow) and `mlflow server` on localhost,
each in its own process group recorded in `.loom/ui/processes.json`, so `tradeloom ui --stop` can stop
both whole groups (gunicorn/uvicorn workers, scheduler, triggerer, dag processor) and nothing else."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from tradeloom.adapters.pgcluster import LocalCluster
from tradeloom.errors import ConfigError, DatabaseUnavailableError
from tradeloom.settings import PipelineSettings, project_root

log = logging.getLogger(__name__)
AIRFLOW_DATABASE = "airflow"
AIRFLOW_ROLE = "tradeloom_owner"
# Airflow 3's simple auth manager writes the generated admin password here, inside AIRFLOW_HOME.
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"  # noqa: S105 - a file name, not a secret


@dataclass(frozen=True)
class Service:
    name: str
    pid: int  # also the process group id: each service starts in a new session
    url: str
    log_file: str


def ui_dir(settings: PipelineSettings) -> Path:
    return settings.home / "ui"


def state_file(settings: PipelineSettings) -> Path:
    return ui_dir(settings) / "processes.json"


def airflow_home(settings: PipelineSettings) -> Path:
    return settings.home / "airflow"


def airflow_bin(settings: PipelineSettings) -> Path:
    return settings.home / "venv-airflow" / "bin"


def airflow_database_url(settings: PipelineSettings) -> str:
    explicit = os.environ.get("TRADELOOM_AIRFLOW_DATABASE_URL")
    if explicit:
        return explicit
    return LocalCluster(settings.pg_dir).sqlalchemy_url(AIRFLOW_ROLE, AIRFLOW_DATABASE)


def airflow_environment(settings: PipelineSettings, port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """Small worker counts (~0.9 GB), the repo's dags/, metadata in the `airflow` database, no examples."""
    env = dict(os.environ if base is None else base)
    env.update({
        "PATH": f"{airflow_bin(settings)}:{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(airflow_home(settings)),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project_root() / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_database_url(settings),
        "TRADELOOM_HOME": str(settings.home),
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    })
    return env


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_state(settings: PipelineSettings) -> list[Service]:
    path = state_file(settings)
    if not path.exists():
        return []
    try:
        return [Service(**item) for item in json.loads(path.read_text(encoding="utf-8"))]
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: unreadable ({error}); remove it after stopping the UIs by hand") from error


def write_state(settings: PipelineSettings, services: list[Service]) -> None:
    path = state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(s) for s in services], indent=2), encoding="utf-8")


def _wait_http(url: str, process: subprocess.Popen[bytes], log_file: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise DatabaseUnavailableError(f"{url}: process exited with {process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:  # noqa: S310 - local URL
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1.0)
    raise DatabaseUnavailableError(f"{url} not healthy after {seconds:.0f}s; see {log_file}")


def start_airflow(settings: PipelineSettings, port: int, wait_seconds: float = 240.0) -> Service:
    binary = airflow_bin(settings) / "airflow"
    if not binary.exists():
        raise ConfigError(f"{binary} not found: run `make setup`")
    if not _port_free(port):
        raise ConfigError(f"port {port} is in use; expected a free port for Airflow (--airflow-port)")
    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    log_file = ui_dir(settings) / "airflow.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as sink:
        process = subprocess.Popen([str(binary), "standalone"], stdout=sink, stderr=subprocess.STDOUT,
                                   env=airflow_environment(settings, port), cwd=project_root(),
                                   start_new_session=True)
    service = Service("airflow", process.pid, f"http://127.0.0.1:{port}", str(log_file))
    try:
        _wait_http(f"{service.url}/api/v2/monitor/health", process, log_file, wait_seconds)
    except DatabaseUnavailableError:
        stop_group(process.pid)
        raise
    return service


def start_mlflow(settings: PipelineSettings, port: int) -> Service:
    from pipelines.mlflow_server import registry_target, start_server

    if not _port_free(port):
        raise ConfigError(f"port {port} is in use; expected a free port for MLflow (--mlflow-port)")
    log_file = ui_dir(settings) / "mlflow.log"
    server = start_server(registry_target(settings), port, log_file)
    return Service("mlflow", server.process.pid, server.url, str(log_file))


def stop_group(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM the whole group, SIGKILL what is left after `timeout`; False if it was already gone."""
    if not _group_alive(pid):
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        if not _group_alive(pid):
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True


def start_ui(settings: PipelineSettings, airflow_port: int = 8080, mlflow_port: int = 5000) -> list[Service]:
    running = [s for s in read_state(settings) if _group_alive(s.pid)]
    if running:
        raise ConfigError(f"UIs already running ({', '.join(f'{s.name} {s.url}' for s in running)}); "
                          "`tradeloom ui --stop` first")
    if not LocalCluster(settings.pg_dir).is_running() and settings.database_url is None:
        raise DatabaseUnavailableError("the local cluster is stopped: run `tradeloom db up`")
    services = [start_mlflow(settings, mlflow_port)]
    write_state(settings, services)
    try:
        services.append(start_airflow(settings, airflow_port))
    except Exception:
        stop_ui(settings)
        raise
    write_state(settings, services)
    return services


def stop_ui(settings: PipelineSettings) -> list[str]:
    stopped = [service.name for service in read_state(settings) if stop_group(service.pid)]
    state_file(settings).unlink(missing_ok=True)
    return stopped


def password_file(settings: PipelineSettings) -> Path:
    return airflow_home(settings) / PASSWORD_FILE
