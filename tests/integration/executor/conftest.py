"""Fixtures for the executor against the real local TimescaleDB (paper broker, replayed bars)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from executor.settings import ExecutorSettings, TradingMode
from pipelines.ingest import ingest
from tradeloom.adapters.db import Database
from tradeloom.adapters.sources import synthetic_batch
from tradeloom.engine.config import EngineConfig

KEYS = ["SYNTH:SYN000", "SYNTH:SYN001", "SYNTH:SYN002"]
DAY1 = datetime(2024, 1, 1, tzinfo=UTC)
DAY2 = datetime(2024, 1, 2, tzinfo=UTC)
DAY3 = datetime(2024, 1, 3, tzinfo=UTC)


@pytest.fixture()
def market(clean_db: Database) -> Database:
    """Three synthetic instruments, three sessions of minute bars."""
    ingest(synthetic_batch(3, 3, seed=21), clean_db, register_instruments=True)
    return clean_db


@pytest.fixture()
def executor_settings(market: Database, tmp_path: Path) -> Callable[..., ExecutorSettings]:
    def make(strategy: str = "parity", **overrides: object) -> ExecutorSettings:
        values: dict[str, object] = {
            "trading_mode": TradingMode.REPLAY, "home": market.settings.home, "state_root": tmp_path / "executor",
            "database_name": market.settings.database_name, "instruments": KEYS, "timeframe": "1m",
            "model": "baseline:sma_cross", "warmup_bars": 375, "require_validated": False, "cash": 1_000_000.0,
            "engine": EngineConfig(strategy=strategy),
        }
        values.update(overrides)
        return ExecutorSettings(**values)  # type: ignore[arg-type]

    return make
