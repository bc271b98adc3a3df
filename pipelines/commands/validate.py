"""`tradeloom validate`: the data gate over one ingest batch or interval of a raw table."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from tradeloom.errors import DataQualityError, InputError


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise InputError(f"{option}={value!r} is not an ISO date or timestamp, e.g. 2024-01-02 or "
                         "2024-01-02T09:15+05:30") from error
    # A bare date or naive timestamp means UTC, the storage convention.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def validate_command(
    table: Annotated[str, typer.Argument(help="raw table: bars_1m, bars_1h, bars_1d or order_book_snapshots")],
    start: Annotated[str | None, typer.Option(help="interval start (inclusive), ISO; naive = UTC")] = None,
    end: Annotated[str | None, typer.Option(help="interval end (exclusive), ISO; naive = UTC")] = None,
    batch: Annotated[int | None, typer.Option(help="validate the rows of this ingest batch")] = None,
    all_batches: Annotated[bool, typer.Option("--all-batches", help="each committed batch of the table")] = False,
) -> None:
    """Validate raw data with Great Expectations: quarantine failing rows, mark days passed or failed."""
    from rich.console import Console
    from rich.table import Table

    from pipelines.validate import ValidationFailed, ValidationReport, committed_batches, validate
    from tradeloom.adapters.db import Database
    from tradeloom.settings import PipelineSettings

    console = Console(width=None if sys.stdout.isatty() else 130)
    db = Database(PipelineSettings())
    start_at, end_at = _moment(start, "--start"), _moment(end, "--end")
    if all_batches and batch is not None:
        raise InputError("give either --batch N or --all-batches, not both")
    batches: list[int | None] = list(committed_batches(db, table)) if all_batches else [batch]
    failures: list[ValidationFailed] = []
    for batch_id in batches:
        try:
            report: ValidationReport = validate(db, table, start_at, end_at, batch_id)
        except ValidationFailed as failure:
            failures.append(failure)
            report = failure.report
        grid = Table("check", "expectation", "columns", "result", "failing rows",
                     title=f"{table} · run {report.validation_run_id}" + (f" · batch {batch_id}" if batch_id else ""))
        for item in report.expectations:
            grid.add_row(item.check, item.expectation, ", ".join(item.columns),
                         "[green]pass[/]" if item.success else "[red]FAIL[/]", str(item.unexpected_count))
        console.print(grid)
        console.print(
            f"{report.status}: {report.rows_checked} rows checked, {report.rows_failed} failed, "
            f"{report.rows_quarantined} quarantined; instrument-days {report.cells_passed} passed, "
            f"{report.cells_failed} failed ({report.seconds:.1f}s)"
        )
        if report.data_docs_path is not None:
            console.print(f"Data Docs: {report.data_docs_path}", soft_wrap=True)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise DataQualityError("\n".join(str(failure) for failure in failures))


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
