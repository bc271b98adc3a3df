"""Executor settings refuse a paper account charged the other product's NSE costs."""

from __future__ import annotations

import pytest

from executor.settings import ExecutorSettings
from tradeloom.domain import ProductType
from tradeloom.engine.config import BrokerConfig, EngineConfig, cost_preset
from tradeloom.errors import ConfigError


def test_intraday_engine_with_delivery_paper_costs_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match="costs 'nse_equity_delivery' are the delivery charges but product is "
                                          "'intraday'"):
        ExecutorSettings(engine=EngineConfig(product=ProductType.INTRADAY),
                         paper=BrokerConfig(costs=cost_preset("nse_equity_delivery")))
    matched = ExecutorSettings(engine=EngineConfig(product=ProductType.INTRADAY),
                               paper=BrokerConfig(costs=cost_preset("nse_equity_intraday")))
    assert matched.paper.costs.name == "nse_equity_intraday"
