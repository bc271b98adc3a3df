"""The whole executor against the fake Kite server while every placement, cancellation, read and stream fault
is injected (bench/fault_matrix.py): it must end cleanly and leave the venue and the journal agreeing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from fault_matrix import MATRIX, run_fault_matrix  # noqa: E402


def test_service_under_every_fault_ends_cleanly_with_no_duplicate_lost_or_naked_position() -> None:
    run = run_fault_matrix(database=f"tradeloom_faults_{os.getpid()}", days=2)
    assert run.exit_code == 0 and run.tracebacks == 0, run.stderr_tail
    expected = {f"{operation}:{fault.value}" for operation, faults in MATRIX.items() for fault in faults}
    assert set(run.fired) == expected, f"faults never reached: {sorted(expected - set(run.fired))}"
    assert run.venue_orders > 0 and run.venue_fills > 0, "the run must trade to prove anything"
    problems = {name: run.problems[name] for name in ("duplicates", "lost_fills", "mismatched_positions",
                                                      "naked_positions", "reconcile_exit")}
    assert problems == dict.fromkeys(problems, 0), problems
