"""What a served model promises (its card) and the check that refuses one the online features cannot feed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tradeloom.errors import ConfigError
from tradeloom.models.labels import CLASSES


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
    action_levels: tuple[float, ...] = ()  # a discrete policy's target weights (empty when continuous)
    max_weight: float = Field(default=1.0, gt=0.0)
    allow_short: bool = False

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
        raise ModelRefusedError(f"model card invalid: {first['loc']}: {first['msg']}") from error


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
