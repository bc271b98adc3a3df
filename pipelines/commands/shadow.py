"""`tradeloom shadow-report`: champion vs @challenger shadow for one trading day."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer


def shadow_report(
    strategy: Annotated[str, typer.Option(help="the executor's engine.strategy")],
    day: Annotated[str, typer.Option(help="exchange-local trading day, YYYY-MM-DD")],
    timezone: Annotated[str, typer.Option(help="exchange time zone")] = "Asia/Kolkata",
) -> None:
    """Champion (live/paper/replay) vs the @challenger shadow on the same bars: decisions, orders, fills, PnL."""
    from rich.console import Console
    from rich.table import Table

    from pipelines.shadow import compare_day
    from tradeloom.adapters.db import Database
    from tradeloom.errors import InputError
    from tradeloom.settings import PipelineSettings

    try:
        when = date.fromisoformat(day)
    except ValueError as error:
        raise InputError(f"--day={day!r}: expected YYYY-MM-DD") from error
    rows = compare_day(Database(PipelineSettings()), strategy, when, timezone)
    if not rows:
        raise InputError(f"no decisions journaled for strategy {strategy!r} on {day}")
    table = Table("mode", "model version", "decisions", "orders", "fills", "fees", "PnL",
                  title=f"{strategy} on {day}: champion vs shadow")
    for row in rows:
        table.add_row(row.mode, row.model_version, str(row.decisions), str(row.orders), str(row.fills),
                      f"{row.fees:,.2f}", f"{row.pnl:+,.2f}")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("shadow-report")(shadow_report)
