"""`tradeloom train` and `tradeloom promote`: direction models, MLflow registry, the promotion gate."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 130)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def comparison_table(rows: list[dict[str, Any]], title: str) -> Table:
    columns = ["model", "version", "log_loss", "balanced_accuracy", "roc_auc", "ic", "sharpe", "total_return",
               "max_drawdown", "turnover", "train_seconds"]
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(_fmt(row.get(column, "")) for column in columns))
    return table


def train_command(
    config: Annotated[Path, typer.Option(help="workflow config (YAML, dated segments)")] = Path(
        "configs/direction_daily.yaml"),
    register: Annotated[bool, typer.Option(help="log to MLflow and register the models")] = True,
) -> None:
    """Walk-forward train the configured models on the store's bars; log, register, gate."""
    from pipelines.mlflow_server import registry_target
    from pipelines.train import load_config, train_from_db
    from tradeloom.adapters.db import Database
    from tradeloom.settings import PipelineSettings

    settings = PipelineSettings()
    db = Database(settings)
    workflow = load_config(config)
    result, _ = train_from_db(db, workflow, registry_target(settings) if register else None)
    console.print(comparison_table(result.comparison_rows(),
                                   f"{workflow.strategy}: out of sample {result.oos_window}, after "
                                   f"{workflow.costs.cost_bps:g} bps costs ({result.trading_source})"))
    for kind, outcome in result.outcomes.items():
        if outcome.gate is not None:
            console.print(f"{kind.value} v{outcome.version}: gate {'passed' if outcome.gate.promotable else 'refused'}"
                          f" ({outcome.gate.reason})")
    if result.champion_version:
        console.print(f"@champion = version {result.champion_version}")


def promote_command(
    config: Annotated[Path, typer.Option(help="workflow config holding the gate margins")] = Path(
        "configs/direction_daily.yaml"),
    version: Annotated[str | None, typer.Option(help="version to promote (default: @challenger)")] = None,
) -> None:
    """Move @champion to a challenger if it beats the champion on the same out-of-sample window."""
    from pipelines.mlflow_server import registry_target
    from pipelines.train import gate_against_champion, load_config
    from tradeloom.adapters.registry import CHALLENGER, CHAMPION, alias_version, candidate_summary, set_alias
    from tradeloom.errors import InputError
    from tradeloom.settings import PipelineSettings

    workflow = load_config(config)
    target = registry_target(PipelineSettings())
    name = workflow.registered_model_name
    chosen = version or alias_version(target, name, CHALLENGER)
    if chosen is None:
        raise InputError(f"registered model {name!r} has no @challenger; pass --version")
    decision = gate_against_champion(target, name, candidate_summary(target, name, chosen), workflow.gate)
    champion = alias_version(target, name, CHAMPION)
    table = Table("metric", f"champion v{champion}", f"challenger v{chosen}", "requirement", "result",
                  title=f"{name}: promotion gate")
    for check in decision.checks:
        table.add_row(check.metric, _fmt(check.champion) if check.champion is not None else "-",
                      _fmt(check.challenger), check.requirement, "[green]pass[/]" if check.passed else "[red]fail[/]")
    console.print(table)
    console.print(decision.reason)
    if not decision.promotable:
        from tradeloom.models.gate import PromotionRefusedError

        raise PromotionRefusedError(f"version {chosen} not promoted: {decision.reason}")
    set_alias(target, name, CHAMPION, chosen)
    console.print(f"@champion -> version {chosen}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("promote")(promote_command)
