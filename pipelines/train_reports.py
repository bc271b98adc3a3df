"""Run artifacts: confusion matrix, feature importance, calibration plot, equity curve, a tearsheet."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tradeloom.models.labels import CLASSES
from tradeloom.models.metrics import reliability
from tradeloom.models.trading import cost_config

if TYPE_CHECKING:
    from pipelines.train import ModelOutcome, TrainingData, TrainResult


def confusion_matrix(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> list[list[int]]:
    """Rows are true classes, columns predicted classes, in the order down, flat, up."""
    predicted = np.argmax(p, axis=1)
    matrix = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    np.add.at(matrix, (y, predicted), 1)
    return [[int(v) for v in row] for row in matrix.tolist()]


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def equity_curves(result: TrainResult, outcome: ModelOutcome) -> dict[str, npt.NDArray[np.float64]]:
    """The model's and the baselines' chained out-of-sample equity through the engine (from 1.0)."""
    return {outcome.kind.value: outcome.equity, **result.baseline_equity}


def build_artifacts(result: TrainResult, outcome: ModelOutcome, data: TrainingData) -> dict[str, bytes | str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    y = data.labels[result.test_rows]
    p = outcome.oos_probabilities
    artifacts: dict[str, bytes | str] = {
        "evaluation/confusion_matrix.json": json.dumps({"classes": CLASSES, "matrix": confusion_matrix(y, p)}),
        "evaluation/fold_metrics.json": json.dumps([m.model_dump() for m in outcome.fold_metrics], default=float),
        "evaluation/calibration.json": reliability(y, p).model_dump_json(),
    }
    from pipelines.train import feature_importance

    importance = feature_importance(outcome, data.feature_names)
    if importance is not None:
        artifacts["evaluation/feature_importance.json"] = json.dumps(
            dict(sorted(importance.items(), key=lambda item: -item[1])))
    curve = reliability(y, p)
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--")
    axis.plot(curve.confidence, curve.accuracy, marker="o")
    axis.set(xlabel="confidence", ylabel="accuracy", title=f"calibration ({outcome.kind.value})")
    calibration_png = _png(figure)
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for name, equity in equity_curves(result, outcome).items():
        axis.plot(equity, label=name)
    axis.set(xlabel="out-of-sample bar", ylabel="equity (after costs)", title="walk-forward equity")
    axis.legend()
    equity_png = _png(figure)
    plt.close(figure)
    artifacts["plots/calibration.png"] = calibration_png
    artifacts["plots/equity_curve.png"] = equity_png
    artifacts["tearsheet.html"] = tearsheet(result, outcome, calibration_png, equity_png)
    return artifacts


def tearsheet(result: TrainResult, outcome: ModelOutcome, calibration_png: bytes, equity_png: bytes) -> str:
    def image(data: bytes) -> str:
        return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))

    rows = result.comparison_rows()
    header = "".join(f"<th>{html.escape(key)}</th>" for key in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    folds = "".join(
        f"<tr><td>{i}</td>" + "".join(f"<td>{cell(v)}</td>" for v in m.flat().values()) + "</tr>"
        for i, m in enumerate(outcome.fold_metrics)
    )
    fold_header = "".join(f"<th>{html.escape(k)}</th>" for k in outcome.fold_metrics[0].flat())
    lineage = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in sorted(result.lineage.items()))
    return (
        f"<html><head><meta charset='utf-8'><title>{html.escape(outcome.kind.value)} tearsheet</title></head><body>"
        f"<h1>{html.escape(result.config.strategy)}: {html.escape(outcome.kind.value)}</h1>"
        f"<p>out-of-sample window {html.escape(result.oos_window)}; trading via {html.escape(result.trading_source)};"
        f" costs {html.escape(cost_config(result.config.costs).name)}</p>"
        f"<table border=1><tr>{header}</tr>{body}</table><h2>per fold</h2>"
        f"<table border=1><tr><th>fold</th>{fold_header}</tr>{folds}</table>"
        f"{image(equity_png)}{image(calibration_png)}<h2>lineage</h2><ul>{lineage}</ul></body></html>"
    )
