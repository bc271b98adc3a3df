"""RL sizing on the bundled real daily AAPL: walk-forward comparison, and MLflow registration of the policy
so the executor's port (load_onnx + OnnxScorer) serves it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from pipelines.backtest import load_market_data
from pipelines.rl.env import STATE_FEATURES, EnvConfig
from pipelines.rl.evaluate import DEMO_KEY, compare_on_folds, env_data_from_market, register_policy
from tradeloom.adapters.db import Database
from tradeloom.adapters.onnx_model import OnnxScorer
from tradeloom.adapters.pgcluster import LocalCluster
from tradeloom.adapters.registry import CHALLENGER, RegistryTarget, alias_version, load_onnx
from tradeloom.adapters.sources import bundled_batches
from tradeloom.domain import Timeframe
from tradeloom.settings import PipelineSettings

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def bundled_db(database: Database) -> Database:
    from pipelines.ingest import ingest

    with database.transaction(database.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from bars_1d b join instruments i using (instrument_id) where i.symbol = 'AAPL'")
        row = cur.fetchone()
        present = row[0] if row else 0
    if not present:
        for batch in bundled_batches():
            if batch.timeframe is Timeframe.DAY and "bokeh" in batch.source:
                ingest(batch, database, register_instruments=True)
    return database


@pytest.fixture(scope="module")
def rl_target(test_settings: PipelineSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryTarget]:
    cluster = LocalCluster(test_settings.pg_dir)
    cluster.up()
    name = f"mlflow_rl_{os.getpid()}"
    cluster.psql(f"drop database if exists {name} with (force)")
    cluster.psql(f"create database {name} owner tradeloom_owner")
    yield RegistryTarget(cluster.sqlalchemy_url("tradeloom_owner", name), tmp_path_factory.mktemp("mlartifacts"))
    cluster.psql(f"drop database if exists {name} with (force)")


def test_rl_compare_and_register_policy_served_through_onnx_port(bundled_db: Database,
                                                                  rl_target: RegistryTarget) -> None:
    data = env_data_from_market(load_market_data(bundled_db, [DEMO_KEY], Timeframe.DAY), 0)
    rows, extra = compare_on_folds(data, train_size=504, test_size=126, timesteps=256, max_folds=1)
    names = [row["strategy"] for row in rows]
    assert names == ["rl_ppo", "rl_dqn", "supervised_lightgbm", "buy_and_hold", "sma_cross_10_50", "flat"]
    flat = rows[-1]
    assert flat["total_return"] == 0.0 and flat["costs"] == 0.0
    assert all(row["costs"] > 0 for row in rows if row["strategy"] in ("buy_and_hold", "supervised_lightgbm"))

    agent, train = extra["agents"]["ppo"], extra["train"]
    run_id, version = register_policy(rl_target, agent, "ppo", train, EnvConfig(), name="rl-sizing-aapl",
                                      metrics={"oos_sharpe": float(rows[0]["sharpe"])}, spec_hash="test-spec")
    assert alias_version(rl_target, "rl-sizing-aapl", CHALLENGER) == version
    loaded = load_onnx(rl_target, "rl-sizing-aapl", CHALLENGER)
    assert loaded.card.kind == "rl_ppo" and loaded.card.output_name == "target_weight"
    assert loaded.card.feature_names[-2:] == STATE_FEATURES
    # The core card carries the policy fields through the registry (no RL-specific card class needed).
    assert loaded.card.output_kind == "target_weight" and loaded.card.state_feature_names == STATE_FEATURES
    assert loaded.card.max_weight == 1.0 and not loaded.card.allow_short and loaded.card.action_levels == ()
    assert "RL sizing policy" in (rl_target.client().get_registered_model("rl-sizing-aapl").description or "")
    scorer = OnnxScorer(loaded.onnx_bytes, loaded.card)
    batch = np.column_stack([train.features[:5], np.zeros((5, 2))])
    weights = scorer.raw_probabilities(batch)
    assert weights.shape == (5, 1)
    assert ((weights >= 0.0) & (weights <= 1.0)).all()  # long-only policy, max_weight 1
    assert rl_target.client().get_run(run_id).data.tags["output_kind"] == "target_weight"
