"""Service-level fault matrix: the whole executor (replay clock, real kiteconnect SDK -> fake Kite on 127.0.0.1)
trades while every fault of the switchboard is injected into order placement, cancellation (trailing stops
are moved by cancel + replace, so cancels are frequent), reads and the order stream, one after another per
operation as the service reaches it. (The service never modifies orders; the adapters' modify faults are
covered in tests/live/test_kite_execution.py.)

Afterwards a `--reconcile-only` run settles with the venue and the soak's invariants are checked: no
duplicate orders (no blind retry of a placement), no lost fills, positions equal the venue's, every open
position protected; and the trading run itself must end cleanly (exit 0, no traceback).
Prints one JSON line. Runs in .loom/venv-live (`make bench BENCH=fault_matrix`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from soak_restart import KEYS, NS, PYTHON, _check, _follow_prices, _prepare, write_executor_config  # noqa: E402

from tradeloom.adapters.brokers.fakes.faults import Fault  # noqa: E402
from tradeloom.adapters.brokers.fakes.kite_server import FakeKiteServer, Listing  # noqa: E402

MATRIX: dict[str, tuple[Fault, ...]] = {
    "place": (Fault.HTTP_429, Fault.HTTP_500, Fault.HTTP_502, Fault.HTTP_503, Fault.TIMEOUT_BEFORE,
              Fault.TIMEOUT_AFTER, Fault.DROP_CONNECTION, Fault.REJECT, Fault.PARTIAL_FILL, Fault.DELAYED_ACK),
    "cancel": (Fault.HTTP_503, Fault.HTTP_502, Fault.HTTP_429, Fault.TIMEOUT_BEFORE, Fault.TIMEOUT_AFTER,
               Fault.DROP_CONNECTION),
    "read": (Fault.HTTP_502, Fault.HTTP_503, Fault.HTTP_429, Fault.HTTP_500),
    "stream": (Fault.DUPLICATE_UPDATES, Fault.OUT_OF_ORDER_UPDATES, Fault.DROP_STREAM),
}


@dataclass
class FaultRun:
    exit_code: int = 0
    tracebacks: int = 0
    fired: Counter[str] = field(default_factory=Counter)
    armed_not_fired: list[str] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)
    venue_orders: int = 0
    venue_fills: int = 0
    seconds: float = 0.0
    stderr_tail: str = ""


# Placements are armed up front, one fault every few placements: each placement is a single attempt (never
# retried blindly), so the schedule needs no pause, and a fast replay cannot end before the last one fires.
PLACEMENTS_BETWEEN_FAULTS = 2
# Reads and cancellations are retried with a bounded back-off: each fault after the first lets this many
# requests through first, so one retry chain never meets two faults in a row (on a busy host the next fault
# was armed inside the back-off, and start-up reconciliation gave up: the exit a broker that is down gets).
REQUESTS_BETWEEN_RETRIED_FAULTS = 1


def _inject(server: FakeKiteServer, stop: threading.Event, spacing: float) -> list[tuple[str, Fault]]:
    """Arm each operation's faults one at a time: the next only after the previous one fired (so that reads
    and cancellations, which are retried with a bounded back-off, recover in between)."""
    armed: list[tuple[str, Fault]] = []
    for fault in MATRIX["place"]:
        server.faults.arm("place", fault, after=PLACEMENTS_BETWEEN_FAULTS)
        armed.append(("place", fault))
    queues = {operation: list(faults) for operation, faults in MATRIX.items() if operation != "place"}
    waiting: dict[str, tuple[Fault, int]] = {}
    while not stop.is_set() and (queues or waiting):
        fired = Counter(operation for operation, _ in server.faults.fired)
        for operation in list(queues):
            if operation in waiting and fired[operation] <= waiting[operation][1]:
                continue
            waiting.pop(operation, None)
            if not queues[operation]:
                del queues[operation]
                continue
            fault = queues[operation].pop(0)
            server.faults.arm(operation, fault, after=REQUESTS_BETWEEN_RETRIED_FAULTS if fired[operation] else 0)
            armed.append((operation, fault))
            waiting[operation] = (fault, fired[operation])
        stop.wait(spacing)
    return armed


def run_fault_matrix(database: str = "tradeloom_faults", days: int = 2, spacing: float = 0.15) -> FaultRun:
    db, matrix = _prepare(database, days)
    listings = tuple(Listing(100 + i, key.split(":")[1], exchange="SYNTH") for i, key in enumerate(KEYS))
    outcome = FaultRun()
    started = time.perf_counter()
    with FakeKiteServer(listings=listings) as server, tempfile.TemporaryDirectory() as scratch:
        server.faults.slow_seconds = 1.0
        state_root = Path(scratch) / "executor"
        config_file = write_executor_config(
            Path(scratch), server, database, timeout_seconds=0.6,
            engine={"strategy": "faults", "stops": {"stop_loss_pct": 0.003, "trailing": True}},
            # A short replay: lost placements must be closed (and the instrument freed) within it.
            unconfirmed_grace_seconds=3.0)
        stop = threading.Event()
        follower = threading.Thread(target=_follow_prices, args=(server, matrix, state_root / "faults" /
                                                                 "engine-state.json", stop), daemon=True)
        follower.start()
        armed: list[tuple[str, Fault]] = []
        injector = threading.Thread(target=lambda: armed.extend(_inject(server, stop, spacing)), daemon=True)
        injector.start()
        start = datetime.fromtimestamp(int(matrix.bar_at_ns[0]) / NS, tz=UTC).date().isoformat()
        env = dict(os.environ, TRADELOOM_LOG_LEVEL="WARNING")
        base = [str(PYTHON), "-m", "executor", "run", "--config", str(config_file)]
        try:
            trading = subprocess.run([*base, "--replay-start", start, "--replay-end", "2030-01-01"], cwd=ROOT,
                                     env=env, capture_output=True, text=True, timeout=900, check=False)
        finally:
            stop.set()
            injector.join(timeout=5)
        server.faults.clear()
        outcome.exit_code = trading.returncode
        outcome.tracebacks = trading.stderr.count("Traceback")
        outcome.stderr_tail = trading.stderr[-1500:]
        log_file = ROOT / ".loom" / "bench" / "fault_matrix.stderr.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(trading.stderr, encoding="utf-8")
        check = subprocess.run([*base, "--reconcile-only", "--replay-start", start, "--replay-end", "2030-01-01"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        if check.returncode != 0:
            outcome.problems["reconcile_exit"] = check.returncode
        outcome.problems.update(_check(server, db, "faults"))
        outcome.fired = Counter(f"{operation}:{fault.value}" for operation, fault in server.faults.fired)
        outcome.armed_not_fired = [f"{operation}:{fault.value}" for operation, fault in armed
                                   if f"{operation}:{fault.value}" not in outcome.fired]
        outcome.venue_orders = len(server.exchange.orders)
        outcome.venue_fills = len(server.exchange.fills)
    outcome.seconds = time.perf_counter() - started
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args()
    run = run_fault_matrix(days=args.days)
    print(dict(run.fired), file=sys.stderr)
    print(run.stderr_tail, file=sys.stderr)
    print(json.dumps({
        "bench": "fault_matrix", "faults_injected": sum(run.fired.values()), "kinds": len(run.fired),
        "armed_not_fired": run.armed_not_fired, "exit_code": run.exit_code, "tracebacks": run.tracebacks,
        "duplicates": run.problems["duplicates"], "lost_fills": run.problems["lost_fills"],
        "mismatched_positions": run.problems["mismatched_positions"],
        "naked_positions": run.problems["naked_positions"], "venue_orders": run.venue_orders,
        "venue_fills": run.venue_fills, "seconds": round(run.seconds, 1),
    }))


if __name__ == "__main__":
    main()
