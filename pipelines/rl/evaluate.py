"""Walk-forward evaluation of the RL sizing agents next to the supervised model and the baselines, all
through the same environment (the engine's risk rules and simulated broker, after costs), and their MLflow
registration with an ONNX policy.

Per fold: PPO and DQN train on the fold's training rows (random episode windows, seeded), the supervised
model (LightGBM direction classifier, `pipelines.learners`) trains on the same rows; everything is then run
deterministically over the fold's test rows from fresh cash, with the training window's feature scaling.
Folds are chained into one out-of-sample equity curve per strategy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.rl.agents import AgentConfig, AgentKind, deterministic_action, train_agent
from pipelines.rl.env import EnvConfig, EnvData, PositionSizingEnv
from tradeloom.engine.baselines import simple_moving_average
from tradeloom.engine.metrics import Metrics, compute_metrics
from tradeloom.errors import InvariantViolation
from tradeloom.portfolio.sizing_policy import STATE_FEATURES
from tradeloom.walkforward import Fold, walk_forward_splits

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Policy = Callable[[npt.NDArray[np.float32], PositionSizingEnv], Any]  # observation -> action
TargetPolicy = Callable[[PositionSizingEnv], float]  # the env at a bar close -> target weight


@dataclass
class Episode:
    equity: FloatArray
    target_weights: FloatArray
    fees: float
    rule_events: int
    intents: list[tuple[str, int, int]] = field(default_factory=list)  # (client order id, side, quantity)


def run_policy(data: EnvData, config: EnvConfig, policy: Policy) -> Episode:
    """One deterministic pass over every bar of `data` from fresh cash."""
    return _run(data, config, lambda observation, env: env.step(policy(observation, env)))


def run_target_policy(data: EnvData, config: EnvConfig, policy: TargetPolicy) -> Episode:
    """As `run_policy`, for a policy that gives the target weight itself (a served graph, see `served_policy`)."""
    return _run(data, config, lambda observation, env: env.step_to_target(policy(env)))


def served_policy(scorer: Any) -> TargetPolicy:
    """The registered ONNX policy (`OnnxScorer` of a `target_weight` card) exactly as the executor serves it:
    the unscaled observation row in, `raw_probabilities` out, bounded by the card."""
    from tradeloom.portfolio.sizing_policy import bounded_targets

    def target(env: PositionSizingEnv) -> float:
        raw = np.asarray(scorer.raw_probabilities(env.raw_observation()[None, :]), dtype=np.float64)
        return float(bounded_targets(raw[:, 0], max_weight=scorer.card.max_weight,
                                     allow_short=scorer.card.allow_short)[0])

    return target


def _run(data: EnvData, config: EnvConfig,
         advance: Callable[[npt.NDArray[np.float32], PositionSizingEnv], tuple[Any, ...]]) -> Episode:
    env = PositionSizingEnv(data, config.model_copy(update={"episode_bars": None}))
    observation, info = env.reset(seed=0)
    equity, weights, intents = [float(info["equity"])], [], []
    done = False
    while not done:
        observation, _, terminated, truncated, info = advance(observation, env)
        equity.append(float(info["equity"]))
        weights.append(float(info["target_weight"]))
        intents.extend(info["intents"])
        done = terminated or truncated
    return Episode(np.asarray(equity), np.asarray(weights), float(info["fees"]), env.rule_events, intents)


def constant(weight: float) -> Policy:
    return lambda observation, env: np.array([weight], dtype=np.float32)


def from_weights(weights: FloatArray) -> Policy:
    """Replay a precomputed causal target-weight series (row t known at bar t's close)."""
    return lambda observation, env: np.array([weights[env.t]], dtype=np.float32)


def agent_policy(agent: Any) -> Policy:
    return lambda observation, env: deterministic_action(agent, observation)


@dataclass
class StrategyOutcome:
    name: str
    episodes: list[Episode]
    metrics: Metrics
    fold_returns: FloatArray

    def row(self) -> dict[str, Any]:
        m = self.metrics
        return {"strategy": self.name, "folds": len(self.episodes), "total_return": round(m.total_return, 4),
                "sharpe": round(m.sharpe, 2), "max_drawdown": round(m.max_drawdown, 4) + 0.0,
                "fold_return_mean": round(float(self.fold_returns.mean()), 4),
                "mean_abs_weight": round(float(np.mean([np.abs(e.target_weights).mean() for e in self.episodes])), 3),
                "costs": round(sum(e.fees for e in self.episodes), 2),
                "risk_rule_actions": sum(e.rule_events for e in self.episodes)}


def _outcome(name: str, episodes: list[Episode], bars_per_year: float) -> StrategyOutcome:
    level, chained = 1.0, list[FloatArray]()
    for episode in episodes:
        path = episode.equity / episode.equity[0] * level
        chained.append(path if not chained else path[1:])
        level = float(path[-1])
    equity = np.concatenate(chained)
    metrics = compute_metrics(equity, [], bars_per_year=bars_per_year,
                              costs_paid=sum(e.fees for e in episodes))
    returns = np.array([e.equity[-1] / e.equity[0] - 1.0 for e in episodes])
    return StrategyOutcome(name, episodes, metrics, returns)


def supervised_weights(data: EnvData, fold: Fold, *, horizon: int = 5, flat_threshold: float = 0.01,
                       seed: int = 0) -> FloatArray:
    """LightGBM direction model trained on the fold's rows (last `horizon` purged, last 20% for early
    stopping); long 1.0 where p(up) > p(down), else flat. Returns weights for every row of `data`."""
    from pipelines.learners import fit_lightgbm
    from tradeloom.models.config import LightGBMParams
    from tradeloom.models.labels import direction_labels

    labels, _ = direction_labels(data.close, horizon, flat_threshold)
    rows = fold.train[(fold.train < fold.test[0] - horizon) & (labels[fold.train] >= 0)]
    split = int(rows.size * 0.8)
    model = fit_lightgbm(data.features, labels, rows[:split], rows[split:], LightGBMParams(n_estimators=200), seed)
    out = np.zeros(len(data))
    probabilities = model.predict_raw(data.features, fold.test)
    out[fold.test] = (probabilities[:, 2] > probabilities[:, 0]).astype(np.float64)
    return out


def sma_weights(close: FloatArray, fast: int = 10, slow: int = 50) -> FloatArray:
    with np.errstate(invalid="ignore"):
        return np.asarray(simple_moving_average(close, fast) > simple_moving_average(close, slow), dtype=np.float64)


def compare_on_folds(data: EnvData, *, train_size: int, test_size: int, agents: tuple[AgentKind, ...] = ("ppo", "dqn"),
                     timesteps: int = 5_000, seed: int = 0, env_config: EnvConfig | None = None,
                     max_folds: int | None = None, bars_per_year: float = 252.0) -> tuple[list[dict[str, Any]],
                                                                                          dict[str, Any]]:
    """Rows of the side-by-side table, plus the last fold's trained agents (for registration)."""
    env_config = env_config or EnvConfig()
    folds = walk_forward_splits(len(data), train_size=train_size, test_size=test_size, purge=5)
    if max_folds is not None:
        folds = folds[-max_folds:]
    episodes: dict[str, list[Episode]] = {}
    last_agents: dict[str, Any] = {}
    sma = sma_weights(data.close)
    for fold in folds:
        train = data.rows(fold.train)
        # The test rows keep one bar of look-back: the env decides at each close and fills at the next open.
        test = data.rows(fold.test).standardised_by(train)
        runs: dict[str, tuple[EnvConfig, Policy]] = {}
        for kind in agents:
            config = AgentConfig(kind=kind, timesteps=timesteps, seed=seed)
            agent = train_agent(config, train, env_config)
            last_agents[kind] = agent
            runs[f"rl_{kind}"] = (config.env_config(env_config), agent_policy(agent))
        continuous = env_config.model_copy(update={"action": "continuous"})
        supervised = supervised_weights(data, fold, seed=seed)[fold.test]
        runs["supervised_lightgbm"] = (continuous, from_weights(supervised))
        runs["buy_and_hold"] = (continuous, constant(1.0))
        runs["sma_cross_10_50"] = (continuous, from_weights(sma[fold.test]))
        runs["flat"] = (continuous, constant(0.0))
        for name, (config_for_run, policy) in runs.items():
            episodes.setdefault(name, []).append(run_policy(test, config_for_run, policy))
        log.info("rl fold %d done", fold.number)
    rows = [_outcome(name, runs_, bars_per_year).row() for name, runs_ in episodes.items()]
    return rows, {"agents": last_agents, "train": data.rows(folds[-1].train), "folds": folds}


# -- data ---------------------------------------------------------------------------------------------------

def env_data_from_market(data: Any, column: int) -> EnvData:
    """One instrument of a `pipelines.backtest.MarketData`, with the built-in price/volume features
    (`pipelines.training_data.fallback_features`), warm-up rows dropped."""
    from pipelines.training_data import FALLBACK_NAMES, fallback_features

    close, high, low = data.close[:, column], data.high[:, column], data.low[:, column]
    volume = data.volume[:, column]
    features = fallback_features(close, high, low, volume)
    ok = np.isfinite(features).all(axis=1) & np.isfinite(close) & np.isfinite(data.open[:, column])
    rows = np.flatnonzero(ok)
    return EnvData(data.universe.keys[column], data.bar_at_ns[rows], data.open[rows, column], high[rows], low[rows],
                   close[rows], volume[rows], features[rows], tuple(FALLBACK_NAMES))


# -- registration -------------------------------------------------------------------------------------------

def register_policy(target: Any, agent: Any, kind: AgentKind, train: EnvData, env_config: EnvConfig, *,
                    name: str, metrics: dict[str, float], spec_hash: str) -> tuple[str, str]:
    """Log a run with the policy (native torch + ONNX + card) and register it -> (run id, version)."""
    from pipelines.rl.export import PolicyTargetWeight, policy_card, to_onnx
    from tradeloom.adapters.registry import LoggedModel, RunRecord, log_run, register_version

    config = AgentConfig(kind=kind).env_config(env_config)
    env = PositionSizingEnv(train, config)
    names = train.observation_names()
    mean, std = train.normalisation()
    levels = np.asarray(config.action_levels())
    module = PolicyTargetWeight(agent.policy, kind, mean, std, levels, config.max_weight, config.allow_short,
                                len(names) - len(train.feature_names))
    onnx_bytes = to_onnx(module, len(names))
    card = policy_card(name=name, agent=kind, feature_names=names, spec_hash=spec_hash,
                       state_feature_names=STATE_FEATURES,
                       action_levels=tuple(float(x) for x in levels) if kind == "dqn" else (),
                       max_weight=config.max_weight, allow_short=config.allow_short, rebalance=config.rebalance)
    del env  # built only to validate the config against the data
    k = len(train.feature_names)
    example = np.zeros((2, len(names)), dtype=np.float32)
    example[:, :k] = train.features[:2]
    if train.probabilities is not None:
        example[:, k:k + 3] = train.probabilities[:2]
    import torch

    with torch.no_grad():
        output = module(torch.from_numpy(example)).numpy()
    record = RunRecord(
        run_name=f"{name}-{kind}", params={"agent": kind, **{k: str(v) for k, v in config.model_dump().items()}},
        metrics_by_step=[], summary_metrics=metrics,
        tags={"model_kind": f"rl_{kind}", "output_kind": "target_weight", "feature_spec_hash": spec_hash},
        model=LoggedModel(card=card, onnx_bytes=onnx_bytes, native=module, flavour="pytorch",
                          input_example=example, output_example=output),
    )
    logged = log_run(target, record)
    if logged.onnx_model_uri is None:
        raise InvariantViolation(f"log_run returned no ONNX model uri for run {logged.run_id} of {name}")
    version = register_version(target, name, logged.onnx_model_uri, logged.run_id,
                               {"model_kind": f"rl_{kind}", "output_kind": "target_weight"},
                               description="tradeloom RL sizing policy (observation -> target weight), ONNX served")
    return logged.run_id, version


# -- demo ---------------------------------------------------------------------------------------------------

DEMO_KEY = "NASDAQ:AAPL"


def demo_rl(db: Any) -> list[dict[str, Any]]:
    """`tradeloom demo` hook: PPO and DQN sizing agents vs the supervised LightGBM model and the baselines on
    the bundled daily AAPL, the last three walk-forward years out of sample, after costs; one row each."""
    from pipelines.backtest import load_market_data
    from tradeloom.domain import Timeframe

    market = load_market_data(db, [DEMO_KEY], Timeframe.DAY)
    rows, _ = compare_on_folds(env_data_from_market(market, 0), train_size=756, test_size=252, timesteps=3_000,
                               max_folds=3)
    return rows
