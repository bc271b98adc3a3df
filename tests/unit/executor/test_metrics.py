"""Prometheus gauges the executor publishes after every bar: orders by state, positions, equity, day PnL."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from executor.metrics import Metrics
from executor.oms import OrderManager
from tests.unit.executor.test_oms import LINEAGE, RecordingJournal, ScriptedBroker, _intent
from tradeloom.engine.config import EngineConfig
from tradeloom.engine.state import EngineState, Universe

KEYS = ("NSE:INFY", "NSE:TCS")


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_gauges_follow_orders_positions_and_pnl_and_an_emptied_state_reads_zero() -> None:
    broker = ScriptedBroker()
    manager = OrderManager(broker, RecordingJournal())  # type: ignore[arg-type]
    state = EngineState.for_config(EngineConfig(), len(KEYS), 1_000.0)
    trader = SimpleNamespace(universe=Universe.simple(list(KEYS)), state=state)
    journal = SimpleNamespace(pending=3)
    metrics = Metrics(None)

    def update() -> None:
        metrics.update(manager, cast(Any, trader), cast(Any, journal))

    manager.submit(_intent("A"), LINEAGE)
    update()
    assert _sample(metrics, "tradeloom_orders", state="acknowledged") == 1
    assert _sample(metrics, "tradeloom_orders", state="filled") == 0
    assert _sample(metrics, "tradeloom_journal_pending") == 3

    manager.on_update(broker.fill("A", 10))
    state.last_position = np.array([10, -3], dtype=np.int64)
    state.last_equity = 1_040.0
    update()
    assert _sample(metrics, "tradeloom_orders", state="acknowledged") == 0  # not the 1 it had
    assert _sample(metrics, "tradeloom_orders", state="filled") == 1
    assert _sample(metrics, "tradeloom_position", instrument="NSE:INFY") == 10
    assert _sample(metrics, "tradeloom_position", instrument="NSE:TCS") == -3
    assert _sample(metrics, "tradeloom_equity") == 1_040.0
    assert _sample(metrics, "tradeloom_day_pnl") == 40.0
