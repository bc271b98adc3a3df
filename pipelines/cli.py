"""The `tradeloom` command line (typer + rich)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeElapsedColumn
from rich.table import Table

from tradeloom.adapters.db import Database, migrate
from tradeloom.adapters.sources import SourceBatch, bundled_batches, read_file, synthetic_batch
from tradeloom.adapters.store import upsert_instruments
from tradeloom.domain import Instrument, Segment, Timeframe
from tradeloom.errors import InputError, TradeloomError
from tradeloom.settings import PipelineSettings

app = typer.Typer(help="tradeloom: AI-driven algorithmic trading (backtest, paper and live).", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL + TimescaleDB store.", no_args_is_help=True)
ingest_app = typer.Typer(help="Load bars into the raw hypertables.", no_args_is_help=True)
instruments_app = typer.Typer(help="The instrument master.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ingest_app, name="ingest")
app.add_typer(instruments_app, name="instruments")
# A fixed width when not on a terminal keeps tables readable in logs and CI.
console = Console(width=None if sys.stdout.isatty() else 130)


def _database() -> Database:
    return Database(PipelineSettings())


# -- db ------------------------------------------------------------------------------------------

@db_app.command("up")
def db_up() -> None:
    """Start the local cluster (initialising it on first use) and apply migrations."""
    db = _database()
    if db.is_local:
        db.cluster.up()
        console.print(f"database up: [bold]{db.cluster.url()}[/]")
    applied = migrate(db)
    console.print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")


@db_app.command("down")
def db_down() -> None:
    """Stop the local cluster."""
    db = _database()
    if not db.is_local:
        raise InputError("DATABASE_URL points at an external server: tradeloom does not stop it")
    db.cluster.down()
    console.print("database stopped")


@db_app.command("status")
def db_status() -> None:
    """Is the store reachable, where, and which migrations are applied."""
    db = _database()
    if db.is_local and not db.cluster.is_running():
        console.print(f"local cluster in {db.cluster.root}: [red]stopped[/]")
        raise typer.Exit(1)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select extversion from pg_extension where extname = 'timescaledb'")
        version = cur.fetchone()
        cur.execute("select count(*) from schema_migrations")
        count = cur.fetchone()
    console.print(f"database: [green]up[/] at {db.url() if not db.is_local else db.cluster.url()}")
    applied = count[0] if count else 0
    console.print(f"timescaledb: {version[0] if version else 'missing'}; migrations applied: {applied}")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations from sql/ (each once, recorded in schema_migrations)."""
    applied = migrate(_database())
    console.print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")


@db_app.command("reset")
def db_reset(
    yes: Annotated[bool, typer.Option("--yes", help="confirm: every row in the store is deleted")] = False,
) -> None:
    """Drop and recreate the local store (development only; refuses an external DATABASE_URL)."""
    db = _database()
    if not db.is_local:
        raise InputError("db reset only works on the local cluster, not on DATABASE_URL")
    if not yes:
        raise InputError("db reset deletes every row in the local store: add --yes to confirm")
    db.cluster.up()
    name = db.settings.database_name
    db.cluster.psql(f"drop database if exists {name} with (force)")
    db.cluster.psql(f"create database {name} owner {db.settings.owner_role}")
    db.cluster.psql("create extension if not exists timescaledb", database=name)
    applied = migrate(db)
    console.print(f"store {name} recreated; migrations applied: {len(applied)}")


@db_app.command("psql")
def db_psql(role: Annotated[str, typer.Option(help="role to connect as")] = "tradeloom_owner") -> None:
    """Open psql on the store."""
    url = _database().url(role)
    os.execvp("psql", ["psql", url])  # noqa: S606, S607 - hands the terminal to psql


# -- instruments -----------------------------------------------------------------------------------

@instruments_app.command("add")
def instruments_add(
    key: Annotated[str, typer.Argument(help="EXCHANGE:SYMBOL, e.g. NSE:INFY")],
    segment: Segment = Segment.EQUITY,
    tick_size: str = "0.05",
    lot_size: int = 1,
    currency: str = "INR",
    timezone: str = "Asia/Kolkata",
    session_open: str = "09:15",
    session_close: str = "15:30",
    calendar: Annotated[str | None, typer.Option(help="exchange_calendars code, e.g. XBOM")] = None,
) -> None:
    """Add or update an instrument."""
    from datetime import time
    from decimal import Decimal, InvalidOperation

    exchange, _, symbol = key.partition(":")
    if not exchange or not symbol:
        raise InputError(f"instrument {key!r} must look like EXCHANGE:SYMBOL")
    try:
        tick = Decimal(tick_size)
        opens, closes = time.fromisoformat(session_open), time.fromisoformat(session_close)
    except (InvalidOperation, ValueError) as error:
        raise InputError(f"bad tick size {tick_size!r} or session times {session_open!r}/{session_close!r}") from error
    instrument = Instrument(exchange=exchange, symbol=symbol, segment=segment, tick_size=tick, lot_size=lot_size,
                            currency=currency, timezone=timezone, session_open=opens, session_close=closes,
                            calendar=calendar)
    with _database().transaction() as conn:
        upsert_instruments(conn, [instrument])
    console.print(f"instrument {instrument.key} saved")


@instruments_app.command("list")
def instruments_list() -> None:
    """List the instrument master."""
    table = Table("id", "instrument", "segment", "tick", "lot", "tz", "session", "synthetic")
    with _database().transaction() as conn, conn.cursor() as cur:
        cur.execute(
            "select instrument_id, exchange || ':' || symbol, segment, tick_size, lot_size, timezone,"
            " session_open || '–' || session_close, is_synthetic from instruments order by 1"
        )
        for row in cur.fetchall():
            table.add_row(*(str(value) for value in row))
    console.print(table)


# -- ingest ----------------------------------------------------------------------------------------

def _run_ingest(batch: SourceBatch, register: bool) -> None:
    from pipelines.ingest import ingest

    db = _database()
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"{batch.source} → {batch.timeframe.table}", total=None)
        report = ingest(batch, db, register_instruments=register,
                        progress=lambda sent: progress.advance(task, sent))
    line = (f"{report.source} → {report.table}: received {report.received}, inserted {report.inserted}, "
            f"updated {report.updated}, unchanged {report.unchanged}, quarantined {report.quarantined}"
            f" (batch {report.ingest_batch_id}, {report.seconds:.1f}s)")
    console.print(line)
    for reason, count in sorted(report.quarantined_by_reason.items()):
        console.print(f"  quarantined {count:>6} × {reason}")
    if report.not_closed:
        console.print(f"  left out   {report.not_closed:>6} × bar still forming (a later run lands it final)")


@ingest_app.command("bundled")
def ingest_bundled() -> None:
    """Real data shipped in packages: gym-anytrading GOOGL daily + EURUSD hourly, bokeh AAPL/IBM/MSFT/GOOG daily."""
    for batch in bundled_batches():
        _run_ingest(batch, register=True)


@ingest_app.command("synthetic")
def ingest_synthetic(
    instruments: Annotated[int, typer.Option(min=1)] = 5,
    days: Annotated[int, typer.Option(min=1)] = 10,
    seed: int = 7,
) -> None:
    """Seeded synthetic minute bars (labelled synthetic, exchange SYNTH)."""
    _run_ingest(synthetic_batch(instruments, days, seed), register=True)


@ingest_app.command("file")
def ingest_file(
    path: Path,
    timeframe: Annotated[Timeframe, typer.Option(help="bar length")] = Timeframe.DAY,
    instrument: Annotated[str | None, typer.Option(help="EXCHANGE:SYMBOL for every row")] = None,
    symbol_column: Annotated[str | None, typer.Option(help="column holding EXCHANGE:SYMBOL per row")] = None,
    column: Annotated[list[str] | None, typer.Option(help="field=column, e.g. bar_at=Date (repeatable)")] = None,
    timezone: Annotated[str, typer.Option(help="zone of naive timestamps")] = "UTC",
    timestamp_format: Annotated[str | None, typer.Option("--format", help="strftime format")] = None,
) -> None:
    """A CSV or Parquet file of bars (instruments must already exist)."""
    mapping: dict[str, str] = {}
    for item in column or []:
        field_name, sep, column_name = item.partition("=")
        if not sep or field_name not in {"bar_at", "open", "high", "low", "close", "volume"}:
            raise InputError(f"--column {item!r}: expected field=column with field one of bar_at, open, high, "
                             "low, close, volume")
        mapping[field_name] = column_name
    batch = read_file(path, timeframe=timeframe, columns=mapping, instrument_key=instrument,
                      symbol_column=symbol_column, timezone=timezone, timestamp_format=timestamp_format)
    _run_ingest(batch, register=False)


# -- summary and demo --------------------------------------------------------------------------------

@app.command("summary")
def summary() -> None:
    """Rows per instrument, first/last bar and gaps against each instrument's session."""
    from pipelines.summary import summarise

    table = Table("instrument", "tf", "rows", "first bar (UTC)", "last bar (UTC)", "missing", "gaps", "data",
                  title="market data in the store")
    for row in summarise(_database()):
        table.add_row(row.instrument, row.timeframe, f"{row.rows:,}", f"{row.first_at:%Y-%m-%d %H:%M}",
                      f"{row.last_at:%Y-%m-%d %H:%M}", str(row.missing_bars), str(row.gaps),
                      "synthetic" if row.is_synthetic else "real")
    console.print(table)


def _print_rows(title: str, rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    table = Table(*rows[0].keys(), title=title)
    for row in rows:
        table.add_row(*(f"{value:.4g}" if isinstance(value, float) else str(value) for value in row.values()))
    console.print(table)


DEMO_EXECUTOR_DAY = ("2024-01-12", "2024-01-13")  # the last session of the seeded synthetic minute bars


@app.command("demo")
def demo(
    skip_training: Annotated[bool, typer.Option(help="reuse the registered models")] = False,
) -> None:
    """The main job end to end on the embedded defaults: data, quality gate, features, models, backtest,
    a replayed trading day through the executor, drift report, daily email."""
    import json
    import time

    settings = PipelineSettings()
    db = _database()
    started = time.perf_counter()
    artefacts: dict[str, str] = {}

    def stage(number: int, title: str) -> None:
        console.rule(f"[bold]{number}. {title}[/]  [dim]({time.perf_counter() - started:.0f}s)[/]")

    stage(1, "database")
    db_up()
    stage(2, "ingest real bundled data")
    ingest_bundled()
    stage(3, "ingest seeded synthetic minute bars")
    ingest_synthetic(settings.synthetic_instruments, settings.synthetic_days, settings.synthetic_seed)
    summary()
    stage(4, "data quality gate (Great Expectations)")
    from pipelines.validate import demo_gate

    for line in demo_gate(db):
        console.print(line, highlight=False)
    stage(5, "features in TimescaleDB (dbt)")
    from pipelines.features import demo_build

    console.print(demo_build(db), highlight=False)
    stage(6, "train, register, @champion (MLflow)")
    from pipelines.commands.models import comparison_table
    from pipelines.mlflow_server import registry_target
    from pipelines.train import demo_train, load_config, train_from_db
    from tradeloom.settings import project_root

    if not skip_training:
        console.print(comparison_table(demo_train(db), "out-of-sample, after costs: models vs baselines (AAPL daily)"))
        intraday, _ = train_from_db(db, load_config(project_root() / "configs" / "direction_intraday.yaml"),
                                    registry_target(db.settings))
        console.print(comparison_table(intraday.comparison_rows(),
                                       "intraday model for the executor (synthetic minute bars)"))
    stage(7, "walk-forward backtest vs baselines (the engine)")
    from pipelines.backtest import demo_walk_forward

    reports = settings.home / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    tearsheet = demo_walk_forward(db, reports)
    artefacts["tearsheet"] = str(tearsheet)
    console.print(f"tearsheet: {tearsheet}")
    stage(8, "portfolio construction and RL sizing (walk-forward, AAPL/IBM/MSFT/GOOG daily)")
    from pipelines.portfolio_backtest import demo_portfolio
    from pipelines.rl.evaluate import demo_rl

    _print_rows("portfolio methods, out of sample after costs", demo_portfolio(db))
    _print_rows("RL sizing vs the supervised model vs baselines (AAPL, out of sample)", demo_rl(db))
    # The intraday champion is trained on seeded synthetic bars (a random walk: no real skill), so its
    # probabilities stay near 1/3; the demo's entry threshold is set low enough that the day trades.
    stage(9, "a replayed trading day through the executor (paper broker, @champion)")
    from tradeloom.engine.config import cost_preset

    config = settings.home / "demo" / "executor.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({
        "trading_mode": "replay", "broker": "paper", "model": "mlflow:tradeloom-direction_intraday", "timeframe": "1m",
        "instruments": [f"SYNTH:SYN{i:03d}" for i in range(settings.synthetic_instruments)], "warmup_bars": 1000,
        "engine": {"strategy": "demo", "product": "intraday",
                   "signal": {"enter_threshold": 0.36, "exit_threshold": 0.37, "cooldown_bars": 5},
                   "risk": {"no_entry_minutes_before_close": 20, "square_off_minutes_before_close": 10}},
        "paper": {"costs": cost_preset("nse_equity_intraday").model_dump(), "participation_cap": 0.1},
        "state_root": str(settings.home / "demo" / "executor"),
    }), encoding="utf-8")
    import shutil

    shutil.rmtree(settings.home / "demo" / "executor", ignore_errors=True)  # a fresh paper account each demo
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("delete from order_events where client_order_id in (select client_order_id from orders"
                    " where strategy = 'demo'); delete from fills where client_order_id in (select client_order_id"
                    " from orders where strategy = 'demo'); delete from orders where strategy = 'demo';"
                    " delete from decisions where strategy = 'demo';"
                    " delete from equity_snapshots where strategy = 'demo'")
    python = settings.home / "venv-live" / "bin" / "python"
    code = subprocess.call([str(python), "-m", "executor", "run", "--config", str(config),
                            "--replay-start", DEMO_EXECUTOR_DAY[0], "--replay-end", DEMO_EXECUTOR_DAY[1]])
    if code != 0:
        raise TradeloomError(f"the executor replay exited with {code}")
    stage(10, "drift report (Evidently)")
    from pipelines.drift import demo_drift

    drift = demo_drift(db)
    artefacts["drift report"] = str(drift)
    console.print(f"drift report: {drift}")
    stage(11, "daily email (captured by a local SMTP server)")
    from pipelines.report import demo_report

    os.environ.setdefault("TRADELOOM_REPORT_STRATEGY", "demo")  # the executor replay's strategy above
    email = demo_report(db, 0)
    artefacts["daily email"] = str(email)
    console.print(f"email: {email}")
    stage(12, "where everything is")
    from pipelines.dashboard import demo_info

    for line in demo_info():
        console.print(line, highlight=False)
    artefacts["GX data docs"] = str(settings.home / "gx")
    artefacts["dbt docs"] = str(settings.home / "dbt")
    artefacts["MLflow artifacts"] = str(settings.home / "mlartifacts")
    for name, path in artefacts.items():
        console.print(f"  {name:>18}: {path}", highlight=False)
    console.print("  open the UIs: [bold]tradeloom ui[/] (Airflow + MLflow), [bold]tradeloom dashboard[/] (trading)")
    console.print(f"[green]demo finished in {time.perf_counter() - started:.0f}s[/]")


@app.command("executor", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def executor(ctx: typer.Context) -> None:
    """The live executor; runs in .loom/venv-live (`tradeloom executor run --config ...`)."""
    python = PipelineSettings().home / "venv-live" / "bin" / "python"
    if not python.exists():
        raise InputError(f"{python} not found: run `make setup`")
    raise typer.Exit(subprocess.call([str(python), "-m", "executor", *ctx.args]))


def main() -> None:
    from pipelines.commands import register_all

    register_all(app)
    logging.basicConfig(level=os.environ.get("TRADELOOM_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        code = app(standalone_mode=False)  # click returns (not raises) typer.Exit codes in this mode
        sys.exit(code if isinstance(code, int) else 0)
    except TradeloomError as error:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {error}", highlight=False, markup=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except Exception as error:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
