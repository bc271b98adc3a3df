from __future__ import annotations

import numpy as np
import pytest

from pipelines.backtest import MarketData, run_backtest
from tradeloom.domain import ProductType, Side
from tradeloom.engine import BrokerConfig, CostConfig, EngineConfig, SignalConfig, SizingConfig, Universe, cost_preset
from tradeloom.engine.config import ExecutionConfig, check_costs_fit_product
from tradeloom.engine.costs import execution_price, fees
from tradeloom.engine.execution import slice_schedule
from tradeloom.engine.signals import entry_candidates, exit_wanted, signals_by_numpy, signals_from_probabilities
from tradeloom.engine.sizing import kelly_fraction, round_to_lot, target_quantity
from tradeloom.errors import ConfigError


def test_fees_nse_intraday_buy_one_lakh_matches_contract_note_arithmetic() -> None:
    # Rs 1,00,000 bought intraday: brokerage min(0.03% = 30, 20) = 20; no STT on buys; exchange 2.97;
    # SEBI 0.10; GST 18% of (20 + 2.97 + 0.10) = 4.1526; stamp 0.003% = 3.
    breakdown = fees(cost_preset("nse_equity_intraday"), Side.BUY, 1000, 100.0)
    assert breakdown.commission == pytest.approx(20.0)
    assert breakdown.stt == 0.0
    assert breakdown.exchange == pytest.approx(2.97)
    assert breakdown.sebi == pytest.approx(0.10)
    assert breakdown.gst == pytest.approx(0.18 * 23.07)
    assert breakdown.stamp == pytest.approx(3.0)


def test_fees_nse_delivery_sell_pays_stt_no_stamp_no_brokerage() -> None:
    breakdown = fees(cost_preset("nse_equity_delivery"), Side.SELL, 100, 500.0)
    assert breakdown.commission == 0.0
    assert breakdown.stt == pytest.approx(50.0)  # 0.1% of 50,000
    assert breakdown.stamp == 0.0


def test_fees_commission_cap_applies_to_flat_plus_percentage() -> None:
    config = CostConfig(commission_flat=5.0, commission_rate=0.01, commission_cap=12.0)
    assert fees(config, Side.BUY, 10, 100.0).commission == pytest.approx(12.0)
    assert fees(config, Side.BUY, 1, 100.0).commission == pytest.approx(6.0)


def test_execution_price_buy_pays_half_spread_slippage_and_impact() -> None:
    config = CostConfig(spread_bps=4.0, slippage_bps=1.0, impact_bps_per_participation=10.0)
    assert execution_price(config, Side.BUY, 100.0, 0.5) == pytest.approx(100.0 * (1 + 8.0 / 10_000))
    assert execution_price(config, Side.SELL, 100.0, 0.0) == pytest.approx(100.0 * (1 - 3.0 / 10_000))


def test_cost_preset_unknown_name_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="nse_equity_delivery"):
        cost_preset("nse_futures")


def test_nse_cost_model_charged_on_the_other_product_is_refused_naming_both() -> None:
    check_costs_fit_product(ProductType.INTRADAY, cost_preset("nse_equity_intraday"))
    check_costs_fit_product(ProductType.DELIVERY, cost_preset("nse_equity_delivery"))
    check_costs_fit_product(ProductType.DELIVERY, cost_preset("us_equity_retail"))  # not product-specific
    with pytest.raises(ConfigError, match=r"costs 'nse_equity_intraday' .* product is 'delivery'.*"
                                          r"use costs 'nse_equity_delivery'"):
        check_costs_fit_product(ProductType.DELIVERY, cost_preset("nse_equity_intraday"))
    with pytest.raises(ConfigError, match="use costs 'nse_equity_intraday' or product 'delivery'"):
        check_costs_fit_product(ProductType.INTRADAY, cost_preset("nse_equity_delivery"))


def test_backtest_refuses_delivery_positions_charged_intraday_costs() -> None:
    data = MarketData(Universe.simple(["NSE:INFY"], 0.05), np.arange(3, dtype=np.int64), *([np.ones((3, 1))] * 5))
    probabilities = np.full((3, 1, 3), 1 / 3)
    with pytest.raises(ConfigError, match="nse_equity_intraday"):
        run_backtest(data, probabilities, engine_config=EngineConfig(product=ProductType.DELIVERY),
                     broker_config=BrokerConfig(costs=cost_preset("nse_equity_intraday")))


def test_signals_threshold_and_margin_pick_direction() -> None:
    p = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.3, 0.4, 0.3], [0.05, 0.40, 0.55]])
    signals = signals_from_probabilities(SignalConfig(enter_threshold=0.6, exit_threshold=0.6, min_confidence=0.1), p)
    assert signals.direction.tolist() == [1, -1, 0, 0]  # row 3: p_up 0.55 below the 0.6 threshold
    loose = signals_from_probabilities(SignalConfig(enter_threshold=0.5, exit_threshold=0.5), p)
    assert loose.direction.tolist() == [1, -1, 0, 1]


def test_enter_and_exit_thresholds_mean_the_same_for_shorts_as_for_longs() -> None:
    """enter 0.6 / exit 0.4: either side enters at 0.6 and a held position leaves when the opposite class
    reaches 0.4 (a long on p(down), a short on p(up))."""
    p = np.array([[0.45, 0.30, 0.25], [0.25, 0.25, 0.50], [0.65, 0.20, 0.15], [0.10, 0.25, 0.65]])
    signals = signals_from_probabilities(SignalConfig(enter_threshold=0.6, exit_threshold=0.4), p)
    assert signals.direction.tolist() == [0, 0, -1, 1]
    assert signals.exit_direction.tolist() == [-1, 1, -1, 1]
    numpy = signals_by_numpy(SignalConfig(enter_threshold=0.6, exit_threshold=0.4), p)
    assert numpy.direction.tolist() == [0, 0, -1, 1] and numpy.exit_direction.tolist() == [-1, 1, -1, 1]
    config = SignalConfig(enter_threshold=0.6, exit_threshold=0.4, allow_short=True)
    held = np.array([10, -10, 0, 0])
    opposite, _ = exit_wanted(config, signals, held, np.zeros(4, dtype=np.int64))
    assert opposite.tolist() == [True, True, False, False]
    side = entry_candidates(config, signals, np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.int64),
                            np.full(4, 99, dtype=np.int64), None)
    assert side.tolist() == [0, 0, -1, 1]


def test_kelly_fraction_even_payoff_capped() -> None:
    f = kelly_fraction(np.array([0.5, 0.6, 0.9]), payoff=1.0, cap=0.25)
    np.testing.assert_allclose(f, [0.0, 0.2, 0.25])


def test_round_to_lot_never_rounds_up() -> None:
    assert round_to_lot(np.array([149.0, 50.0, 24.9]), np.array([50, 50, 25])).tolist() == [100, 50, 0]


def test_target_quantity_fixed_fractional_risks_fraction_to_stop() -> None:
    quantity = target_quantity(
        SizingConfig(method="fixed_fractional", risk_fraction=0.01), equity=100_000.0, cash=100_000.0,
        price=np.array([100.0]), stop_distance=np.array([5.0]), probability_win=np.array([0.6]),
        realised_vol=None, lot_size=np.array([1]),
    )
    assert quantity.tolist() == [200]  # 1,000 at risk / 5 per share


def test_target_quantity_volatility_target_scales_inverse_to_vol() -> None:
    config = SizingConfig(method="volatility_target", target_volatility=0.2, bars_per_year=256)
    quantity = target_quantity(config, equity=100_000.0, cash=100_000.0, price=np.array([100.0, 100.0]),
                               stop_distance=np.array([np.nan, np.nan]), probability_win=np.array([0.5, 0.5]),
                               realised_vol=np.array([0.025, 0.05]), lot_size=np.array([1, 1]))
    assert quantity.tolist() == [500, 250]  # 0.2 / (0.025 * 16) = 0.5 of equity; half that at twice the vol


def test_slice_schedule_twap_even_and_capped_by_participation() -> None:
    even = slice_schedule(ExecutionConfig(algo="twap", slices=4), 100, lot_size=1, volumes=[1e9] * 4)
    assert even == [25, 25, 25, 25]
    capped = slice_schedule(ExecutionConfig(algo="twap", slices=2, participation_cap=0.1), 100, lot_size=1,
                            volumes=[300.0, 300.0, 300.0, 300.0])
    assert capped == [30, 30, 30, 10] and sum(capped) == 100


def test_slice_schedule_vwap_follows_volume_profile() -> None:
    children = slice_schedule(ExecutionConfig(algo="vwap", slices=3), 100, lot_size=1, volumes=[1e9] * 3,
                              volume_profile=[0.5, 0.2, 0.3])
    assert children == [50, 20, 30]  # proportional to the profile
