"""The promotion gate: a challenger replaces the champion only if it beats it on the same out-of-sample
window by the configured margins. Pure comparison of recorded metrics; no I/O."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tradeloom.errors import ConfigError
from tradeloom.models.config import GateConfig


class PromotionRefusedError(ConfigError):
    """The gate refused a challenger: the champion stays; improve the model or change the margins."""


class CandidateSummary(BaseModel):
    """What the gate compares, as recorded on a registered model version."""

    model_config = ConfigDict(frozen=True)
    version: str
    oos_window: str
    sharpe: float
    max_drawdown: float
    log_loss: float
    # What the metrics were measured under (instrument, timeframe, labels, costs, trading rules, annualisation,
    # walk-forward, feature spec, the test rows): metrics are comparable only when all of it is the same.
    evaluation: dict[str, str] = Field(default_factory=dict)


EVALUATION_TAG = "eval_"


class GateCheck(BaseModel):
    model_config = ConfigDict(frozen=True)
    metric: str
    champion: float | None
    challenger: float
    requirement: str
    passed: bool


class GateDecision(BaseModel):
    model_config = ConfigDict(frozen=True)
    promotable: bool
    checks: list[GateCheck]
    reason: str


def decide(challenger: CandidateSummary, champion: CandidateSummary | None, gate: GateConfig) -> GateDecision:
    if champion is None:
        return GateDecision(promotable=True, checks=[], reason="no champion yet: the first candidate is promotable")
    if challenger.version == champion.version:
        return GateDecision(promotable=False, checks=[], reason=f"version {challenger.version} is already champion")
    if challenger.oos_window != champion.oos_window:
        return GateDecision(
            promotable=False, checks=[],
            reason=(f"out-of-sample windows differ (champion {champion.oos_window}, challenger "
                    f"{challenger.oos_window}): retrain both on the same test segment to compare"),
        )
    differing = sorted(key for key in set(challenger.evaluation) | set(champion.evaluation)
                       if challenger.evaluation.get(key) != champion.evaluation.get(key))
    if differing:
        shown = "; ".join(f"{key}: champion {champion.evaluation.get(key, '(not recorded)')!s:.120}, challenger "
                          f"{challenger.evaluation.get(key, '(not recorded)')!s:.120}" for key in differing[:4])
        return GateDecision(
            promotable=False, checks=[],
            reason=(f"evaluated under different settings, so the metrics do not compare ({shown}): retrain the "
                    "challenger with the champion's evaluation settings, or retrain both"),
        )
    checks = [
        GateCheck(metric="sharpe after costs", champion=champion.sharpe, challenger=challenger.sharpe,
                  requirement=f">= champion + {gate.min_sharpe_improvement:g}",
                  passed=challenger.sharpe >= champion.sharpe + gate.min_sharpe_improvement),
        GateCheck(metric="max drawdown", champion=champion.max_drawdown, challenger=challenger.max_drawdown,
                  requirement=f"<= champion + {gate.max_drawdown_tolerance:g}",
                  passed=challenger.max_drawdown <= champion.max_drawdown + gate.max_drawdown_tolerance),
        GateCheck(metric="log loss", champion=champion.log_loss, challenger=challenger.log_loss,
                  requirement=f"<= champion + {gate.max_log_loss_increase:g}",
                  passed=challenger.log_loss <= champion.log_loss + gate.max_log_loss_increase),
    ]
    failed = [check.metric for check in checks if not check.passed]
    reason = "beats the champion on every check" if not failed else f"fails: {', '.join(failed)}"
    return GateDecision(promotable=not failed, checks=checks, reason=reason)
