"""`PositionSizingEnv`: one instrument, one decision per bar close, through the engine.

- Observation: the bar's feature vector (standardised with the *training* window's mean and std, clipped to
  +-10), optionally the supervised model's (down, flat, up) probabilities, then the portfolio state: the
  current position as a fraction of equity and the drawdown from the equity peak.
- Action: a target position as a fraction of equity. PPO: one continuous number in [-1, 1] (x max_weight;
  negative only when shorting is allowed, else clipped at 0). DQN: a discrete index into
  `action_levels` = flat, long x size buckets, and short x size buckets when shorting is allowed.
- The agent proposes, the engine disposes: the target goes through `tradeloom.portfolio.portfolio_step`
  (the engine's guards and entry rules: position cap, exposure, cash, drawdown halt, ...), the resulting
  market orders fill at the next bar's open in `tradeloom.engine.SimulatedBroker` with its cost model.
- Reward: the change in equity after costs over the bar, as a fraction of the previous equity (x
  reward_scale), minus a penalty: `drawdown` = penalty_weight x the increase in drawdown from the peak;
  `variance` = penalty_weight x the squared bar return (both x reward_scale).
- Episodes: random windows of `episode_bars` for training (the start drawn from the env's seeded generator),
  or the whole series from its first bar when `episode_bars` is None (evaluation). An episode terminates at
  the last bar or when the engine's drawdown halt fires (the book is flat and stays flat).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from tradeloom.engine import BrokerConfig, EngineState, RiskConfig, SimulatedBroker, Universe, cost_preset
from tradeloom.errors import InputError
from tradeloom.portfolio.config import RebalanceConfig
from tradeloom.portfolio.rebalance import RebalanceInputs, portfolio_step
from tradeloom.portfolio.sizing_policy import STATE_FEATURES, book_equity, state_features

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
CLIP = 10.0
__all__ = ["CLIP", "STATE_FEATURES", "EnvConfig", "EnvData", "PositionSizingEnv"]


class EnvConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    action: Literal["continuous", "discrete"] = "continuous"
    size_buckets: tuple[float, ...] = (0.5, 1.0)
    max_weight: float = Field(default=1.0, gt=0.0, le=5.0)  # what action 1.0 means, before the risk rules
    allow_short: bool = False
    penalty: Literal["drawdown", "variance", "none"] = "drawdown"
    penalty_weight: float = Field(default=0.5, ge=0.0)
    reward_scale: float = Field(default=100.0, gt=0.0)
    episode_bars: int | None = Field(default=252, ge=2)
    cash: float = Field(default=100_000.0, gt=0.0)
    rebalance: RebalanceConfig = RebalanceConfig(
        strategy="rl-sizing", min_trade_fraction=0.01, cash_buffer=0.01,
        risk=RiskConfig(max_position_fraction=1.0, max_positions=None, daily_loss_limit=None, max_drawdown=0.5),
    )
    broker: BrokerConfig = BrokerConfig(costs=cost_preset("us_equity_retail"), insufficient_cash="reduce")

    def action_levels(self) -> tuple[float, ...]:
        """DQN's discrete targets, as fractions of equity: flat, longs, then shorts when allowed."""
        longs = tuple(bucket * self.max_weight for bucket in self.size_buckets)
        shorts = tuple(-level for level in longs) if self.allow_short else ()
        return (0.0, *longs, *shorts)


@dataclass(frozen=True)
class EnvData:
    """One instrument's bars and the features known at each close (finite), plus the standardisation."""

    key: str
    bar_at_ns: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    features: FloatArray  # (T, k)
    feature_names: tuple[str, ...]
    probabilities: FloatArray | None = None  # (T, 3) down/flat/up from the supervised model, if used
    feature_mean: FloatArray | None = None  # from the training window; None: this window's own
    feature_std: FloatArray | None = None
    # The executor's session calendar (`tradeloom.calendars.session_context`) when the data came from it;
    # None: the UTC day, no minutes-to-close (daily bars).
    session_day: IntArray | None = None
    minutes_to_close: FloatArray | None = None

    def __post_init__(self) -> None:
        t = self.close.shape[0]
        if self.features.shape != (t, len(self.feature_names)):
            raise InputError(f"features shape {self.features.shape} must be ({t}, {len(self.feature_names)})")
        if not np.isfinite(self.features).all() or not np.isfinite(self.close).all():
            raise InputError("env features and closes must be finite; drop the warm-up rows first")
        if self.probabilities is not None and self.probabilities.shape != (t, 3):
            raise InputError(f"probabilities shape {self.probabilities.shape} must be ({t}, 3)")

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def rows(self, rows: IntArray) -> EnvData:
        return replace(self, bar_at_ns=self.bar_at_ns[rows], open=self.open[rows], high=self.high[rows],
                       low=self.low[rows], close=self.close[rows], volume=self.volume[rows],
                       features=self.features[rows],
                       probabilities=None if self.probabilities is None else self.probabilities[rows],
                       session_day=None if self.session_day is None else self.session_day[rows],
                       minutes_to_close=None if self.minutes_to_close is None else self.minutes_to_close[rows])

    def standardised_by(self, other: EnvData) -> EnvData:
        """This window with `other`'s feature mean/std (a test window uses its training window's)."""
        mean, std = other.normalisation()
        return replace(self, feature_mean=mean, feature_std=std)

    def normalisation(self) -> tuple[FloatArray, FloatArray]:
        if self.feature_mean is not None and self.feature_std is not None:
            return self.feature_mean, self.feature_std
        return self.features.mean(axis=0), self.features.std(axis=0) + 1e-12

    def observation_names(self) -> tuple[str, ...]:
        probabilities = ("p_down", "p_flat", "p_up") if self.probabilities is not None else ()
        return (*self.feature_names, *probabilities, *STATE_FEATURES)


class PositionSizingEnv(gym.Env[npt.NDArray[np.float32], Any]):
    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's class attribute

    def __init__(self, data: EnvData, config: EnvConfig | None = None) -> None:
        self.data = data
        self.config = config or EnvConfig()
        if len(data) < 3:
            raise InputError(f"the environment needs at least 3 bars, got {len(data)}")
        self._mean, self._std = data.normalisation()
        self.universe = Universe.simple((data.key,))
        size = len(data.observation_names())
        self.observation_space = gym.spaces.Box(-CLIP, CLIP, shape=(size,), dtype=np.float32)
        self.levels = np.asarray(self.config.action_levels(), dtype=np.float64)
        if self.config.action == "discrete":
            self.action_space: gym.spaces.Space[Any] = gym.spaces.Discrete(len(self.levels))
        else:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._reset_book(0)

    # -- book keeping -------------------------------------------------------------------------------------
    def _reset_book(self, start: int) -> None:
        config = self.config
        self.broker = SimulatedBroker(config.broker.model_copy(update={"allow_short": config.allow_short}),
                                      self.universe.keys, config.cash)
        self.state = EngineState.initial(1, config.cash, config.rebalance.risk.history_bars)
        self.t = start
        self.start = start
        episode = config.episode_bars
        self.end = len(self.data) - 1 if episode is None else min(start + episode, len(self.data) - 1)
        self.equity = config.cash
        self.peak = config.cash
        self.rule_events = 0

    def target_weight(self, action: Any) -> float:
        if self.config.action == "discrete":
            return float(self.levels[int(np.asarray(action).reshape(-1)[0])])
        raw = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        if not self.config.allow_short:
            raw = max(raw, 0.0)
        return raw * self.config.max_weight

    def book_state(self) -> FloatArray:
        """(position weight, drawdown) at the current close: the executor computes the same with the same
        function (`tradeloom.portfolio.sizing_policy.state_features`) from its broker's book."""
        close = self.data.close[self.t:self.t + 1]
        return np.asarray(state_features(self.broker.positions, close, self.equity, self.peak)[0], dtype=np.float64)

    def position_weight(self) -> float:
        return float(self.book_state()[0])

    def raw_observation(self) -> FloatArray:
        """The unscaled row an exported policy graph takes (it standardises inside): features, then the
        supervised probabilities when used, then the state."""
        parts = [self.data.features[self.t]]
        if self.data.probabilities is not None:
            parts.append(self.data.probabilities[self.t])
        parts.append(self.book_state())
        return np.concatenate(parts)

    def _observation(self) -> npt.NDArray[np.float32]:
        z = (self.data.features[self.t] - self._mean) / self._std
        parts = [z]
        if self.data.probabilities is not None:
            parts.append(self.data.probabilities[self.t])
        parts.append(self.book_state())
        return np.asarray(np.clip(np.concatenate(parts), -CLIP, CLIP), dtype=np.float32)

    # -- gymnasium API ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        episode = self.config.episode_bars
        last_start = len(self.data) - 1 - (episode or 0)
        start = int(self.np_random.integers(0, last_start + 1)) if episode is not None and last_start > 0 else 0
        if options and "start" in options:
            start = int(options["start"])
        self._reset_book(start)
        return self._observation(), {"equity": self.equity, "t": self.t}

    def step(self, action: Any) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        return self.step_to_target(self.target_weight(action))

    def step_to_target(self, target: float) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """One bar with the target weight given directly (what a served policy graph outputs)."""
        data, t = self.data, self.t
        result = portfolio_step(self.config.rebalance, self.state, RebalanceInputs(
            self.universe, int(data.bar_at_ns[t]), data.close[t:t + 1], self.broker.positions.copy(),
            self.broker.cash, self.broker.pending_quantities(), np.array([target]),
            session_day=int(data.bar_at_ns[t] // 86_400_000_000_000 if data.session_day is None
                            else data.session_day[t]),
            minutes_to_close=None if data.minutes_to_close is None else data.minutes_to_close[t:t + 1],
        ))
        self.state = result.state
        self.rule_events += sum(event.action in ("blocked", "capped", "flatten") for event in result.events)
        for intent in result.intents:
            self.broker.submit(intent)
        self.t = t + 1
        self.broker.on_bar(int(data.bar_at_ns[self.t]), data.open[self.t:self.t + 1], data.high[self.t:self.t + 1],
                           data.low[self.t:self.t + 1], data.close[self.t:self.t + 1], data.volume[self.t:self.t + 1])
        previous_equity, previous_drawdown = self.equity, 1.0 - self.equity / self.peak
        self.equity = book_equity(self.broker.positions, data.close[self.t:self.t + 1], self.broker.cash)
        self.peak = max(self.peak, self.equity)
        bar_return = self.equity / previous_equity - 1.0 if previous_equity > 0 else -1.0
        drawdown = 1.0 - self.equity / self.peak
        penalty = 0.0
        if self.config.penalty == "drawdown":
            penalty = self.config.penalty_weight * max(drawdown - previous_drawdown, 0.0)
        elif self.config.penalty == "variance":
            penalty = self.config.penalty_weight * bar_return**2
        reward = float(self.config.reward_scale * (bar_return - penalty))
        terminated = self.t >= len(data) - 1 or self.state.halted_for_drawdown or self.equity <= 0
        truncated = not terminated and self.t >= self.end
        info = {"equity": self.equity, "target_weight": target, "position": int(self.broker.positions[0]),
                "approved_weight": float(result.approved[0]) * float(data.close[t]) / max(result.equity, 1e-12),
                "fees": float(self.broker.fees_paid.sum()), "t": self.t,
                "intents": [(i.client_order_id, int(i.side), i.quantity) for i in result.intents]}
        return self._observation(), reward, bool(terminated), bool(truncated), info
