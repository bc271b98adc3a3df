"""A new trader has the engine's kernels ready: its first bar does not pay numba's import and cache load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys, tempfile
from pathlib import Path
from executor.journal import Journal
from executor.oms import OrderManager
from executor.trader import SmaCrossScorer, Trader
from tradeloom.adapters.brokers.paper import PaperBroker
from tradeloom.engine import kernels
from tradeloom.engine.config import EngineConfig
from tradeloom.engine.state import Universe
from tradeloom.features.online import OnlineFeatureEngine
from tradeloom.synthetic import synthetic_instruments

names = tuple(name for name, value in vars(kernels).items() if isinstance(value, kernels._Kernel))
before = {name: getattr(kernels, name)._call is not None for name in names}
instruments = synthetic_instruments(3)
keys = tuple(i.key for i in instruments)
with tempfile.TemporaryDirectory() as scratch:
    broker = PaperBroker(keys, cash=100_000.0)
    def no_db():
        raise RuntimeError("no database in this test")
    journal = Journal(Path(scratch), no_db, strategy="warm", mode="replay")
    Trader(universe=Universe.of(instruments), config=EngineConfig(strategy="warm"), broker=broker,
           orders=OrderManager(broker, journal), journal=journal, features=OnlineFeatureEngine(keys, "1m"),
           scorer=SmaCrossScorer(len(keys)), mode="replay", cash=100_000.0)
after = {name: getattr(kernels, name)._call is not None for name in names}
print(json.dumps({"before": before, "after": after}))
"""


def test_trader_construction_compiles_every_engine_kernel(tmp_path: Path) -> None:
    # A fresh interpreter: in this one an earlier test may already have compiled them. (Numba's disk cache is
    # shared; loading from it is what the first bar would otherwise pay.)
    root = Path(__file__).resolve().parents[3]
    cache = os.environ.get("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, cwd=root,
                         env={"PYTHONPATH": str(root), "NUMBA_CACHE_DIR": cache,
                              "PATH": "/usr/bin:/bin"})
    state = json.loads(run.stdout.strip().splitlines()[-1])
    assert {"signal_kernel", "bar_memory_kernel", "cash_covers_kernel", "mark_to_market_kernel"} <= set(state["before"])
    assert not any(state["before"].values())
    assert all(state["after"].values())
