"""`tradeloom backtest`: walk-forward backtest of a baseline over bars in the store, with a tearsheet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def backtest_command(
    instruments: Annotated[list[str] | None, typer.Option("--instrument", "-i",
                                                          help="EXCHANGE:SYMBOL, repeatable")] = None,
    timeframe: Annotated[str, typer.Option(help="1d, 1h or 1m")] = "1d",
    strategy: Annotated[str, typer.Option(help="sma-cross or buy-and-hold")] = "sma-cross",
    fast: Annotated[int, typer.Option(help="fast SMA window")] = 10,
    slow: Annotated[int, typer.Option(help="slow SMA window")] = 20,
    costs: Annotated[str, typer.Option(help="cost preset: zero, us_equity_retail, nse_equity_intraday, "
                                            "nse_equity_delivery")] = "us_equity_retail",
    cash: Annotated[float, typer.Option(help="starting cash per fold")] = 100_000.0,
    train_bars: Annotated[int, typer.Option(help="walk-forward train window (bars)")] = 504,
    test_bars: Annotated[int, typer.Option(help="walk-forward test window (bars)")] = 252,
    out: Annotated[Path | None, typer.Option(help="tearsheet path (default .loom/reports/...)")] = None,
) -> None:
    """Walk-forward backtest through the engine and the simulated broker; prints per-fold metrics."""
    import numpy as np

    from pipelines.backtest import DEMO_KEYS, load_market_data, sma_cross_walk_forward, walk_forward
    from pipelines.tearsheet import write_walk_forward_tearsheet
    from tradeloom.adapters.db import Database
    from tradeloom.domain import Timeframe
    from tradeloom.engine import BrokerConfig, EngineConfig, SignalConfig, SizingConfig, StopConfig, cost_preset
    from tradeloom.engine.baselines import buy_and_hold_probabilities
    from tradeloom.errors import InputError
    from tradeloom.settings import PipelineSettings

    settings = PipelineSettings()
    db = Database(settings)
    try:
        frame = Timeframe(timeframe)
    except ValueError as error:
        raise InputError(f"--timeframe {timeframe!r} is not one of 1d, 1h, 1m") from error
    data = load_market_data(db, list(instruments or DEMO_KEYS), frame)
    broker = BrokerConfig(costs=cost_preset(costs))
    if strategy == "sma-cross":
        report = sma_cross_walk_forward(data, fast=fast, slow=slow, cash=cash, broker_config=broker,
                                        train_size=train_bars, test_size=test_bars)
    elif strategy == "buy-and-hold":
        probabilities = buy_and_hold_probabilities(data.close.shape)
        config = EngineConfig(strategy="buy-and-hold", signal=SignalConfig(enter_threshold=0.5),
                              stops=StopConfig(stop_loss_pct=None),
                              sizing=SizingConfig(method="fixed_notional", notional_fraction=0.24))
        report = walk_forward(data, lambda fold: probabilities[fold.test], train_size=train_bars,
                              test_size=test_bars, engine_config=config, broker_config=broker, cash=cash,
                              strategy="buy-and-hold")
    else:
        raise InputError(f"--strategy {strategy!r} is not one of sma-cross, buy-and-hold")
    path = out or settings.home / "reports" / f"backtest_{report.strategy}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    report.tearsheet = write_walk_forward_tearsheet(report, path)
    typer.echo(str(report))
    typer.echo(f"chained equity: {float(report.equity[-1]):.2f} from {cash:.2f} "
               f"({float(np.nanmin(report.equity)):.2f} at the lowest)")


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest_command)
