"""`tradeloom executor run|kill|pause|resume|status` (runs in .loom/venv-live)."""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from executor.settings import TradingMode, load_settings
from tradeloom.errors import TradeloomError

console = Console(width=None if sys.stdout.isatty() else 130)


def _when(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise typer.BadParameter(f"{option}={text!r}: expected an ISO date or time, e.g. 2024-01-02") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run(
    config: Annotated[Path | None, typer.Option(help="YAML or JSON settings file")] = None,
    replay_start: Annotated[str | None, typer.Option(help="replay stored bars from this UTC time")] = None,
    replay_end: Annotated[str | None, typer.Option(help="... up to this UTC time")] = None,
    speed: Annotated[float, typer.Option(help="seconds to wait between replayed bars")] = 0.0,
    reconcile_only: Annotated[bool, typer.Option(help="start, reconcile with the broker, restore stops, exit")] = False,
) -> None:
    """Run the executor: reconcile with the broker, then trade bar by bar (replay or live feed)."""
    from executor.service import ExecutorService, describe_day

    logging.basicConfig(level=os.environ.get("TRADELOOM_LOG_LEVEL", "INFO"),
                        format='{"at":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    overrides = {"trading_mode": TradingMode.REPLAY} if replay_start else {}
    settings = load_settings(config, **overrides)
    service = ExecutorService(settings)
    report = service.start()
    console.print(f"reconciled with {service.broker.name}: {report}")
    if reconcile_only:
        service.close()
        return
    if replay_start is None or replay_end is None:
        service.run_live()  # ticks from the broker's stream until SIGTERM
        service.close()
        return
    summary = service.run_replay(_when(replay_start, "--replay-start"), _when(replay_end, "--replay-end"), speed=speed)
    service.close()
    day = describe_day(service)
    table = Table("client order id", "instrument", "side", "qty", "filled", "type", "purpose", "state", "avg price",
                  title=f"orders ({settings.trading_mode.value}, {service.scorer.name} {service.scorer.version})")
    for row in day["orders"]:
        table.add_row(str(row[0]), str(row[1]), "BUY" if row[2] > 0 else "SELL", str(row[3]), str(row[4]), str(row[5]),
                      str(row[6]), str(row[7]), "" if row[8] is None else f"{row[8]:.4f}")
    console.print(table)
    pnl = summary.end_equity - summary.start_equity
    console.print(f"bars {summary.bars}, orders {summary.orders}, fills {day['fills'][0]}, fees {day['fills'][1]:.2f}, "
                  f"PnL {pnl:+,.2f} (equity {summary.start_equity:,.2f} -> {summary.end_equity:,.2f})")
    if day["orders"]:
        first = day["orders"][0]
        console.print(f"lineage of {first[0]}: model {first[9]} version {first[10]}, feature snapshot {first[11]}, "
                      f"decided at bar {first[12]}")


def _control_file(config: Path | None, name: str) -> Path:
    settings = load_settings(config)
    return settings.kill_switch_path() if name == "KILL" else settings.state_dir / name


def kill(config: Annotated[Path | None, typer.Option()] = None,
         reason: Annotated[str, typer.Option(help="why (journaled)")] = "operator") -> None:
    """Engage the kill switch: no new entries; working entries cancelled at the next bar."""
    path = _control_file(config, "KILL")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{reason} by {os.environ.get('USER', 'unknown')}\n", encoding="utf-8")
    console.print(f"kill switch engaged: {path}")


def pause(config: Annotated[Path | None, typer.Option()] = None) -> None:
    """Pause new entries (exits and protective orders continue)."""
    path = _control_file(config, "PAUSE")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    console.print(f"entries paused: {path}")


def resume(config: Annotated[Path | None, typer.Option()] = None) -> None:
    """Resume entries and release the kill switch (remove both control files)."""
    for name in ("PAUSE", "KILL"):
        _control_file(config, name).unlink(missing_ok=True)
    console.print("entries resumed")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("kill")(kill)
    app.command("pause")(pause)
    app.command("resume")(resume)


def main(app: typer.Typer) -> None:
    try:
        app(standalone_mode=False)
    except TradeloomError as error:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {error}", highlight=False)
        sys.exit(2)
