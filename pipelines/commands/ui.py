"""`tradeloom ui`: start or stop the Airflow and MLflow web UIs on localhost."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 130)


def ui_command(
    stop: Annotated[bool, typer.Option("--stop", help="stop both UIs (whole process groups)")] = False,
    airflow_port: Annotated[int, typer.Option(help="Airflow API server / UI port")] = 8080,
    mlflow_port: Annotated[int, typer.Option(help="MLflow server port")] = 5000,
) -> None:
    """Airflow (`airflow standalone`) and `mlflow server` on 127.0.0.1; `--stop` stops them."""
    from pipelines.ui import password_file, start_ui, stop_ui
    from tradeloom.settings import PipelineSettings

    settings = PipelineSettings()
    if stop:
        stopped = stop_ui(settings)
        console.print(f"stopped: {', '.join(stopped)}" if stopped else "no UI was running")
        return
    with console.status("starting MLflow and Airflow (Airflow takes a minute on first start)"):
        services = start_ui(settings, airflow_port, mlflow_port)
    for service in services:
        console.print(f"{service.name:<8} [bold]{service.url}[/]  (process group {service.pid}, "
                      f"log {service.log_file})")
    console.print(f"Airflow admin password: {password_file(settings)}")
    console.print("stop both with: tradeloom ui --stop")


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_command)
