"""The feature spec: one list of features that renders the dbt SQL and drives the online engine.

The batch side passes `spec_payload()` to dbt as the `feature_spec` var; the macros in `macros/`
turn each entry into SQL. The executor builds `OnlineFeatureEngine` from the same object, and models
record `spec_hash()` so a model trained on one spec is refused by an engine running another.

MACD seeding (ours, not TA-Lib's): the fast and slow EMAs are each seeded with the SMA of their own
first `period` closes (fast from bar 12, slow from bar 26), the line exists once the slow EMA does,
and the signal EMA is seeded with the SMA of the first `signal` line values. TA-Lib instead delays the
fast EMA's seed so both start on the same bar; the two converge within a few hundred bars.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field

from tradeloom.errors import ConfigError

# Indicators the SQL macros and the online engine both implement.
INDICATORS = frozenset({
    "return", "log_return", "sma", "ema", "rsi_wilder", "macd", "bollinger", "atr_wilder", "realised_vol",
    "volume_zscore", "volume_profile", "pivots", "correlation", "book_imbalance", "book_spread",
})
TIMEFRAME_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
ParamValue = int | float | str


@functools.lru_cache(maxsize=1024)
def _param_index(params: tuple[tuple[str, ParamValue], ...]) -> dict[str, ParamValue]:
    return dict(params)


@dataclass(frozen=True)
class Feature:
    """One output column. `timeframe=None` means the row's own timeframe; a coarser timeframe means the
    indicator runs on completed bars of that timeframe only (multi-timeframe feature)."""

    name: str
    indicator: str
    inputs: tuple[str, ...]
    params: tuple[tuple[str, ParamValue], ...] = ()
    timeframe: str | None = None

    def param(self, key: str) -> ParamValue:
        value = _param_index(self.params).get(key)
        if value is not None:
            return value
        raise ConfigError(f"feature {self.name!r}: parameter {key!r} missing; it has {dict(self.params)}")

    def int_param(self, key: str) -> int:
        return int(self.param(key))

    def float_param(self, key: str) -> float:
        return float(self.param(key))

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "indicator": self.indicator, "inputs": list(self.inputs),
                "params": dict(self.params), "timeframe": self.timeframe}


@dataclass(frozen=True)
class LabelSpec:
    """Forward return over `horizon` bars and a three-class direction: up (1) when the forward log return
    exceeds `threshold_vol_multiple * <vol feature> * sqrt(horizon)`, down (-1) below its negative, else 0."""

    horizon: int = 5
    threshold_vol_multiple: float = 0.5
    vol_feature: str = "rvol_20"

    def as_dict(self) -> dict[str, object]:
        return {"horizon": self.horizon, "threshold_vol_multiple": self.threshold_vol_multiple,
                "vol_feature": self.vol_feature}


@dataclass(frozen=True)
class FeatureSpec:
    features: tuple[Feature, ...]
    labels: LabelSpec = field(default_factory=LabelSpec)
    # Reference instrument per exchange for the rolling correlation; exchanges not listed get NULL.
    references: tuple[tuple[str, str], ...] = ()
    version: int = 1

    def __post_init__(self) -> None:
        names = [feature.name for feature in self.features]
        if len(set(names)) != len(names):
            raise ConfigError(f"feature names must be unique, got duplicates in {names}")
        for feature in self.features:
            if feature.indicator not in INDICATORS:
                raise ConfigError(
                    f"feature {feature.name!r}: indicator {feature.indicator!r} unknown; expected one of "
                    f"{sorted(INDICATORS)}"
                )
            if feature.timeframe is not None and feature.timeframe not in TIMEFRAME_SECONDS:
                raise ConfigError(f"feature {feature.name!r}: timeframe {feature.timeframe!r} not in "
                                  f"{sorted(TIMEFRAME_SECONDS)}")
        if self.labels.vol_feature not in names:
            raise ConfigError(f"labels.vol_feature={self.labels.vol_feature!r} is not a feature of the spec")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise ConfigError(f"feature {name!r} not in the spec; expected one of {list(self.names)}")

    def reference_for(self, exchange: str) -> str | None:
        return dict(self.references).get(exchange)

    def payload(self) -> dict[str, object]:
        return {"version": self.version, "features": [feature.as_dict() for feature in self.features],
                "labels": self.labels.as_dict(), "references": dict(self.references)}

    def canonical_json(self) -> str:
        return json.dumps(self.payload(), sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def restore_bars(self, timeframe: str) -> int:
        """Bars of `timeframe` history that rebuild the online state to within 1e-12 of the running
        state: recursive indicators forget their seed geometrically ((1 - 1/14)^1000 < 1e-30), and a
        multi-timeframe feature needs 1000 of its own coarser bars."""
        row = TIMEFRAME_SECONDS[timeframe]
        coarsest = max([TIMEFRAME_SECONDS[f.timeframe] for f in self.features if f.timeframe] + [row])
        return 1000 * max(1, coarsest // row)


def _f(name: str, indicator: str, inputs: tuple[str, ...], timeframe: str | None = None,
       **params: ParamValue) -> Feature:
    return Feature(name, indicator, inputs, tuple(sorted(params.items())), timeframe)


C = ("close",)
HLC = ("high", "low", "close")
DEFAULT_SPEC = FeatureSpec(
    features=(
        _f("ret_1", "return", C, lag=1),
        _f("ret_5", "return", C, lag=5),
        _f("ret_20", "return", C, lag=20),
        _f("logret_1", "log_return", C, lag=1),
        _f("logret_5", "log_return", C, lag=5),
        _f("logret_20", "log_return", C, lag=20),
        _f("sma_20", "sma", C, period=20),
        _f("ema_12", "ema", C, period=12),
        _f("ema_26", "ema", C, period=26),
        _f("rsi_14", "rsi_wilder", C, period=14),
        _f("macd_line", "macd", C, fast=12, slow=26, signal=9, output="line"),
        _f("macd_signal", "macd", C, fast=12, slow=26, signal=9, output="signal"),
        _f("macd_hist", "macd", C, fast=12, slow=26, signal=9, output="hist"),
        _f("bb_upper_20", "bollinger", C, period=20, width=2.0, output="upper"),
        _f("bb_lower_20", "bollinger", C, period=20, width=2.0, output="lower"),
        _f("bb_pctb_20", "bollinger", C, period=20, width=2.0, output="pctb"),
        _f("atr_14", "atr_wilder", HLC, period=14),
        _f("rvol_20", "realised_vol", C, period=20),
        _f("volume_z_20", "volume_zscore", ("volume",), period=20),
        _f("vp_poc_50", "volume_profile", ("high", "low", "close", "volume"), period=50, bins=10,
           value_area=0.7, output="poc"),
        _f("vp_va_low_50", "volume_profile", ("high", "low", "close", "volume"), period=50, bins=10,
           value_area=0.7, output="va_low"),
        _f("vp_va_high_50", "volume_profile", ("high", "low", "close", "volume"), period=50, bins=10,
           value_area=0.7, output="va_high"),
        _f("pivot_20", "pivots", HLC, period=20, output="pivot"),
        _f("resistance_20", "pivots", HLC, period=20, output="resistance"),
        _f("support_20", "pivots", HLC, period=20, output="support"),
        _f("corr_ref_20", "correlation", C, period=20),
        _f("book_imbalance", "book_imbalance", ("bid_sizes", "ask_sizes")),
        _f("book_spread", "book_spread", ("bid_prices", "ask_prices")),
        _f("rsi_14_1h", "rsi_wilder", C, timeframe="1h", period=14),
    ),
    references=(("NASDAQ", "NASDAQ:AAPL"), ("NYSE", "NASDAQ:AAPL"), ("SYNTH", "SYNTH:SYN000")),
)


def spec_hash(spec: FeatureSpec = DEFAULT_SPEC) -> str:
    return spec.spec_hash()
