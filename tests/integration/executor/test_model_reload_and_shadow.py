"""Hot reload of a moved @champion and a @challenger shadow, with real MLflow on the local PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from executor.service import ExecutorService
from executor.settings import ExecutorSettings
from pipelines.learners import fit_lightgbm
from pipelines.shadow import compare_day
from tests.integration.executor.conftest import DAY1, DAY2, KEYS
from tradeloom.adapters.db import Database
from tradeloom.adapters.pgcluster import LocalCluster
from tradeloom.adapters.registry import (
    CHAMPION,
    LoggedModel,
    RegistryTarget,
    RunRecord,
    log_run,
    register_version,
    set_alias,
)
from tradeloom.adapters.store import load_bar_matrix
from tradeloom.domain import Timeframe
from tradeloom.features.online import OnlineFeatureEngine, replay
from tradeloom.features.spec import spec_hash
from tradeloom.models.compatibility import ModelCard
from tradeloom.models.config import LightGBMParams

NS = 1_000_000_000
NAME = "hot_reload"


@pytest.fixture()
def registry(market: Database, tmp_path: Path) -> Iterator[RegistryTarget]:
    cluster = LocalCluster(market.settings.pg_dir)
    name = f"mlflow_exec_{os.getpid()}"
    cluster.psql(f"drop database if exists {name} with (force)")
    cluster.psql(f"create database {name} owner tradeloom_owner")
    target = RegistryTarget(cluster.sqlalchemy_url("tradeloom_owner", name), tmp_path / "mlartifacts")
    with market.transaction() as conn:
        bars = load_bar_matrix(conn, Timeframe.MINUTE, KEYS, int(DAY1.timestamp() * NS), int(DAY2.timestamp() * NS))
    engine = OnlineFeatureEngine(tuple(KEYS), "1m")
    features = replay(engine, bars.bar_at_ns, bars.open, bars.high, bars.low, bars.close, bars.volume)
    x = np.nan_to_num(features.reshape(-1, features.shape[-1]))
    forward = (np.roll(bars.close, -5, axis=0) / bars.close - 1).reshape(-1)
    y = np.digitize(np.nan_to_num(forward), [-0.0005, 0.0005]).astype(np.int64)
    rows = np.arange(len(y))
    names = engine.spec.names
    for seed, leaves in ((1, 4), (2, 15)):
        model = fit_lightgbm(x, y, rows[: len(y) * 3 // 4], rows[len(y) * 3 // 4:],
                             LightGBMParams(num_leaves=leaves, n_estimators=30, early_stopping_rounds=5), seed=seed)
        card = ModelCard(name=NAME, kind="lightgbm", feature_names=names, feature_spec_hash=spec_hash(), window=1)
        example = np.ascontiguousarray(x[:5], dtype=np.float32)
        logged = log_run(target, RunRecord(f"seed{seed}", {"seed": seed}, [], {}, {}, model=LoggedModel(
            card, model.to_onnx(len(names)), model.native, "lightgbm", example,
            model.predict_raw(x, np.arange(5)))))
        assert logged.onnx_model_uri is not None
        version = register_version(target, NAME, logged.onnx_model_uri, logged.run_id, {"seed": str(seed)})
        if seed == 1:
            set_alias(target, NAME, CHAMPION, version)
    yield target
    cluster.psql(f"drop database if exists {name} with (force)")


def _decision_versions(db: Database, mode: str) -> list[str]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select model_version from decisions where strategy = 'hot' and mode = %s order by bar_at", (mode,))
        return [str(row[0]) for row in cur.fetchall()]


def test_champion_moves_mid_session_and_the_challenger_shadows_on_paper(
    market: Database, registry: RegistryTarget, executor_settings: Callable[..., ExecutorSettings]
) -> None:
    settings = executor_settings("hot", model=f"mlflow:{NAME}", mlflow_tracking_uri=registry.tracking_uri,
                                 shadow_model=f"mlflow:{NAME}@challenger", model_poll_bars=10)
    service = ExecutorService(settings)
    service.start()
    opens = DAY2.replace(hour=3, minute=45)
    service.run_replay(DAY2, opens + timedelta(minutes=40))  # the first 40 bars
    assert service.scorer.version == "1"
    set_alias(registry, NAME, CHAMPION, "2")
    service.run_replay(DAY2, DAY2.replace(hour=5))
    service.close()
    live = _decision_versions(market, "replay")
    shadow = _decision_versions(market, "shadow")
    assert live[0] == "1" and live[-1] == "2"
    switch = live.index("2")
    assert all(version == "1" for version in live[:switch]) and all(version == "2" for version in live[switch:])
    assert switch % 10 == 0  # switched at a polling point, between bars
    assert shadow == ["2"] * len(live)  # the challenger decided every bar the champion did
    with market.transaction() as conn, conn.cursor() as cur:
        cur.execute("select detail->>'from', detail->>'to' from executor_events where kind = 'model_switch'")
        assert cur.fetchall() == [("1", "2")]
    report = {row.mode: row for row in compare_day(market, "hot", DAY2.date())}
    assert set(report) == {"replay", "shadow"}
    assert report["replay"].decisions == report["shadow"].decisions == len(live)
    assert report["shadow"].model_version == "2"
