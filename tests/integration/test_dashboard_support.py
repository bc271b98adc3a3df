"""Shared pieces of the dashboard tests: a replayed executor session in the test database, a dashboard
served by uvicorn on a free port, and the journal numbers the page must agree with. (No tests here.)"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from executor.service import ExecutorService
from executor.settings import ExecutorSettings, TradingMode
from pipelines.dashboard.app import create_app
from pipelines.dashboard.auth import hash_password
from pipelines.dashboard.settings import DashboardSettings
from pipelines.ingest import ingest
from tradeloom.adapters.db import Database
from tradeloom.adapters.sources import synthetic_batch
from tradeloom.engine.config import EngineConfig

KEYS = ["SYNTH:SYN000", "SYNTH:SYN001", "SYNTH:SYN002"]
DAY2 = datetime(2024, 1, 2, tzinfo=UTC)
SESSION_OPEN = DAY2.replace(hour=3, minute=45)  # 09:15 IST
PASSWORD = "correct horse battery"
TOKEN = "t0ken-for-tests-only-0123456789"
CASH = 1_000_000.0


def ingest_market(db: Database) -> None:
    """Three synthetic instruments, three sessions of minute bars (labelled synthetic by the generator)."""
    ingest(synthetic_batch(3, 3, seed=21), db, register_instruments=True)


JOURNAL_TABLES = ("fills", "order_events", "orders", "decisions", "equity_snapshots")


def clear_journal(db: Database) -> None:
    """Empty the trading journal before a replay. Needed beyond strategy names: the paper broker numbers its
    fills SIM0000000001, ... per account, so a second account's fills collide on fills.fill_id and are dropped."""
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute(f"truncate {', '.join(JOURNAL_TABLES)} restart identity")


def executor_settings(db: Database, state_root: Path, strategy: str) -> ExecutorSettings:
    return ExecutorSettings(
        trading_mode=TradingMode.REPLAY, home=db.settings.home, state_root=state_root,
        database_name=db.settings.database_name, instruments=KEYS, timeframe="1m", model="baseline:sma_cross",
        warmup_bars=120, cash=CASH, engine=EngineConfig(strategy=strategy),
        require_validated=False,  # synthetic bars, not run through the data gate here
    )


def new_strategy(prefix: str) -> str:
    """The journal is not truncated between tests: each test trades under its own strategy name."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def replay(db: Database, state_root: Path, strategy: str, end: datetime) -> ExecutorService:
    service = ExecutorService(executor_settings(db, state_root, strategy))
    service.start()
    service.run_replay(SESSION_OPEN, end)
    service.journal.flush()
    return service


def dashboard_settings(state_root: Path, strategy: str, **overrides: object) -> DashboardSettings:
    values: dict[str, object] = {
        "strategy": strategy, "mode": "replay", "executor_state_root": state_root,
        "password_hash": SecretStr(hash_password(PASSWORD)), "token": SecretStr(TOKEN), "refresh_seconds": 1.0,
    }
    values.update(overrides)
    return DashboardSettings(**values)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_dashboard(settings: DashboardSettings, db: Database) -> Iterator[str]:
    """The real app under uvicorn in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, db), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard did not start within 20 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass(frozen=True)
class JournalTruth:
    """Numbers read straight from the journal tables, independently of the dashboard's queries."""

    equity: float
    first_equity: float
    net_quantity: dict[str, int]
    fees: float
    orders: int
    open_orders: int


def journal_truth(db: Database, strategy: str) -> JournalTruth:
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("select equity::float8 from equity_snapshots where strategy = %s and mode = 'replay'"
                    " order by snapshot_at", (strategy,))
        equities = [row[0] for row in cur.fetchall()]
        cur.execute("select f.instrument_key, sum(f.side * f.quantity), sum(f.fees)::float8 from fills f"
                    " join orders o using (client_order_id) where o.strategy = %s group by 1", (strategy,))
        rows = cur.fetchall()
        cur.execute("select count(*), count(*) filter (where state not in ('filled', 'cancelled', 'rejected',"
                    " 'expired')) from orders where strategy = %s", (strategy,))
        counts = cur.fetchone()
    assert counts is not None
    return JournalTruth(equity=equities[-1], first_equity=equities[0],
                        net_quantity={str(key): int(quantity) for key, quantity, _ in rows},
                        fees=sum(float(fee) for _, _, fee in rows), orders=int(counts[0]), open_orders=int(counts[1]))
