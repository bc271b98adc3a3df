"""A short crash soak (kill -9 at random moments, then restart and reconcile) against the fake Kite server.

The full 200-restart soak is `make bench BENCH=soak_restart`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from soak_restart import run_soak  # noqa: E402


def test_kill_dash_nine_restarts_lose_nothing_and_duplicate_nothing() -> None:
    result = run_soak(restarts=4, seed=3, database=f"tradeloom_soak_{os.getpid()}", days=2)
    assert result.failures == []
    assert result.restarts == 4
    assert result.venue_orders > 0, "the soak must actually trade to prove anything"
    assert (result.duplicates, result.lost_fills, result.mismatched_positions, result.naked_positions) == (0, 0, 0, 0)
