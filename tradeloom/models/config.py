"""The training workflow config: dated segments, walk-forward sizes, hyperparameters, costs, the gate.

Like Qlib's workflow configs, one file reproduces one result: the data range, the segments, the seed and
every hyperparameter are in it, and the run records it whole.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tradeloom.errors import ConfigError


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelKind(StrEnum):
    LIGHTGBM = "lightgbm"
    LSTM = "lstm"
    TRANSFORMER = "transformer"
    ENSEMBLE = "ensemble"


class DateRange(Frozen):
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.end < self.start:
            raise ValueError(f"segment end {self.end} is before start {self.start}")
        return self


class Segments(Frozen):
    """Train rows come from `train` (and may roll into later rows for later folds); walk-forward test
    windows tile `test`, which is the out-of-sample window every candidate and the champion share."""

    train: DateRange
    test: DateRange

    @model_validator(mode="after")
    def _train_before_test(self) -> Segments:
        if self.test.start <= self.train.start:
            raise ValueError(f"test segment start {self.test.start} must be after train start {self.train.start}")
        return self


class WalkForward(Frozen):
    train_size: int = Field(ge=10)
    test_size: int = Field(ge=1)
    # The configured minimum; the effective purge is never below the label horizon (see `effective_purge`).
    purge: int = Field(default=0, ge=0)
    embargo: int = Field(default=0, ge=0)
    expanding: bool = False
    # The newest slice of each train window (after a purge gap) drives early stopping and calibration.
    validation_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)


class Labels(Frozen):
    horizon: int = Field(default=1, ge=1)
    # |forward return| below this is "flat".
    flat_threshold: float = Field(default=0.002, ge=0.0)


class LightGBMParams(Frozen):
    num_leaves: int = Field(default=15, ge=2)
    learning_rate: float = Field(default=0.05, gt=0.0)
    n_estimators: int = Field(default=300, ge=1)
    min_child_samples: int = Field(default=20, ge=1)
    subsample: float = Field(default=0.8, gt=0.0, le=1.0)
    colsample_bytree: float = Field(default=0.8, gt=0.0, le=1.0)
    reg_lambda: float = Field(default=1.0, ge=0.0)
    early_stopping_rounds: int = Field(default=30, ge=1)
    balanced_classes: bool = True


class SequenceParams(Frozen):
    window: int = Field(default=20, ge=1)
    hidden: int = Field(default=32, ge=2)
    layers: int = Field(default=1, ge=1)
    heads: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    epochs: int = Field(default=30, ge=1)
    patience: int = Field(default=5, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0.0)
    batch_size: int = Field(default=64, ge=1)
    balanced_classes: bool = True


class Ensemble(Frozen):
    members: tuple[ModelKind, ...] = (ModelKind.LIGHTGBM, ModelKind.LSTM)
    # Probability averaging; weights default to equal.
    weights: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _members(self) -> Ensemble:
        if ModelKind.ENSEMBLE in self.members or len(self.members) < 2:
            raise ValueError(f"ensemble members must be two or more base models, got {list(self.members)}")
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ValueError(f"ensemble weights {self.weights} must match members {list(self.members)}")
        return self


class Costs(Frozen):
    """What each fill pays in the engine's backtest: a named engine cost preset, or `cost_bps` of the traded
    value as commission on every fill (so a round trip pays it twice)."""

    cost_bps: float = Field(default=5.0, ge=0.0, lt=1000.0)
    # A `tradeloom.engine.cost_preset` name (e.g. us_equity_retail, nse_equity_delivery); wins over cost_bps.
    preset: str | None = None


class Trading(Frozen):
    """How out-of-sample probabilities are traded through the engine, models and baselines alike.

    The defaults compare signals rather than risk overlays: long while p(up) > p(down), flat otherwise,
    one position of `position_fraction` of equity, no stops and no halting rules (each would cut every
    strategy's curve differently and hide what the signal did)."""

    enter_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    exit_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    allow_short: bool = False
    position_fraction: float = Field(default=0.95, gt=0.0, le=1.0)
    stop_loss_pct: float | None = Field(default=None, gt=0.0, lt=1.0)
    cash: float = Field(default=100_000.0, gt=0.0)
    # The SMA-cross baseline: long while the fast SMA is above the slow one.
    sma_fast: int = Field(default=10, ge=1)
    sma_slow: int = Field(default=50, ge=2)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> Trading:
        if self.sma_fast >= self.sma_slow:
            raise ValueError(f"sma_fast {self.sma_fast} must be shorter than sma_slow {self.sma_slow}")
        return self


class GateConfig(Frozen):
    """A challenger is promotable only if it beats the champion on the same out-of-sample window."""

    min_sharpe_improvement: float = 0.0
    # Max drawdown is a positive fraction; the challenger's may exceed the champion's by at most this.
    max_drawdown_tolerance: float = Field(default=0.0, ge=0.0)
    max_log_loss_increase: float = Field(default=0.02, ge=0.0)
    auto_promote: bool = False


class TrainConfig(Frozen):
    strategy: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    seed: int = 7
    instrument: str = "NASDAQ:AAPL"
    timeframe: str = "1d"
    segments: Segments
    walk_forward: WalkForward
    labels: Labels = Labels()
    models: tuple[ModelKind, ...] = (ModelKind.LIGHTGBM, ModelKind.LSTM)
    lightgbm: LightGBMParams = LightGBMParams()
    lstm: SequenceParams = SequenceParams()
    transformer: SequenceParams = SequenceParams(hidden=16, epochs=20)
    ensemble: Ensemble | None = None
    costs: Costs = Costs()
    trading: Trading = Trading()
    gate: GateConfig = GateConfig()
    # Bars per year, for annualising Sharpe (252 daily bars; ~6000 hourly FX bars).
    periods_per_year: int = Field(default=252, ge=1)

    @model_validator(mode="after")
    def _ensemble_members_trained(self) -> TrainConfig:
        if ModelKind.ENSEMBLE in self.models:
            raise ValueError("list base models under `models`; the ensemble is configured under `ensemble`")
        if self.ensemble is not None:
            missing = [m.value for m in self.ensemble.members if m not in self.models]
            if missing:
                raise ValueError(f"ensemble members {missing} are not in models {[m.value for m in self.models]}")
        return self

    @property
    def registered_model_name(self) -> str:
        return f"tradeloom-{self.strategy}"

    @property
    def effective_purge(self) -> int:
        """A label looks `horizon` rows ahead, so fewer purged rows would let training labels see the test."""
        return max(self.walk_forward.purge, self.labels.horizon)

    def sequence_params(self, kind: ModelKind) -> SequenceParams:
        if kind is ModelKind.LSTM:
            return self.lstm
        if kind is ModelKind.TRANSFORMER:
            return self.transformer
        raise ConfigError(f"model kind {kind.value!r} has no sequence params; expected lstm or transformer")

    @property
    def window(self) -> int:
        """Rows of history any configured model needs to score one row."""
        windows = [self.sequence_params(kind).window for kind in self.models if kind is not ModelKind.LIGHTGBM]
        return max(windows, default=1)


def parse_config(raw: dict[str, Any]) -> TrainConfig:
    """Validate a config mapping (e.g. parsed YAML); errors name the field and the offending value."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']} (got {item.get('input')!r})"
            for item in error.errors()
        )
        raise ConfigError(f"training config invalid: {problems}") from error
