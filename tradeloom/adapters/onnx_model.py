"""Scores feature rows with an ONNX direction model (onnxruntime); runs in the live venv (no torch/lightgbm)."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import onnxruntime

from tradeloom.models.calibration import apply_temperature
from tradeloom.models.compatibility import ModelCard, ModelRefusedError, check_signature

log = logging.getLogger(__name__)


class OnnxScorer:
    """(batch, window, k) or, for window-1 models, (batch, k) float features -> (batch, 3) calibrated
    probabilities in the card's class order (down, flat, up)."""

    def __init__(self, onnx_bytes: bytes, card: ModelCard) -> None:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # LightGBM's unused `label` output warns on every run otherwise
        options.intra_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(
                onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors for corrupt graphs
            raise ModelRefusedError(f"model {card.name!r}: ONNX graph failed to load: {error}") from error
        inputs = {item.name: item for item in self._session.get_inputs()}
        if card.input_name not in inputs:
            raise ModelRefusedError(
                f"model {card.name!r}: ONNX input {card.input_name!r} not found; graph has {sorted(inputs)}"
            )
        outputs = [item.name for item in self._session.get_outputs()]
        if card.output_name not in outputs:
            raise ModelRefusedError(
                f"model {card.name!r}: ONNX output {card.output_name!r} not found; graph has {outputs}"
            )
        shape = tuple(dim if isinstance(dim, int) else None for dim in inputs[card.input_name].shape)
        check_signature(card, shape)
        self.card = card

    @property
    def window(self) -> int:
        return self.card.window

    def raw_probabilities(self, features: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """The graph's own output, before calibration."""
        # Features a timeframe never fills arrive as NaN; training fed them as 0.
        batch = np.ascontiguousarray(np.nan_to_num(features, nan=0.0), dtype=np.float32)
        if self.card.window == 1 and batch.ndim == 3:
            batch = batch[:, -1, :]
        expected = self.card.input_shape
        if batch.shape[1:] != expected:
            raise ModelRefusedError(
                f"model {self.card.name!r}: features shape {batch.shape[1:]} per row, expected {expected}"
            )
        (output,) = self._session.run([self.card.output_name], {self.card.input_name: batch})
        return np.asarray(output, dtype=np.float64)

    def predict_proba(self, features: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        return apply_temperature(self.raw_probabilities(features), self.card.temperature)
