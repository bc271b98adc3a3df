"""Self-contained HTML tearsheet (plotly, its JavaScript inlined once): equity and drawdown, monthly
returns heatmap, trade return distribution, exposure, per-fold table, stress windows, Monte Carlo."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tradeloom.engine.metrics import drawdown, monthly_returns

if TYPE_CHECKING:
    from pipelines.backtest import WalkForwardReport


def _dates(ns: np.ndarray) -> list[datetime]:
    return [datetime.fromtimestamp(value / 1e9, UTC) for value in ns.tolist()]


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(key))}</th>" for key in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(f'{value:.4f}' if isinstance(value, float) else str(value))}</td>"
                         for value in row.values()) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_walk_forward_tearsheet(report: WalkForwardReport, path: Path,
                                 benchmark: dict[str, Any] | None = None) -> Path:
    import plotly.graph_objects as go  # type: ignore[import-untyped]
    from plotly.subplots import make_subplots  # type: ignore[import-untyped]

    dates = _dates(report.equity_ns)
    figures: list[tuple[str, Any]] = []

    equity_fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    equity_fig.add_trace(go.Scatter(x=dates, y=report.equity, name=report.strategy), row=1, col=1)
    if benchmark is not None:
        equity_fig.add_trace(go.Scatter(x=_dates(benchmark["bar_at_ns"]), y=benchmark["equity"],
                                        name=benchmark["name"], line={"dash": "dot"}), row=1, col=1)
    equity_fig.add_trace(go.Scatter(x=dates, y=drawdown(report.equity), name="drawdown", fill="tozeroy"),
                         row=2, col=1)
    equity_fig.update_layout(height=520, title="Equity (folds chained) and drawdown")
    figures.append(("equity", equity_fig))

    month_ids = np.array([d.year * 12 + d.month - 1 for d in dates], dtype=np.int64)
    monthly = monthly_returns(report.equity, month_ids)
    years = sorted({month // 12 for month in monthly})
    grid = np.full((len(years), 12), np.nan)
    for month, value in monthly.items():
        grid[years.index(month // 12), month % 12] = value * 100
    heat = go.Figure(go.Heatmap(z=grid, x=["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                           "Nov", "Dec"], y=[str(y) for y in years], colorscale="RdYlGn", zmid=0,
                                colorbar={"title": "%"}))
    heat.update_layout(height=max(300, 28 * len(years) + 120), title="Monthly returns (%)")
    figures.append(("monthly", heat))

    trade_returns = [t.return_pct * 100 for f in report.folds for t in f.result.trades]
    hist = go.Figure(go.Histogram(x=trade_returns, nbinsx=50))
    hist.update_layout(height=350, title=f"Trade returns (%), {len(trade_returns)} trades")
    figures.append(("trades", hist))

    exposure_dates: list[datetime] = []
    exposure: list[float] = []
    for fold in report.folds:
        result = fold.result
        exposure_dates.extend(_dates(result.bar_at_ns))
        exposure.extend(np.count_nonzero(result.positions, axis=1).tolist())
    exp_fig = go.Figure(go.Scatter(x=exposure_dates, y=exposure, mode="lines", name="open positions"))
    exp_fig.update_layout(height=300, title="Exposure: open positions")
    figures.append(("exposure", exp_fig))

    attribution: dict[str, dict[str, float]] = {}
    for fold in report.folds:
        for key, values in fold.result.attribution.items():
            slot = attribution.setdefault(key, {"pnl": 0.0, "fees": 0.0, "trades": 0.0})
            for name in slot:
                slot[name] += values[name]
    spread_rows = [{"metric": name, **values} for name, values in report.metric_spread.items()]
    fold_rows = [{**row, **{k: round(v, 4) for k, v in f.result.metrics.as_dict().items()
                            if k in ("sortino", "win_rate", "profit_factor", "exposure", "turnover")}}
                 for row, f in zip(report.table_rows(), report.folds, strict=True)]
    sections = [
        f"<h1>Walk-forward tearsheet: {html.escape(report.strategy)}</h1>",
        "<p>Each test window is backtested from flat with fresh cash through the engine and the simulated "
        "broker (fills at next open, costs included); the equity line chains the folds.</p>",
    ]
    for number, (_, figure) in enumerate(figures):
        sections.append(figure.to_html(full_html=False, include_plotlyjs=(number == 0)))
    sections += [
        "<h2>Folds</h2>", _table(fold_rows),
        "<h2>Spread across folds</h2>", _table(spread_rows),
        "<h2>Per-instrument attribution</h2>", _table([{"instrument": k, **v} for k, v in attribution.items()]),
        "<h2>Stress windows</h2>", _table([{"window": k, **v} for k, v in report.stress.items()]),
        "<h2>Monte Carlo bootstrap of trade returns</h2>",
        _table([{"quantity": k, **v} for k, v in report.monte_carlo.items()]),
    ]
    style = ("body{font-family:sans-serif;margin:2em;} table{border-collapse:collapse;margin:1em 0;} "
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.strategy)}"
                    f"</title><style>{style}</style></head><body>{''.join(sections)}</body></html>",
                    encoding="utf-8")
    return path
