"""Executor latency: bar close -> all order intents handed to the broker port, in replay with the paper
broker and an ONNX LightGBM champion, 50 symbols; against ONNX inference alone in the same run.

Runs in .loom/venv-ml (it trains the LightGBM it serves; the executor code is the same in venv-live).
Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from executor.journal import Journal  # noqa: E402
from executor.oms import OrderManager  # noqa: E402
from executor.trader import BarSlice, OnnxChampion, Trader  # noqa: E402
from pipelines.learners import fit_lightgbm  # noqa: E402
from tradeloom.adapters.brokers.paper import PaperBroker  # noqa: E402
from tradeloom.adapters.onnx_model import OnnxScorer  # noqa: E402
from tradeloom.engine.config import EngineConfig, SignalConfig  # noqa: E402
from tradeloom.engine.state import Universe  # noqa: E402
from tradeloom.errors import DatabaseUnavailableError  # noqa: E402
from tradeloom.features.online import OnlineFeatureEngine, replay  # noqa: E402
from tradeloom.features.spec import spec_hash  # noqa: E402
from tradeloom.models.compatibility import ModelCard  # noqa: E402
from tradeloom.models.config import LightGBMParams  # noqa: E402
from tradeloom.synthetic import BARS_PER_DAY, minute_bars, synthetic_instruments  # noqa: E402

SYMBOLS = int(os.environ.get("BENCH_LATENCY_SYMBOLS", "50"))
DAYS = int(os.environ.get("BENCH_LATENCY_DAYS", "3"))


def _no_database() -> object:
    raise DatabaseUnavailableError("the latency benchmark keeps its journal in the spool")


def _time_write_ahead_flush(trader: Trader) -> list[float]:
    """Wrap the trader's journal sync so that the seconds it takes inside `submit_all` (the write-ahead flush,
    not the end-of-bar one) add up in the returned cell."""
    cell = [0.0]
    inside = [False]
    journal, orders = trader.journal, trader.orders
    sync, submit_all = journal.sync, orders.submit_all

    def timed_sync() -> None:
        started = time.perf_counter()
        sync()
        if inside[0]:
            cell[0] += time.perf_counter() - started

    def marked_submit_all(*args: Any, **kwargs: Any) -> Any:
        inside[0] = True
        try:
            return submit_all(*args, **kwargs)
        finally:
            inside[0] = False

    journal.sync = timed_sync  # type: ignore[method-assign]
    orders.submit_all = marked_submit_all  # type: ignore[method-assign]
    return cell


def main() -> None:
    instruments = synthetic_instruments(SYMBOLS)
    keys = tuple(i.key for i in instruments)
    bars = minute_bars(instruments, days=DAYS, seed=11)
    shape = (SYMBOLS, DAYS * BARS_PER_DAY)
    arrays = {name: getattr(bars, name).reshape(shape).T.copy() for name in ("open", "high", "low", "close", "volume")}
    stamps = bars.bar_at.reshape(shape)[0]

    # A LightGBM direction model on the first day's features, exported to ONNX: the champion we serve.
    engine = OnlineFeatureEngine(keys, "1m")
    features = replay(engine, stamps[:BARS_PER_DAY], *(arrays[n][:BARS_PER_DAY] for n in ("open", "high", "low",
                                                                                         "close", "volume")))
    x = np.nan_to_num(features.reshape(-1, features.shape[-1]))
    forward = np.roll(arrays["close"][:BARS_PER_DAY], -5, axis=0) / arrays["close"][:BARS_PER_DAY] - 1
    y = np.digitize(forward.reshape(-1), [-0.001, 0.001]).astype(np.int64)
    rows = np.arange(len(y))
    model = fit_lightgbm(x, y, rows[: len(y) * 4 // 5], rows[len(y) * 4 // 5:],
                         LightGBMParams(n_estimators=100, early_stopping_rounds=10), seed=1)
    names = engine.spec.names
    card = ModelCard(name="bench", kind="lightgbm", feature_names=names, feature_spec_hash=spec_hash(), window=1)
    scorer = OnnxScorer(model.to_onnx(len(names)), card)

    with tempfile.TemporaryDirectory() as scratch:
        # State files as the service keeps them (the paper account, the engine state), in the scratch directory.
        broker = PaperBroker(keys, cash=10_000_000.0, state_path=Path(scratch) / "paper-account.json")
        journal = Journal(Path(scratch), _no_database, strategy="bench", mode="replay")  # type: ignore[arg-type]
        trader = Trader(
            universe=Universe.of(instruments),
            config=EngineConfig(strategy="bench", signal=SignalConfig(enter_threshold=0.4, exit_threshold=0.45)),
            broker=broker, orders=OrderManager(broker, journal), journal=journal,
            features=OnlineFeatureEngine(keys, "1m"),
            scorer=OnnxChampion(scorer, "bench", "1", SYMBOLS, len(names)), mode="replay", cash=10_000_000.0,
            state_path=Path(scratch) / "engine-state.json",
        )
        # The write-ahead flush inside the window (the journal made durable before an order reaches the broker),
        # timed on its own: a disk's fsync, which the ratio to inference pays on every bar that sends orders.
        flush = _time_write_ahead_flush(trader)
        decision_ms, inference_ms, with_orders, flush_ms = [], [], [], []
        for t in range(BARS_PER_DAY, len(stamps)):
            bar = BarSlice(int(stamps[t]), *(arrays[n][t] for n in ("open", "high", "low", "close", "volume")))
            flush[0] = 0.0
            result = trader.on_bar_close(bar)
            decision_ms.append(trader.last_decision_seconds * 1000)
            flush_ms.append(flush[0] * 1000)
            with_orders.append(bool(result.intents or getattr(result, "cancels", ())))
            window = np.nan_to_num(trader.scorer.rows)  # type: ignore[attr-defined]
            started = time.perf_counter()
            scorer.predict_proba(window)
            inference_ms.append((time.perf_counter() - started) * 1000)
        orders = len(trader.orders.orders)
    decision, inference = np.array(decision_ms), np.array(inference_ms)
    ordering = decision[np.array(with_orders, dtype=bool)]  # bars whose decision sent or cancelled orders
    flushed = np.array(flush_ms)
    without_flush = decision - flushed
    print(json.dumps({
        "bench": "executor_latency", "symbols": SYMBOLS, "bars": len(decision), "orders": orders,
        "p50_ms": round(float(np.percentile(decision, 50)), 3), "p99_ms": round(float(np.percentile(decision, 99)), 3),
        "inference_only_p50_ms": round(float(np.percentile(inference, 50)), 3),
        "inference_only_p99_ms": round(float(np.percentile(inference, 99)), 3),
        "p99_vs_inference_p99": round(float(np.percentile(decision, 99) / np.percentile(inference, 99)), 2),
        "order_bars": int(ordering.size),
        "order_bar_p50_ms": round(float(np.median(ordering)), 3) if ordering.size else None,
        "order_bar_max_ms": round(float(ordering.max()), 3) if ordering.size else None,
        "write_ahead_flush_p50_ms": round(float(np.median(flushed[flushed > 0])), 3) if np.any(flushed) else None,
        "p99_without_flush_ms": round(float(np.percentile(without_flush, 99)), 3),
        "p99_without_flush_vs_inference_p99": round(float(np.percentile(without_flush, 99)
                                                          / np.percentile(inference, 99)), 2),
    }))


if __name__ == "__main__":
    main()
