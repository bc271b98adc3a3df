"""Benchmark: the same SMA(10/20) long-only cross on 100 synthetic instruments x 90,000 minute bars through
tradeloom (engine + simulated broker, all instruments stepped together), backtesting.py (once per
instrument) and vectorbt `Portfolio.from_signals` (warm: compile excluded; run in .loom/venv-bench because
vectorbt 1.2 needs pandas >= 3 and the ml lock holds pandas 2.3). tradeloom's numba kernels are warmed the same
way: their compile or disk-cache load is timed apart (`tradeloom_warm_up_s`). Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.backtest import MarketData, run_backtest  # noqa: E402 - after the sys.path insert
from tradeloom.engine import (  # noqa: E402
    BrokerConfig,
    CostConfig,
    EngineConfig,
    RiskConfig,
    SignalConfig,
    SizingConfig,
    StopConfig,
    Universe,
    kernels,
)
from tradeloom.engine.baselines import sma_cross_direction, sma_cross_probabilities  # noqa: E402
from tradeloom.synthetic import BARS_PER_DAY, minute_bars, synthetic_instruments  # noqa: E402

COMMISSION = 0.001
QUANTITY = 10
VENV = ROOT / ".loom" / "venv-bench"
VECTORBT = "vectorbt==1.2.0"

VBT_SCRIPT = r"""
import sys, time, json, numpy as np, vectorbt as vbt
d = np.load(sys.argv[1])
entries, exits, price = d["entries"], d["exits"], d["price"]
small = slice(0, 200)
c = np.ascontiguousarray
vbt.Portfolio.from_signals(c(price[small, :2]), c(entries[small, :2]), c(exits[small, :2]), size=%d, fees=%r,
                           init_cash=1e12).trades.values  # compile every kernel used below
t, cpu = time.perf_counter(), time.process_time()
pf = vbt.Portfolio.from_signals(price, entries, exits, size=%d, fees=%r, init_cash=1e12)
records = pf.trades.values
elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
closed = records[records["status"] == 1]
np.savez(sys.argv[2], col=closed["col"], entry=closed["entry_idx"], exit=closed["exit_idx"])
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "vectorbt": vbt.__version__}))
""" % (QUANTITY, COMMISSION, QUANTITY, COMMISSION)  # noqa: UP031 - a script template with braces


def make_data(instruments: int, days: int, seed: int) -> MarketData:
    listed = synthetic_instruments(instruments)
    bars = minute_bars(listed, days, seed)
    t = len(bars) // instruments

    def grid(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values.reshape(instruments, t).T)

    return MarketData(Universe.simple([i.key for i in listed], 0.05), bars.bar_at[:t], grid(bars.open),
                      grid(bars.high), grid(bars.low), grid(bars.close), grid(bars.volume),
                      bars_per_year=252.0 * BARS_PER_DAY)


def warm_up_tradeloom() -> float:
    """Compile (first run) or load from numba's disk cache the engine's kernels, as vectorbt is warmed:
    seconds taken, reported apart from the backtest."""
    started = time.perf_counter()
    kernels.warm_up()
    return time.perf_counter() - started


def run_tradeloom(data: MarketData) -> tuple[float, float, set[tuple[int, int, int]]]:
    """(wall seconds, CPU seconds, trades as (column, entry row, exit row)); kernels already warm."""
    config = EngineConfig(
        strategy="bench-sma", signal=SignalConfig(enter_threshold=0.5, exit_threshold=0.5),
        stops=StopConfig(stop_loss_pct=None),
        risk=RiskConfig(max_position_fraction=None, max_gross_exposure=None, max_net_exposure=None,
                        max_positions=None, daily_loss_limit=None, max_drawdown=None),
        sizing=SizingConfig(method="fixed_quantity", quantity=QUANTITY),
    )
    broker = BrokerConfig(costs=CostConfig(commission_rate=COMMISSION))
    started, cpu = time.perf_counter(), time.process_time()
    probabilities = sma_cross_probabilities(data.close, 10, 20)
    result = run_backtest(data, probabilities, engine_config=config, broker_config=broker, cash=1e12)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    row = {int(ns): i for i, ns in enumerate(data.bar_at_ns.tolist())}
    column = {key: i for i, key in enumerate(data.universe.keys)}
    trades = {(column[t.instrument_key], row[t.entry_at_ns], row[t.exit_at_ns]) for t in result.trades}
    return elapsed, cpu, trades


def run_backtesting_py(data: MarketData, columns: list[int]) -> tuple[float, float, set[tuple[int, int, int]]]:
    """Same signal array as the others (so SMA rounding differences on tied prices cannot differ)."""
    import pandas as pd
    from backtesting import Backtest, Strategy

    direction = sma_cross_direction(data.close, 10, 20).astype(np.float64)

    class LongOnlySmaCross(Strategy):
        column = 0

        def init(self) -> None:
            self.signal = self.I(lambda: direction[:, self.column], name="sma_cross")

        def next(self) -> None:
            if self.signal[-1] > 0 and not self.position:
                self.buy(size=QUANTITY)
            elif self.signal[-1] < 0 and self.position:
                self.position.close()

    index = pd.DatetimeIndex(data.bar_at_ns)
    trades: set[tuple[int, int, int]] = set()
    elapsed = cpu = 0.0
    for i in columns:
        frame = pd.DataFrame({"Open": data.open[:, i], "High": data.high[:, i], "Low": data.low[:, i],
                              "Close": data.close[:, i], "Volume": data.volume[:, i]}, index=index)
        started, cpu_started = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = Backtest(frame, LongOnlySmaCross, cash=1e12, commission=COMMISSION).run(column=i)
        elapsed += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        trades |= {(i, int(e), int(x)) for e, x in zip(stats._trades["EntryBar"], stats._trades["ExitBar"],
                                                         strict=True)}
    return elapsed, cpu, trades


def ensure_vectorbt() -> str | None:
    """Create .loom/venv-bench with vectorbt; the reason when that is impossible."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import vectorbt"], capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        return None
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements" / "bench.txt")
                              if (ROOT / "requirements" / "bench.txt").exists() else VECTORBT],
                             capture_output=True, text=True, check=False)
    if install.returncode != 0:
        return f"pip install {VECTORBT} failed: {install.stderr.strip().splitlines()[-1:]}"
    return None


def run_vectorbt(
    data: MarketData,
) -> tuple[float | None, float | None, set[tuple[int, int, int]] | None, str | None]:
    reason = ensure_vectorbt()
    if reason is not None:
        return None, None, None, reason
    work = ROOT / ".loom" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    direction = sma_cross_direction(data.close, 10, 20)
    # Decided at bar t's close, filled at bar t+1's open: shift the signals one bar and trade at the open.
    entries = np.zeros_like(direction, dtype=bool)
    exits = np.zeros_like(direction, dtype=bool)
    entries[1:], exits[1:] = direction[:-1] > 0, direction[:-1] < 0
    np.savez(work / "vbt_in.npz", entries=entries, exits=exits, price=data.open)
    run = subprocess.run([str(VENV / "bin" / "python"), "-c", VBT_SCRIPT, str(work / "vbt_in.npz"),
                          str(work / "vbt_out.npz")], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        return None, None, None, f"vectorbt run failed: {run.stderr.strip().splitlines()[-1:]}"
    timing = json.loads(run.stdout.strip().splitlines()[-1])
    out = np.load(work / "vbt_out.npz")
    trades = {(int(c), int(e), int(x)) for c, e, x in zip(out["col"], out["entry"], out["exit"], strict=True)}
    return timing["seconds"], timing.get("cpu_seconds"), trades, None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--days", type=int, default=240)  # 240 sessions x 375 bars = 90,000 bars
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--peer-instruments", type=int, default=None,
                        help="run backtesting.py on this many instruments and scale its time (default: all)")
    args = parser.parse_args()
    data = make_data(args.instruments, args.days, args.seed)
    warm_up_s = warm_up_tradeloom()
    tradeloom_s, tradeloom_cpu, ours = run_tradeloom(data)
    peer_columns = list(range(args.peer_instruments or args.instruments))
    bt_s, bt_cpu, bt_trades = run_backtesting_py(data, peer_columns)
    bt_total = bt_s * args.instruments / len(peer_columns)
    bt_cpu_total = bt_cpu * args.instruments / len(peer_columns)
    vbt_s, vbt_cpu, vbt_trades, vbt_reason = run_vectorbt(data)
    ours_peer = {trade for trade in ours if trade[0] in set(peer_columns)}
    matches = ours_peer == bt_trades and (vbt_trades is None or vbt_trades == ours)
    line = {
        "bench": "backtest", "instruments": args.instruments, "bars": len(data),
        "bar_events": len(data) * args.instruments, "tradeloom_s": round(tradeloom_s, 2),
        "tradeloom_warm_up_s": round(warm_up_s, 2),
        "backtesting_py_s": round(bt_total, 2), "backtesting_py_instruments_run": len(peer_columns),
        "vectorbt_s": None if vbt_s is None else round(vbt_s, 3), "trades": len(ours),
        "trades_match": matches, "speedup_vs_backtesting_py": round(bt_total / tradeloom_s, 2),
        "ratio_to_vectorbt": None if vbt_s is None else round(tradeloom_s / vbt_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # CPU seconds: the ratios that survive a shared, loaded machine (wall time counts other processes).
        "tradeloom_cpu_s": round(tradeloom_cpu, 2), "backtesting_py_cpu_s": round(bt_cpu_total, 2),
        "vectorbt_cpu_s": None if vbt_cpu is None else round(vbt_cpu, 3),
        "cpu_speedup_vs_backtesting_py": round(bt_cpu_total / tradeloom_cpu, 2),
        "cpu_ratio_to_vectorbt": None if not vbt_cpu else round(tradeloom_cpu / vbt_cpu, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if vbt_reason is not None:
        line["vectorbt_reason"] = vbt_reason
    if not matches:
        line["mismatch"] = {"tradeloom_only": len(ours_peer - bt_trades),
                            "backtesting_py_only": len(bt_trades - ours_peer),
                            "vectorbt_diff": None if vbt_trades is None else len(vbt_trades ^ ours)}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
