"""Crash soak: kill -9 the executor at random moments during replayed sessions against the fake Kite server.

Each cycle: start the executor (replay, real kiteconnect SDK -> fake Kite on 127.0.0.1), kill -9 it after a
random delay, restart it with --reconcile-only, then check the invariants against the venue:
duplicates (two orders with one client order id), lost fills (a venue trade missing from the journal),
mismatched positions (venue vs journal fills), naked positions (a venue position without a working stop).
Prints one JSON line. Runs in .loom/venv-live (`make bench BENCH=soak_restart`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.ingest import ingest  # noqa: E402
from tradeloom.adapters.brokers.fakes.kite_server import FakeKiteServer, Listing  # noqa: E402
from tradeloom.adapters.db import Database, migrate  # noqa: E402
from tradeloom.adapters.pgcluster import LocalCluster  # noqa: E402
from tradeloom.adapters.sources import synthetic_batch  # noqa: E402
from tradeloom.adapters.store import load_bar_matrix  # noqa: E402
from tradeloom.domain import OrderState, Timeframe  # noqa: E402
from tradeloom.settings import PipelineSettings  # noqa: E402

KEYS = ["SYNTH:SYN000", "SYNTH:SYN001", "SYNTH:SYN002"]
NS = 1_000_000_000
PYTHON = ROOT / ".loom" / "venv-live" / "bin" / "python"


@dataclass
class SoakResult:
    restarts: int = 0
    duplicates: int = 0
    lost_fills: int = 0
    mismatched_positions: int = 0
    naked_positions: int = 0
    venue_orders: int = 0
    venue_fills: int = 0
    failures: list[str] | None = None
    bars_decided: int = 0


def _prepare(database: str, days: int) -> tuple[Database, object]:
    settings = PipelineSettings(home=ROOT / ".loom", database_name=database, database_url=None)
    cluster = LocalCluster(settings.pg_dir)
    cluster.up()
    cluster.psql(f"drop database if exists {database} with (force)")
    cluster.psql(f"create database {database} owner tradeloom_owner")
    cluster.psql("create extension if not exists timescaledb", database=database)
    db = Database(settings)
    migrate(db)
    ingest(synthetic_batch(3, days, seed=5), db, register_instruments=True)
    with db.transaction() as conn:
        matrix = load_bar_matrix(conn, Timeframe.MINUTE, KEYS, 0, 2**62)
    return db, matrix


def _follow_prices(server: FakeKiteServer, matrix: object, state_file: Path, stop: threading.Event) -> None:
    """Move the venue's prices with the executor's replay clock (the last bar it decided)."""
    stamps = matrix.bar_at_ns  # type: ignore[attr-defined]
    closes = matrix.close  # type: ignore[attr-defined]
    last = -1
    while not stop.is_set():
        try:
            bar = int(json.loads(state_file.read_text(encoding="utf-8"))["last_bar_at_ns"])
        except (OSError, ValueError, KeyError):
            bar = int(stamps[0])
        row = int(min(max(stamps.searchsorted(bar), 0), len(stamps) - 1))
        if row != last:
            for i, key in enumerate(KEYS):
                server.exchange.set_price(key, Decimal(str(round(float(closes[row, i]), 2))))
            last = row
        stop.wait(0.02)


def _check(server: FakeKiteServer, db: Database, strategy: str) -> Counter[str]:
    problems: Counter[str] = Counter()
    exchange = server.exchange
    duplicated = {tag: count for tag, count in exchange.count_by_tag().items() if count > 1}
    problems["duplicates"] = sum(count - 1 for count in duplicated.values())
    if duplicated:
        details = [(o.tag, o.order_type.value, str(o.trigger_price), o.quantity, o.state.value)
                   for o in exchange.orders.values() if o.tag in duplicated]
        print(f"duplicated tags: {details[:6]}", file=sys.stderr)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select fill_id from fills")
        journaled = {row[0] for row in cur.fetchall()}
        cur.execute("select instrument_key, sum(side * quantity) from fills group by 1")
        journal_positions = {key: int(quantity) for key, quantity in cur.fetchall()}
    venue_fills = {fill.fill_id for fill in exchange.fills if fill.tag}
    problems["lost_fills"] = len(venue_fills - journaled)
    for position in exchange.positions():
        if journal_positions.get(position.instrument_key, 0) != position.quantity:
            problems["mismatched_positions"] += 1
        if position.quantity == 0:
            continue
        covering = sum(
            order.quantity - order.filled_quantity for order in exchange.orders.values()
            if order.instrument_key == position.instrument_key and not order.state.is_terminal
            and order.state is not OrderState.REJECTED and order.trigger_price is not None
            and int(order.side) * position.quantity < 0
        )
        if covering < abs(position.quantity):
            problems["naked_positions"] += 1
    return problems


def write_executor_config(scratch: Path, server: FakeKiteServer, database: str, *, engine: dict[str, object],
                          unconfirmed_grace_seconds: float = 30.0, **kite: float) -> Path:
    """A replay executor on the baseline model trading KEYS through the fake Kite server."""
    config = {
        "trading_mode": "replay", "broker": "kite", "home": str(ROOT / ".loom"),
        "state_root": str(scratch / "executor"), "database_name": database, "instruments": KEYS, "timeframe": "1m",
        "model": "baseline:sma_cross", "warmup_bars": 30, "cash": 1_000_000.0, "require_validated": False,
        "engine": engine, "unconfirmed_grace_seconds": unconfirmed_grace_seconds,
        "kite": {"api_key": server.api_key, "api_secret": server.api_secret,
                 "access_token": server.issue_access_token(), "root": server.root, "ws_root": server.ws_root,
                 "backoff_seconds": 0.05, "reads_per_second": 200.0, "orders_per_second": 50.0, **kite},
    }
    path = scratch / "executor.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def run_soak(restarts: int, seed: int = 1, database: str = "tradeloom_soak", days: int = 3,
             min_delay: float = 2.5, max_delay: float = 7.0) -> SoakResult:
    rng = random.Random(seed)
    db, matrix = _prepare(database, days)
    listings = tuple(Listing(100 + i, key.split(":")[1], exchange="SYNTH") for i, key in enumerate(KEYS))
    result = SoakResult(failures=[])
    with FakeKiteServer(listings=listings) as server, tempfile.TemporaryDirectory() as scratch:
        state_root = Path(scratch) / "executor"
        config_file = write_executor_config(Path(scratch), server, database, engine={"strategy": "soak"})
        stop = threading.Event()
        follower = threading.Thread(target=_follow_prices, args=(server, matrix, state_root / "soak" /
                                                                 "engine-state.json", stop), daemon=True)
        follower.start()
        start = datetime.fromtimestamp(int(matrix.bar_at_ns[0]) / NS, tz=UTC).date().isoformat()
        end = "2030-01-01"
        env = dict(os.environ, TRADELOOM_LOG_LEVEL="WARNING")
        base = [str(PYTHON), "-m", "executor", "run", "--config", str(config_file)]
        try:
            for cycle in range(restarts):
                trading = subprocess.Popen([*base, "--replay-start", start, "--replay-end", end],
                                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(rng.uniform(min_delay, max_delay))
                if trading.poll() is None:
                    trading.send_signal(signal.SIGKILL)
                _, trading_err = trading.communicate()
                if trading.returncode not in (0, -signal.SIGKILL):
                    result.failures.append(f"cycle {cycle}: trading run exited {trading.returncode}: "
                                           f"{trading_err.decode()[-400:]}")
                check = subprocess.run([*base, "--reconcile-only", "--replay-start", start, "--replay-end", end],
                                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                                       check=False)
                if check.returncode != 0:
                    result.failures.append(f"cycle {cycle}: reconcile exited {check.returncode}: {check.stderr[-400:]}")
                result.restarts += 1
                state_file = state_root / "soak" / "engine-state.json"
                if state_file.exists():
                    result.bars_decided = json.loads(state_file.read_text(encoding="utf-8"))["engine"]["bars_seen"]
                problems = _check(server, db, "soak")
                # Duplicates and lost fills never heal, so the last check holds every one that happened;
                # mismatches and naked positions are counted per restart.
                result.duplicates = problems["duplicates"]
                result.lost_fills = problems["lost_fills"]
                result.mismatched_positions += problems["mismatched_positions"]
                result.naked_positions += problems["naked_positions"]
                if sum(problems.values()):
                    result.failures.append(f"cycle {cycle}: {dict(problems)}")
        finally:
            stop.set()
        result.venue_orders = len(server.exchange.orders)
        result.venue_fills = len(server.exchange.fills)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--restarts", type=int, default=int(os.environ.get("BENCH_SOAK_RESTARTS", "200")))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    result = run_soak(args.restarts, args.seed, days=args.days)
    for failure in (result.failures or [])[:10]:
        print(failure, file=sys.stderr)
    print(json.dumps({
        "bench": "soak_restart", "restarts": result.restarts, "duplicates": result.duplicates,
        "lost_fills": result.lost_fills, "mismatched_positions": result.mismatched_positions,
        "naked_positions": result.naked_positions, "venue_orders": result.venue_orders,
        "venue_fills": result.venue_fills, "bars_decided": result.bars_decided, "errors": len(result.failures or []),
        "seconds": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()
