"""`tradeloom features build|docs`: the dbt feature pipeline."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    features_app = typer.Typer(help="Features and labels (dbt over TimescaleDB).", no_args_is_help=True)
    app.add_typer(features_app, name="features")

    @features_app.command("build")
    def build(
        full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Rebuild the marts from scratch.")] = False,
        start: Annotated[str | None, typer.Option(help="Rewrite rows from this ISO time (UTC).")] = None,
        end: Annotated[str | None, typer.Option(help="Rewrite rows before this ISO time (UTC).")] = None,
        timeframe: Annotated[list[str] | None, typer.Option(help="Row timeframes (repeatable).")] = None,
        no_gate: Annotated[bool, typer.Option("--no-gate", help="Ignore data_gate (development only).")] = False,
    ) -> None:
        """Build staging -> intermediate -> marts and run the dbt tests."""
        from pipelines.features import build_features
        from tradeloom.adapters.db import Database
        from tradeloom.settings import PipelineSettings

        result = build_features(
            Database(PipelineSettings()), full_refresh=full_refresh,
            start=datetime.fromisoformat(start) if start else None, end=datetime.fromisoformat(end) if end else None,
            timeframes=timeframe or None, enforce_data_gate=not no_gate,
        )
        typer.echo(result.summary())

    @features_app.command("docs")
    def docs() -> None:
        """`dbt docs generate` into .loom/dbt/<database>/target."""
        from pipelines.features import generate_docs
        from tradeloom.adapters.db import Database
        from tradeloom.settings import PipelineSettings

        typer.echo(str(generate_docs(Database(PipelineSettings()))))
