"""An RL sizing policy as @champion: trained (seeded DQN), exported to ONNX, registered in MLflow, served by
the executor in replay with the paper broker through the same port as the direction models, and checked
against the environment's backtest of the same registered policy (backtest = live)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from executor.service import ExecutorService
from executor.settings import ExecutorSettings
from pipelines.rl.agents import AgentConfig, train_agent
from pipelines.rl.env import EnvConfig, EnvData
from pipelines.rl.evaluate import register_policy, run_target_policy, served_policy
from pipelines.rl.online_data import env_data_from_bars
from tests.integration.executor.conftest import DAY1, DAY2, DAY3, KEYS
from tradeloom.adapters.db import Database
from tradeloom.adapters.onnx_model import OnnxScorer
from tradeloom.adapters.pgcluster import LocalCluster
from tradeloom.adapters.registry import (
    CHAMPION,
    RegistryTarget,
    load_onnx,
    set_alias,
)
from tradeloom.adapters.store import load_bar_matrix, load_instruments
from tradeloom.domain import Timeframe
from tradeloom.engine.config import EngineConfig, RiskConfig
from tradeloom.features.spec import spec_hash
from tradeloom.models.compatibility import ModelRefusedError
from tradeloom.portfolio.config import RebalanceConfig
from tradeloom.portfolio.sizing_policy import serving_rebalance

NS = 1_000_000_000
NAME = "rl_sizing"
STRATEGY = "rlchamp"
KEY = KEYS[0]
CAP = 0.3  # the executor's position cap, below the policy's max weight (1.0): the risk rules must bind


@dataclass
class Trained:
    registry: RegistryTarget
    version: str
    env_config: EnvConfig
    agent: Any
    train: EnvData
    test_day: EnvData  # DAY2 of KEY, online features warmed up on DAY1


def _engine() -> EngineConfig:
    return EngineConfig(strategy=STRATEGY, risk=RiskConfig(max_position_fraction=CAP))


@pytest.fixture()
def trained(market: Database, tmp_path: Path,
            executor_settings: Callable[..., ExecutorSettings]) -> Iterator[Trained]:
    cluster = LocalCluster(market.settings.pg_dir)
    database = f"mlflow_rlchamp_{os.getpid()}"
    cluster.psql(f"drop database if exists {database} with (force)")
    cluster.psql(f"create database {database} owner tradeloom_owner")
    registry = RegistryTarget(cluster.sqlalchemy_url("tradeloom_owner", database), tmp_path / "mlartifacts")
    with market.transaction() as conn:
        instruments = load_instruments(conn, [KEY])
        bars = load_bar_matrix(conn, Timeframe.MINUTE, [KEY], int(DAY1.timestamp() * NS), int(DAY3.timestamp() * NS))
    train = env_data_from_bars(bars, instruments, KEY, Timeframe.MINUTE, start_ns=int(DAY1.timestamp() * NS),
                               end_ns=int(DAY2.timestamp() * NS))
    train = train.rows(np.arange(30, len(train)))  # past the features' warm-up
    test_day = env_data_from_bars(bars, instruments, KEY, Timeframe.MINUTE, start_ns=int(DAY2.timestamp() * NS))
    settings = executor_settings(STRATEGY, engine=_engine())
    engine = settings.engine
    env_config = EnvConfig(
        max_weight=1.0, episode_bars=100, cash=settings.cash, broker=settings.paper, penalty="none",
        rebalance=serving_rebalance(RebalanceConfig(min_trade_fraction=0.01, cash_buffer=0.01),
                                    strategy=engine.strategy, product=engine.product, risk=engine.risk),
    )
    agent = train_agent(AgentConfig(kind="dqn", timesteps=600, learning_starts=200, buffer_size=1_000,
                                    batch_size=32, target_update_interval=100, seed=7), train, env_config)
    _, version = register_policy(registry, agent, "dqn", train, env_config, name=NAME, metrics={},
                                 spec_hash=spec_hash())
    set_alias(registry, NAME, CHAMPION, version)
    yield Trained(registry, version, env_config, agent, train, test_day.standardised_by(train))
    cluster.psql(f"drop database if exists {database} with (force)")


def _decisions(db: Database) -> list[tuple[str, str, dict[str, object]]]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select model_name, model_version, record from decisions where strategy = %s order by bar_at",
                    (STRATEGY,))
        return [(name, version, record if isinstance(record, dict) else json.loads(record))
                for name, version, record in cur.fetchall()]


def _orders(db: Database) -> list[tuple[str, int, int, int, str, str]]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select client_order_id, side, quantity, bar_at, model_name, model_version from orders"
                    " where strategy = %s order by bar_at, client_order_id", (STRATEGY,))
        return [(client_id, side, quantity, int(bar_at.timestamp() * NS), name, version)
                for client_id, side, quantity, bar_at, name, version in cur.fetchall()]


def test_executor_rl_champion_replay_trades_within_caps_and_matches_backtest(
    market: Database, trained: Trained, executor_settings: Callable[..., ExecutorSettings]
) -> None:
    settings = executor_settings(STRATEGY, instruments=[KEY], model=f"mlflow:{NAME}",
                                 mlflow_tracking_uri=trained.registry.tracking_uri, engine=_engine())
    service = ExecutorService(settings)
    service.start()
    summary = service.run_replay(DAY2, DAY3)
    service.close()
    assert service.scorer.name == NAME and service.scorer.version == trained.version
    assert summary.bars == len(trained.test_day) == 375

    decisions = _decisions(market)
    orders = _orders(market)
    assert len(decisions) == summary.bars
    assert {(name, version) for name, version, _ in decisions} == {(NAME, trained.version)}
    assert len(orders) >= 2, "the policy should trade on a synthetic day"
    assert {(name, version) for *_, name, version in orders} == {(NAME, trained.version)}

    # Target weights are the policy's (within [0, max_weight]) and the positions respect the risk cap.
    records = [record["instruments"][KEY] for _, _, record in decisions]  # type: ignore[index]
    targets = np.array([r["target_weight"] for r in records])
    held = np.array([r["position_weight"] for r in records])
    approved = np.array([r["approved"] for r in records])
    assert set(np.round(targets, 6)) <= {0.0, 0.5, 1.0}  # the DQN's action levels, nothing else
    assert (targets > CAP).any(), "the policy should ask for more than the cap"
    assert held.max() > 0.0
    assert (held <= CAP * 1.02).all()  # capped at the decision's close, marked at a later close
    closes = trained.test_day.close
    equity = np.array([record["equity"] for _, _, record in decisions])
    increased = approved > np.array([r["position"] for r in records])
    assert increased.any()
    # Every increase is capped at the decision's close and equity (reductions below dust may lag a move).
    assert (approved[increased] * closes[increased] / equity[increased] <= CAP + 1e-9).all()

    # Backtest = live: the registered graph, read as the executor reads it (`served_policy`), through the
    # environment over the same day gives the executor's target weights, orders and equity.
    loaded = load_onnx(trained.registry, NAME, CHAMPION)
    episode = run_target_policy(trained.test_day, trained.env_config,
                                served_policy(OnnxScorer(loaded.onnx_bytes, loaded.card)))
    steps = len(episode.target_weights)  # the environment decides at every close but the last
    assert steps == summary.bars - 1
    np.testing.assert_array_equal(targets[:steps], np.round(episode.target_weights, 6))
    last_bar = int(trained.test_day.bar_at_ns[-1])
    executor_intents = sorted((client_id, side, quantity) for client_id, side, quantity, bar_at, *_ in orders
                              if bar_at < last_bar)
    assert executor_intents == sorted(episode.intents)
    assert summary.end_equity == pytest.approx(float(episode.equity[-1]), rel=1e-12)

    # A policy whose inputs are not the online features + the state is refused, naming the field.
    bad = replace(trained.train, feature_names=("not_a_feature", *trained.train.feature_names[1:]))
    _, version = register_policy(trained.registry, trained.agent, "dqn", bad, trained.env_config, name="rl_bad",
                                 metrics={}, spec_hash=spec_hash())
    set_alias(trained.registry, "rl_bad", CHAMPION, version)
    with pytest.raises(ModelRefusedError, match=r"feature_names .*'not_a_feature'"):
        ExecutorService(settings.model_copy(update={"model": "mlflow:rl_bad"}))
