"""`tradeloom drift`, `tradeloom report` and `tradeloom premarket`: the monitoring jobs by hand."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 130)
STATUS_STYLE = {"green": "green", "amber": "yellow", "red": "red", "skipped": "dim"}


def drift_command(
    window_end: Annotated[str | None, typer.Option(help="ISO time the window ends (default: now, UTC)")] = None,
) -> None:
    """Data, prediction, performance and execution-parity drift; stored in drift_runs, HTML in .loom/reports."""
    from pipelines.drift import run_drift
    from tradeloom.adapters.db import Database
    from tradeloom.errors import InputError
    from tradeloom.settings import PipelineSettings

    try:
        end = datetime.fromisoformat(window_end) if window_end else datetime.now(UTC)
    except ValueError as error:
        raise InputError(f"--window-end {window_end!r}: expected an ISO timestamp with a zone") from error
    result = run_drift(Database(PipelineSettings()), end)
    table = Table("check", "status", "detail", title=f"drift of {result.strategy} up to {end:%Y-%m-%d %H:%M}")
    for name, verdict in result.verdicts.items():
        style = STATUS_STYLE[verdict.status]
        table.add_row(name, f"[{style}]{verdict.status}[/]", verdict.detail)
    console.print(table)
    console.print(f"overall [{STATUS_STYLE[result.status]}]{result.status}[/]; report {result.report_path}")


def report_command(
    day: Annotated[str | None, typer.Option(help="report date YYYY-MM-DD (default: today, UTC)")] = None,
    send: Annotated[bool, typer.Option(help="send through TRADELOOM_REPORT_SMTP_* (else only write the .eml)")] = False,
) -> None:
    """The daily e-mail: written as .eml under .loom/reports, sent with --send."""
    from pipelines.report import prepare_report, send_report
    from tradeloom.adapters.db import Database
    from tradeloom.settings import PipelineSettings

    chosen = date.fromisoformat(day) if day else datetime.now(UTC).date()
    db = Database(PipelineSettings())
    prepared = send_report(db, chosen) if send else prepare_report(db, chosen)
    console.print(prepared["subject"])
    console.print(f"{'sent to ' + ', '.join(prepared['recipients']) if send else 'written'}: {prepared['eml_path']}")


def premarket_command(
    day: Annotated[str | None, typer.Option(help="session date YYYY-MM-DD (default: today in IST)")] = None,
) -> None:
    """The pre-market checks; writes .loom/health/premarket.json (exit 1 when red)."""
    from zoneinfo import ZoneInfo

    from pipelines.premarket import run_checks
    from tradeloom.adapters.db import Database
    from tradeloom.settings import PipelineSettings

    chosen = date.fromisoformat(day) if day else datetime.now(ZoneInfo("Asia/Kolkata")).date()
    result = run_checks(Database(PipelineSettings()), chosen)
    for name, check in result["checks"].items():
        console.print(f"{'[green]ok[/]  ' if check['ok'] else '[red]FAIL[/]'} {name}: {check['detail']}")
    console.print(f"{result['status']}: {result['health_file']}")
    if result["status"] != "green":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("drift")(drift_command)
    app.command("report")(report_command)
    app.command("premarket")(premarket_command)
