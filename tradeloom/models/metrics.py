"""Out-of-sample classification metrics for three-class direction probabilities (pure numpy)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from tradeloom.errors import ConfigError
from tradeloom.models.labels import CLASSES, DOWN, UP

Probabilities = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int64]
EPSILON = 1e-15


def _check(y: Labels, p: Probabilities) -> None:
    if p.ndim != 2 or p.shape[1] != len(CLASSES) or p.shape[0] != y.shape[0]:
        raise ConfigError(f"probabilities must be (n, 3) with n = len(labels) = {y.shape[0]}, got {p.shape}")
    if y.size == 0:
        raise ConfigError("metrics need at least one labelled row, got none")


def log_loss(y: Labels, p: Probabilities) -> float:
    _check(y, p)
    clipped = np.clip(p[np.arange(y.size), y], EPSILON, 1.0)
    return float(-np.mean(np.log(clipped)))


def accuracy(y: Labels, p: Probabilities) -> float:
    _check(y, p)
    return float(np.mean(np.argmax(p, axis=1) == y))


def precision_recall(y: Labels, p: Probabilities) -> tuple[list[float], list[float]]:
    """Per class; a class never predicted (or never present) has precision (recall) NaN."""
    _check(y, p)
    predicted = np.argmax(p, axis=1)
    precision, recall = [], []
    for label in range(len(CLASSES)):
        hits = float(np.sum((predicted == label) & (y == label)))
        n_predicted, n_actual = float(np.sum(predicted == label)), float(np.sum(y == label))
        precision.append(hits / n_predicted if n_predicted else float("nan"))
        recall.append(hits / n_actual if n_actual else float("nan"))
    return precision, recall


def balanced_accuracy(y: Labels, p: Probabilities) -> float:
    """Mean recall over the classes present, so always predicting the majority class scores 1/classes."""
    _, recall = precision_recall(y, p)
    return float(np.nanmean(recall))


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size)
    ranks[order] = np.arange(1, values.size + 1, dtype=np.float64)
    # Ties share the mean of their ranks.
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if unique.size != values.size:
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    return ranks


def binary_auc(positive: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]) -> float:
    """Mann-Whitney AUC; NaN when one side is empty."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc_ovr(y: Labels, p: Probabilities) -> float:
    """Macro one-vs-rest ROC-AUC over the classes that have both positives and negatives."""
    _check(y, p)
    scores = [binary_auc(y == label, p[:, label]) for label in range(len(CLASSES))]
    finite = [score for score in scores if np.isfinite(score)]
    return float(np.mean(finite)) if finite else float("nan")


def direction_score(p: Probabilities) -> npt.NDArray[np.float64]:
    """One number per row: P(up) - P(down)."""
    return p[:, UP] - p[:, DOWN]


def spearman(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    if a.size < 3:
        return float("nan")
    ra, rb = _average_ranks(a), _average_ranks(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def information_coefficient(p: Probabilities, forward_return: npt.NDArray[np.float64]) -> float:
    """Rank correlation of the direction score with the realised forward return."""
    return spearman(direction_score(p), forward_return)


class Reliability(BaseModel):
    """Top-label calibration: per confidence bin, mean confidence vs accuracy (NaN for empty bins)."""

    model_config = ConfigDict(frozen=True)
    edges: list[float]
    confidence: list[float]
    accuracy: list[float]
    count: list[int]
    expected_calibration_error: float


def reliability(y: Labels, p: Probabilities, bins: int = 10) -> Reliability:
    _check(y, p)
    confidence = p.max(axis=1)
    correct = (np.argmax(p, axis=1) == y).astype(np.float64)
    edges = np.linspace(1.0 / len(CLASSES), 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    mean_conf, mean_acc, count = [], [], []
    ece = 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        count.append(n)
        if n:
            mean_conf.append(float(confidence[mask].mean()))
            mean_acc.append(float(correct[mask].mean()))
            ece += n / y.size * abs(mean_conf[-1] - mean_acc[-1])
        else:
            mean_conf.append(float("nan"))
            mean_acc.append(float("nan"))
    return Reliability(edges=edges.tolist(), confidence=mean_conf, accuracy=mean_acc, count=count,
                       expected_calibration_error=float(ece))


class FoldMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)
    rows: int
    log_loss: float
    accuracy: float
    balanced_accuracy: float
    roc_auc: float
    information_coefficient: float
    expected_calibration_error: float
    precision: list[float]
    recall: list[float]

    def flat(self) -> dict[str, float]:
        """Scalar metrics for tracking, per-class ones as `precision_up` etc."""
        out = {key: float(value) for key, value in self.model_dump().items() if not isinstance(value, list)}
        for name, values in (("precision", self.precision), ("recall", self.recall)):
            out.update({f"{name}_{label}": value for label, value in zip(CLASSES, values, strict=True)})
        return out


def evaluate(y: Labels, p: Probabilities, forward_return: npt.NDArray[np.float64]) -> FoldMetrics:
    precision, recall = precision_recall(y, p)
    return FoldMetrics(
        rows=int(y.size), log_loss=log_loss(y, p), accuracy=accuracy(y, p),
        balanced_accuracy=balanced_accuracy(y, p), roc_auc=roc_auc_ovr(y, p),
        information_coefficient=information_coefficient(p, forward_return),
        expected_calibration_error=reliability(y, p).expected_calibration_error,
        precision=precision, recall=recall,
    )
