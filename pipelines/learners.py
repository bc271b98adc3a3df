"""The learners: LightGBM multiclass and PyTorch LSTM / Transformer encoders over the last K feature rows.

Each fits on one fold's fit rows with early stopping on its validation rows, predicts raw probabilities
natively, and exports an ONNX graph with the same input (`features`) and output (`probabilities`).
Heavy imports stay inside functions so importing this module is cheap.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tradeloom.errors import DataQualityError
from tradeloom.models.config import LightGBMParams, ModelKind, SequenceParams
from tradeloom.models.labels import CLASSES
from tradeloom.models.sequences import sliding_windows

if TYPE_CHECKING:
    import torch

    from pipelines.sequence_nets import DirectionNet

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]
N_CLASSES = len(CLASSES)
LIGHTGBM_OPSET = 15  # the highest onnxmltools' LightGBM converter supports
TORCH_OPSET = 17


def class_weights(y: npt.NDArray[np.int64]) -> FloatArray:
    """Inverse-frequency weights per class ("balanced"); a class absent from `y` gets weight 0."""
    counts = np.bincount(y, minlength=N_CLASSES).astype(np.float64)
    present = counts > 0
    weights = np.zeros(N_CLASSES)
    weights[present] = y.size / (present.sum() * counts[present])
    return weights


def _require_classes(y: npt.NDArray[np.int64], where: str) -> None:
    if np.unique(y).size < 2:
        raise DataQualityError(
            f"{where}: labels hold a single class {np.unique(y).tolist()}; need at least two of {list(CLASSES)} "
            "(lower labels.flat_threshold or widen the train window)"
        )


@dataclass
class FittedModel:
    kind: ModelKind
    window: int
    native: Any  # lightgbm.Booster or torch.nn.Module
    best_iteration: int

    def predict_raw(self, features: npt.NDArray[np.floating], rows: IndexArray) -> FloatArray:
        """Uncalibrated (len(rows), 3) probabilities for the given row indices of the feature matrix."""
        if self.kind is ModelKind.LIGHTGBM:
            batch = np.ascontiguousarray(features[rows], dtype=np.float32)
            return np.asarray(self.native.predict(batch), dtype=np.float64).reshape(-1, N_CLASSES)
        import torch

        with torch.no_grad():
            windows = torch.from_numpy(sliding_windows(features, rows, self.window))
            return np.asarray(self.native(windows).numpy(), dtype=np.float64)

    def onnx_input(self, features: npt.NDArray[np.floating], rows: IndexArray) -> npt.NDArray[np.float32]:
        if self.window == 1:
            return np.ascontiguousarray(features[rows], dtype=np.float32)
        return sliding_windows(features, rows, self.window)

    def to_onnx(self, n_features: int) -> bytes:
        if self.kind is ModelKind.LIGHTGBM:
            return _lightgbm_onnx(self.native, n_features)
        return _torch_onnx(self.native, self.window, n_features)


# -- LightGBM ----------------------------------------------------------------------------------------------

def fit_lightgbm(
    features: npt.NDArray[np.floating], labels: npt.NDArray[np.int64], fit: IndexArray, valid: IndexArray,
    params: LightGBMParams, seed: int,
) -> FittedModel:
    import lightgbm

    _require_classes(labels[fit], "lightgbm fit rows")
    x_fit = np.ascontiguousarray(features[fit], dtype=np.float32)
    x_valid = np.ascontiguousarray(features[valid], dtype=np.float32)
    weights = class_weights(labels[fit])[labels[fit]] if params.balanced_classes else None
    booster_params: dict[str, Any] = {
        "objective": "multiclass", "num_class": N_CLASSES, "num_leaves": params.num_leaves,
        "learning_rate": params.learning_rate, "min_child_samples": params.min_child_samples,
        "bagging_fraction": params.subsample, "bagging_freq": 1 if params.subsample < 1.0 else 0,
        "feature_fraction": params.colsample_bytree, "lambda_l2": params.reg_lambda,
        "seed": seed, "deterministic": True, "force_col_wise": True, "num_threads": 1, "verbose": -1,
    }
    train_set = lightgbm.Dataset(x_fit, label=labels[fit], weight=weights, free_raw_data=False)
    valid_set = lightgbm.Dataset(x_valid, label=labels[valid], reference=train_set, free_raw_data=False)
    booster = lightgbm.train(
        booster_params, train_set, num_boost_round=params.n_estimators, valid_sets=[valid_set],
        callbacks=[lightgbm.early_stopping(params.early_stopping_rounds, verbose=False)],
    )
    best = int(booster.best_iteration or booster.current_iteration())
    # Keep only the trees up to the best iteration so native predictions and the ONNX export agree.
    trimmed = lightgbm.Booster(model_str=booster.model_to_string(num_iteration=best))
    return FittedModel(ModelKind.LIGHTGBM, 1, trimmed, best)


def _lightgbm_onnx(booster: Any, n_features: int) -> bytes:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = onnxmltools.convert_lightgbm(
        booster, initial_types=[("features", FloatTensorType([None, n_features]))], zipmap=False,
        target_opset=LIGHTGBM_OPSET,
    )
    outputs = [output.name for output in model.graph.output]
    if "probabilities" not in outputs:
        _rename_output(model, outputs[-1], "probabilities")
    return bytes(model.SerializeToString())


def _rename_output(model: Any, old: str, new: str) -> None:
    for node in model.graph.node:
        for position, name in enumerate(node.output):
            if name == old:
                node.output[position] = new
    for output in model.graph.output:
        if output.name == old:
            output.name = new


def lightgbm_importance(model: FittedModel, feature_names: list[str]) -> dict[str, float]:
    gains = model.native.feature_importance(importance_type="gain")
    return {name: float(gain) for name, gain in zip(feature_names, gains, strict=True)}


# -- PyTorch sequence models -------------------------------------------------------------------------------

def _sequence_module(kind: ModelKind, n_features: int, params: SequenceParams, mean: FloatArray,
                     scale: FloatArray) -> DirectionNet:
    from pipelines.sequence_nets import DirectionNet

    return DirectionNet(kind.value, n_features, params.window, params.hidden, params.layers, params.heads,
                        params.dropout, mean, scale)


def fit_sequence(
    kind: ModelKind, features: npt.NDArray[np.floating], labels: npt.NDArray[np.int64], fit: IndexArray,
    valid: IndexArray, params: SequenceParams, seed: int,
) -> FittedModel:
    import torch

    _require_classes(labels[fit], f"{kind.value} fit rows")
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # determinism and a fair share of two shared cores
    generator = torch.Generator().manual_seed(seed)
    train_x = torch.from_numpy(sliding_windows(features, fit, params.window))
    valid_x = torch.from_numpy(sliding_windows(features, valid, params.window))
    train_y = torch.from_numpy(labels[fit])
    valid_y = torch.from_numpy(labels[valid])
    flat = features[fit].astype(np.float64)
    mean, scale = flat.mean(axis=0), flat.std(axis=0)
    scale[~(scale > 1e-12)] = 1.0
    model = _sequence_module(kind, features.shape[1], params, mean, scale)
    weight = torch.tensor(class_weights(labels[fit]) if params.balanced_classes else np.ones(N_CLASSES),
                          dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    valid_loss_fn = torch.nn.CrossEntropyLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=1e-4)
    best_loss, best_epoch, best_state = float("inf"), 0, {k: v.clone() for k, v in model.state_dict().items()}
    for epoch in range(params.epochs):
        model.train()
        order = torch.randperm(train_x.shape[0], generator=generator)
        for start in range(0, order.numel(), params.batch_size):
            batch = order[start:start + params.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model.logits(train_x[batch]), train_y[batch])
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            valid_loss = float(valid_loss_fn(model.logits(valid_x), valid_y))
        if valid_loss < best_loss - 1e-6:
            best_loss, best_epoch = valid_loss, epoch + 1
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        elif epoch + 1 - best_epoch >= params.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    log.info("%s: best epoch %d, validation loss %.4f", kind.value, best_epoch, best_loss)
    return FittedModel(kind, params.window, model, best_epoch)


def _torch_onnx(model: torch.nn.Module, window: int, n_features: int) -> bytes:
    import torch

    example = torch.zeros(2, window, n_features, dtype=torch.float32)
    model.eval()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        # The TorchScript exporter: the dynamo one needs onnxscript, which the venvs do not carry.
        torch.onnx.export(model, (example,), str(path), input_names=["features"], output_names=["probabilities"],
                          dynamic_axes={"features": {0: "batch"}, "probabilities": {0: "batch"}},
                          opset_version=TORCH_OPSET, dynamo=False)
        return path.read_bytes()


def fit_model(
    kind: ModelKind, features: npt.NDArray[np.floating], labels: npt.NDArray[np.int64], fit: IndexArray,
    valid: IndexArray, params: LightGBMParams | SequenceParams, seed: int,
) -> FittedModel:
    if kind is ModelKind.LIGHTGBM:
        assert isinstance(params, LightGBMParams)  # noqa: S101 - narrows the union for mypy
        return fit_lightgbm(features, labels, fit, valid, params, seed)
    assert isinstance(params, SequenceParams)  # noqa: S101
    return fit_sequence(kind, features, labels, fit, valid, params, seed)
