"""The one decision engine (DESIGN.md §2): `step(config, state, inputs) -> StepResult`, the simulated broker
that fills its intents, costs, sizing, risk rules, metrics and baselines. Numpy and pydantic only."""

from tradeloom.engine.config import (
    BrokerConfig,
    CostConfig,
    EngineConfig,
    ExecutionConfig,
    RiskConfig,
    SignalConfig,
    SizingConfig,
    StopConfig,
    cost_preset,
)
from tradeloom.engine.simbroker import SimFill, SimulatedBroker
from tradeloom.engine.state import DecisionRecord, EngineInputs, EngineState, RuleEvent, StepResult, Universe
from tradeloom.engine.step import step

__all__ = [
    "BrokerConfig", "CostConfig", "DecisionRecord", "EngineConfig", "EngineInputs", "EngineState",
    "ExecutionConfig", "RiskConfig", "RuleEvent", "SignalConfig", "SimFill", "SimulatedBroker", "SizingConfig",
    "StepResult", "StopConfig", "Universe", "cost_preset", "step",
]
