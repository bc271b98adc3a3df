"""`tradeloom dashboard [--port --strategy --mode]` and `tradeloom dashboard hash-password`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer


def dashboard_command(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="listen port (default 8050)")] = None,
    host: Annotated[str | None, typer.Option(help="listen address (default 127.0.0.1)")] = None,
    strategy: Annotated[str | None, typer.Option(help="strategy to show (default: latest in the journal)")] = None,
    mode: Annotated[str | None, typer.Option(help="replay, paper or live (default: latest in the journal)")] = None,
) -> None:
    """Serve the operator dashboard: positions, PnL, signals, risk, orders, kill switch and pause."""
    if ctx.invoked_subcommand is not None:
        return
    import logging
    import os

    from pipelines.dashboard.server import serve
    from pipelines.dashboard.settings import DashboardSettings

    logging.basicConfig(level=os.environ.get("TRADELOOM_LOG_LEVEL", "INFO"),
                        format='{"at":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    overrides = {name: value for name, value in
                 {"port": port, "host": host, "strategy": strategy, "mode": mode}.items() if value is not None}
    settings = DashboardSettings(**overrides)  # type: ignore[arg-type]
    print(f"tradeloom dashboard on http://{settings.host}:{settings.port}/", file=sys.stderr)  # noqa: T201
    serve(settings)


def hash_password_command(
    from_stdin: Annotated[bool, typer.Option("--stdin", help="read the password from standard input")] = False,
) -> None:
    """Print a scrypt hash for TRADELOOM_DASHBOARD_PASSWORD_HASH (the password itself is never stored)."""
    from pipelines.dashboard.auth import hash_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    typer.echo(hash_password(password))


def register(app: typer.Typer) -> None:
    dashboard_app = typer.Typer(help="The operator dashboard (web).", invoke_without_command=True)
    dashboard_app.callback(invoke_without_command=True)(dashboard_command)
    dashboard_app.command("hash-password")(hash_password_command)
    app.add_typer(dashboard_app, name="dashboard")
