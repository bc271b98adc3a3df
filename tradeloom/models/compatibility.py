"""What a served model promises (its card) and the check that refuses one the online features cannot feed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tradeloom.errors import ConfigError
from tradeloom.models.labels import CLASSES
from tradeloom.portfolio.config import RebalanceConfig
from tradeloom.portfolio.sizing_policy import STATE_FEATURES


class ModelRefusedError(ConfigError):
    """A model cannot be served with the current features: keep the previous model, fix the registry."""


class ModelCard(BaseModel):
    """Stored beside the ONNX file; everything the scorer and the executor need besides the graph."""

    model_config = ConfigDict(frozen=True)
    name: str
    kind: str
    feature_names: tuple[str, ...]
    feature_spec_hash: str
    # Rows of history per scored row: 1 for tabular models, K for sequence models.
    window: int = Field(ge=1)
    classes: tuple[str, ...] = CLASSES
    temperature: float = Field(default=1.0, gt=0.0)
    input_name: str = "features"
    output_name: str = "probabilities"
    # What the output means: class probabilities (down, flat, up) for direction models, or a target position
    # as a fraction of equity for sizing policies, whose last inputs are portfolio state the executor computes.
    output_kind: Literal["probabilities", "target_weight"] = "probabilities"
    state_feature_names: tuple[str, ...] = ()
    # Features every training row had (empty: not recorded, an older card); a row missing one is not scored.
    required_features: tuple[str, ...] = ()
    action_levels: tuple[float, ...] = ()  # a discrete policy's target weights (empty when continuous)
    max_weight: float = Field(default=1.0, gt=0.0)
    allow_short: bool = False
    # The sizing parameters the policy was evaluated with (cash buffer, minimum trade); the executor keeps
    # them and substitutes its own strategy name and risk limits. None for direction models.
    rebalance: RebalanceConfig | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The ONNX input shape without the batch axis."""
        n = len(self.feature_names)
        return (n,) if self.window == 1 else (self.window, n)


def parse_card(raw: dict[str, object]) -> ModelCard:
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        raise ModelRefusedError(
            f"model card invalid: {first['loc']} = {first.get('input')!r}: {first['msg']}") from error


def check_compatible(card: ModelCard, feature_names: tuple[str, ...] | list[str], spec_hash: str) -> None:
    """Refuse a model whose feature spec, feature list or classes differ from what the engine computes."""
    if card.feature_spec_hash != spec_hash:
        raise ModelRefusedError(
            f"model {card.name!r}: feature_spec_hash {card.feature_spec_hash!r} differs from the online "
            f"engine's {spec_hash!r}; retrain on the current feature spec or roll the engine back"
        )
    if tuple(feature_names) != card.feature_names:
        missing = sorted(set(card.feature_names) - set(feature_names))
        extra = sorted(set(feature_names) - set(card.feature_names))
        raise ModelRefusedError(
            f"model {card.name!r}: feature_names differ from the engine's (missing {missing}, extra {extra}, "
            f"or a different order); expected exactly {list(card.feature_names)}"
        )
    if card.classes != CLASSES:
        raise ModelRefusedError(f"model {card.name!r}: classes {list(card.classes)}, expected {list(CLASSES)}")


def check_signature(card: ModelCard, onnx_input_shape: tuple[int | str | None, ...]) -> None:
    """The ONNX graph's input (batch axis dropped) must be the shape the card promises."""
    declared = tuple(onnx_input_shape[1:])
    if declared != card.input_shape:
        raise ModelRefusedError(
            f"model {card.name!r}: ONNX input shape {list(declared)} (after the batch axis) does not match the "
            f"card's {list(card.input_shape)} (window={card.window}, {len(card.feature_names)} features)"
        )


def check_policy_compatible(card: ModelCard, feature_names: tuple[str, ...] | list[str], spec_hash: str) -> None:
    """Refuse a sizing policy the executor cannot feed: its inputs must be exactly the online features in
    the engine's order, then the portfolio state features the executor computes (`STATE_FEATURES`)."""
    if card.output_kind != "target_weight":
        raise ModelRefusedError(f"model {card.name!r}: output_kind {card.output_kind!r}, expected 'target_weight'")
    if card.feature_spec_hash != spec_hash:
        raise ModelRefusedError(
            f"model {card.name!r}: feature_spec_hash {card.feature_spec_hash!r} differs from the online "
            f"engine's {spec_hash!r}; retrain the policy on the current feature spec"
        )
    if card.state_feature_names != STATE_FEATURES:
        raise ModelRefusedError(
            f"model {card.name!r}: state_feature_names {list(card.state_feature_names)}, expected "
            f"{list(STATE_FEATURES)} (the portfolio state the executor computes)"
        )
    expected = (*feature_names, *STATE_FEATURES)
    if card.feature_names != expected:
        missing = [name for name in expected if name not in card.feature_names]
        extra = [name for name in card.feature_names if name not in expected]
        raise ModelRefusedError(
            f"model {card.name!r}: feature_names {list(card.feature_names)} (missing {missing}, extra {extra}, "
            f"or a different order); expected the online features then the state: {list(expected)}"
        )
    if card.window != 1:
        raise ModelRefusedError(f"model {card.name!r}: window {card.window}, expected 1 for a sizing policy")
