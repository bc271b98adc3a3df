"""Transaction costs of one fill: commission (flat + percentage, capped), Indian statutory charges,
spread, slippage and volume-participation impact."""

from __future__ import annotations

from dataclasses import dataclass

from tradeloom.domain import Side
from tradeloom.engine.config import CostConfig


@dataclass(frozen=True)
class FeeBreakdown:
    commission: float
    stt: float
    exchange: float
    sebi: float
    gst: float
    stamp: float

    @property
    def total(self) -> float:
        return self.commission + self.stt + self.exchange + self.sebi + self.gst + self.stamp


def _fee_lines(config: CostConfig, side: Side, quantity: int, price: float) -> tuple[float, float, float, float,
                                                                                      float, float]:
    """(commission, stt, exchange, sebi, gst, stamp): the one formula behind `fees` and `fee_total`."""
    value = abs(quantity) * price
    commission = config.commission_flat + config.commission_rate * value
    if config.commission_cap is not None:
        commission = min(commission, config.commission_cap)
    is_buy = side is Side.BUY
    stt = value * (config.stt_buy_rate if is_buy else config.stt_sell_rate)
    exchange = value * config.exchange_rate
    sebi = value * config.sebi_rate
    gst = config.gst_rate * (commission + exchange + sebi)
    stamp = value * config.stamp_buy_rate if is_buy else 0.0
    return commission, stt, exchange, sebi, gst, stamp


def fees(config: CostConfig, side: Side, quantity: int, price: float) -> FeeBreakdown:
    """Charges on one fill of `quantity` at `price` (the contract note's lines)."""
    return FeeBreakdown(*_fee_lines(config, side, quantity, price))


def fee_total(config: CostConfig, side: Side, quantity: int, price: float) -> float:
    # `_fee_lines` inlined (once per fill, the hottest cost call) and summed in FeeBreakdown.total's order:
    # the same float operations in the same order, so the same result. test_costs checks the two agree.
    value = abs(quantity) * price
    commission = config.commission_flat + config.commission_rate * value
    cap = config.commission_cap
    if cap is not None:
        commission = min(commission, cap)
    exchange = value * config.exchange_rate
    sebi = value * config.sebi_rate
    gst = config.gst_rate * (commission + exchange + sebi)
    if side is Side.BUY:
        return commission + value * config.stt_buy_rate + exchange + sebi + gst + value * config.stamp_buy_rate
    return commission + value * config.stt_sell_rate + exchange + sebi + gst + 0.0


def execution_price(config: CostConfig, side: Side, reference: float, participation: float) -> float:
    """Price actually paid for a market-style fill: half the spread, slippage and impact, all adverse."""
    bps = config.spread_bps / 2.0 + config.slippage_bps + config.impact_bps_per_participation * participation
    return reference * (1.0 + int(side) * bps / 10_000.0)


def round_trip_cost_rate(config: CostConfig) -> float:
    """Approximate proportional cost of buying and selling once (ignores flat fees and caps)."""
    per_side = config.commission_rate + config.exchange_rate + config.sebi_rate
    per_side *= 1.0 + config.gst_rate
    return (2 * per_side + config.stt_buy_rate + config.stt_sell_rate + config.stamp_buy_rate
            + 2 * (config.spread_bps / 2.0 + config.slippage_bps) / 10_000.0)
