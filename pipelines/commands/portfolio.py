"""`tradeloom backtest-portfolio`: walk-forward portfolio construction over bars in the store."""

from __future__ import annotations

import sys
from typing import Annotated

import typer


def backtest_portfolio_command(
    methods: Annotated[list[str] | None, typer.Option("--method", "-m", help="equal_weight, inverse_volatility, "
                                                      "risk_parity, min_variance, mean_variance, black_litterman; "
                                                      "repeatable (default: all)")] = None,
    instruments: Annotated[list[str] | None, typer.Option("--instrument", "-i",
                                                          help="EXCHANGE:SYMBOL, repeatable")] = None,
    train_bars: Annotated[int, typer.Option(help="walk-forward train window (bars)")] = 252,
    test_bars: Annotated[int, typer.Option(help="walk-forward test window (bars)")] = 252,
) -> None:
    """Compare portfolio methods out of sample (monthly rebalance, costs, risk rules); prints one row each."""
    from rich.console import Console
    from rich.table import Table

    from pipelines.backtest import DEMO_KEYS, load_market_data
    from pipelines.portfolio_backtest import DEMO_METHODS, common_history, compare_methods
    from tradeloom.adapters.db import Database
    from tradeloom.domain import Timeframe
    from tradeloom.errors import InputError
    from tradeloom.settings import PipelineSettings

    chosen = tuple(methods or DEMO_METHODS)
    unknown = [method for method in chosen if method not in DEMO_METHODS]
    if unknown:
        raise InputError(f"--method {unknown} unknown; expected some of {list(DEMO_METHODS)}")
    db = Database(PipelineSettings())
    data = common_history(load_market_data(db, list(instruments or DEMO_KEYS), Timeframe.DAY))
    rows = compare_methods(data, chosen, train_size=train_bars, test_size=test_bars)
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(*rows[0].keys(), title="portfolio walk-forward, out of sample, after costs")
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("backtest-portfolio")(backtest_portfolio_command)
