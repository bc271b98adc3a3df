"""Engine configuration: frozen pydantic models whose defaults are the safe ones.

Rates and limits live here (not in code) so a backtest can be reproduced from its config alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradeloom.domain import ProductType
from tradeloom.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SignalConfig(_Frozen):
    """Class probabilities (down, flat, up) -> Buy / Sell / Hold with a confidence."""

    enter_threshold: float = Field(default=0.55, ge=0.0, le=1.0)  # p(up) (or p(down) for shorts) needed to enter
    exit_threshold: float = Field(default=0.55, ge=0.0, le=1.0)  # p(opposite class) needed to exit
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)  # margin of the winning class over the runner-up
    allow_short: bool = False
    cooldown_bars: int = Field(default=0, ge=0)  # bars after an exit before the same instrument may be entered
    max_holding_bars: int | None = Field(default=None, ge=1)
    # Multi-timeframe confirmation: a feature whose sign must agree with the entry side (e.g. hourly trend).
    confirm_feature: str | None = None


class StopConfig(_Frozen):
    """Protective exits placed with every entry (as a bracket) and maintained every step."""

    stop_loss_pct: float | None = Field(default=0.05, gt=0.0, lt=1.0)
    stop_loss_atr: float | None = Field(default=None, gt=0.0)  # multiple of the `atr` feature; wins over pct when set
    take_profit_pct: float | None = Field(default=None, gt=0.0)
    take_profit_atr: float | None = Field(default=None, gt=0.0)
    trailing: bool = False  # ratchet the stop behind the best close since entry
    atr_feature: str = "atr"

    @property
    def has_stop(self) -> bool:
        return self.stop_loss_pct is not None or self.stop_loss_atr is not None


class RiskConfig(_Frozen):
    """Every limit as a fraction of current equity unless named otherwise. `None` disables a rule."""

    max_position_fraction: float | None = Field(default=0.25, gt=0.0)
    max_gross_exposure: float | None = Field(default=1.0, gt=0.0)
    max_net_exposure: float | None = Field(default=1.0, gt=0.0)
    max_positions: int | None = Field(default=10, ge=1)
    daily_loss_limit: float | None = Field(default=0.03, gt=0.0, lt=1.0)  # flatten and halt for the session day
    max_drawdown: float | None = Field(default=0.20, gt=0.0, lt=1.0)  # from the equity peak: flatten and halt
    max_realised_vol: float | None = Field(default=None, gt=0.0)  # no entries while `realised_vol` is above
    realised_vol_feature: str = "realised_vol"
    max_correlation: float | None = Field(default=None, gt=0.0, le=1.0)
    var_limit: float | None = Field(default=None, gt=0.0)  # one-day loss at `var_confidence`, fraction of equity
    var_method: Literal["historical", "parametric"] = "historical"
    var_confidence: float = Field(default=0.99, gt=0.5, lt=1.0)
    cvar_limit: float | None = Field(default=None, gt=0.0)
    history_bars: int = Field(default=250, ge=10)  # window of returns behind correlation and VaR
    no_entry_minutes_before_close: float = Field(default=0.0, ge=0.0)
    square_off_minutes_before_close: float | None = Field(default=None, ge=0.0)  # intraday products only
    kill_switch: bool = False


class SizingConfig(_Frozen):
    method: Literal["fixed_fractional", "kelly", "volatility_target", "fixed_notional", "fixed_quantity", "all_in"] = (
        "fixed_fractional"
    )
    risk_fraction: float = Field(default=0.01, gt=0.0, le=1.0)  # fixed fractional: equity risked to the stop
    kelly_cap: float = Field(default=0.25, gt=0.0, le=1.0)  # Kelly: never more than this fraction of equity
    kelly_payoff: float = Field(default=1.0, gt=0.0)  # Kelly: average win / average loss
    target_volatility: float = Field(default=0.15, gt=0.0)  # annualised, per position
    bars_per_year: float = Field(default=252.0, gt=0.0)
    notional_fraction: float = Field(default=0.10, gt=0.0, le=1.0)  # fixed notional: fraction of equity per entry
    quantity: int = Field(default=1, ge=1)  # fixed quantity: units per entry (peer comparisons)
    # All-in: whole units that `cash / (close * (1 + cost_buffer_rate))` buys; covers the per-side costs.
    cost_buffer_rate: float = Field(default=0.0, ge=0.0, lt=0.1)


class ExecutionConfig(_Frozen):
    """How a parent intent reaches the market: at once, or sliced over bars (TWAP / VWAP)."""

    algo: Literal["immediate", "twap", "vwap"] = "immediate"
    slices: int = Field(default=1, ge=1)
    participation_cap: float | None = Field(default=None, gt=0.0, le=1.0)


class EngineConfig(_Frozen):
    strategy: str = "tradeloom"
    product: ProductType = ProductType.DELIVERY
    signal: SignalConfig = SignalConfig()
    stops: StopConfig = StopConfig()
    risk: RiskConfig = RiskConfig()
    sizing: SizingConfig = SizingConfig()
    execution: ExecutionConfig = ExecutionConfig()

    @model_validator(mode="after")
    def _fixed_fractional_needs_a_stop(self) -> EngineConfig:
        if self.sizing.method == "fixed_fractional" and not self.stops.has_stop:
            raise ValueError("sizing.method=fixed_fractional needs stops.stop_loss_pct or stops.stop_loss_atr")
        return self


class CostConfig(_Frozen):
    """Per-fill costs. Statutory rates are fractions of traded value; GST applies to brokerage + exchange + SEBI."""

    name: str = "custom"
    commission_rate: float = Field(default=0.0, ge=0.0, lt=0.1)
    commission_flat: float = Field(default=0.0, ge=0.0)
    commission_cap: float | None = Field(default=None, ge=0.0)  # per order, applied to flat + percentage
    stt_buy_rate: float = Field(default=0.0, ge=0.0)
    stt_sell_rate: float = Field(default=0.0, ge=0.0)
    exchange_rate: float = Field(default=0.0, ge=0.0)
    sebi_rate: float = Field(default=0.0, ge=0.0)
    gst_rate: float = Field(default=0.0, ge=0.0)
    stamp_buy_rate: float = Field(default=0.0, ge=0.0)
    spread_bps: float = Field(default=0.0, ge=0.0)  # full quoted spread; a market fill pays half
    slippage_bps: float = Field(default=0.0, ge=0.0)
    impact_bps_per_participation: float = Field(default=0.0, ge=0.0)  # extra bps per 100% of bar volume taken


def cost_preset(name: str) -> CostConfig:
    """Named cost models. NSE rates as published by NSE/SEBI and Zerodha's charge sheet (2024-10)."""
    common_nse = {"exchange_rate": 0.0000297, "sebi_rate": 0.000001, "gst_rate": 0.18}
    presets: dict[str, CostConfig] = {
        "zero": CostConfig(name="zero"),
        # Discount broker intraday (MIS): 0.03% or Rs 20 per order, whichever is lower.
        "nse_equity_intraday": CostConfig(
            name="nse_equity_intraday", commission_rate=0.0003, commission_cap=20.0, stt_sell_rate=0.00025,
            stamp_buy_rate=0.00003, spread_bps=2.0, slippage_bps=1.0, **common_nse,
        ),
        # Delivery (CNC): zero brokerage, STT 0.1% both sides, stamp duty 0.015% on buys.
        "nse_equity_delivery": CostConfig(
            name="nse_equity_delivery", stt_buy_rate=0.001, stt_sell_rate=0.001, stamp_buy_rate=0.00015,
            spread_bps=2.0, slippage_bps=1.0, **common_nse,
        ),
        "us_equity_retail": CostConfig(name="us_equity_retail", commission_rate=0.0005, spread_bps=1.0,
                                       slippage_bps=1.0),
    }
    if name not in presets:
        raise ConfigError(f"cost preset {name!r} is unknown; expected one of {sorted(presets)}")
    return presets[name]


class BrokerConfig(_Frozen):
    """The simulated broker's fill model (also the paper broker's)."""

    costs: CostConfig = CostConfig()
    participation_cap: float | None = Field(default=None, gt=0.0, le=1.0)  # of each bar's volume, per instrument
    # A buy the cash cannot cover at the fill price: refuse it (as a broker does) or shrink it.
    insufficient_cash: Literal["reject", "reduce"] = "reject"
    allow_short: bool = False


# The NSE cost models are per product: intraday (MIS) and delivery (CNC) pay different STT and stamp duty.
_PRESET_PRODUCT = {"nse_equity_intraday": ProductType.INTRADAY, "nse_equity_delivery": ProductType.DELIVERY}


def check_costs_fit_product(product: ProductType, costs: CostConfig) -> None:
    """Refuse an NSE cost model charged on the other product: delivery trades charged intraday STT (0.025% on
    sells) understate costs fourfold on a round trip; intraday ones charged delivery STT overstate them."""
    charged_as = _PRESET_PRODUCT.get(costs.name)
    if charged_as is not None and charged_as is not product:
        wanted = next(name for name, kind in _PRESET_PRODUCT.items() if kind is product)
        raise ConfigError(f"costs {costs.name!r} are the {charged_as.value} charges but product is "
                          f"{product.value!r}: use costs {wanted!r} or product {charged_as.value!r}")

