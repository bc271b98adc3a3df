"""Environment data computed the way the executor computes it: the online feature engine stepped bar by bar
over the executor's universe, NaN features fed as 0 (as `OnnxScorer` feeds them), and the executor's session
calendar. A policy trained and evaluated on this data can be served by the executor unchanged: its card lists
the online feature names, and the replayed day in the environment is the replayed day in the executor."""

from __future__ import annotations

import numpy as np

from pipelines.rl.env import EnvData
from tradeloom.adapters.store import BarMatrix
from tradeloom.calendars import session_context
from tradeloom.domain import Instrument, Timeframe
from tradeloom.errors import InputError
from tradeloom.features.online import OnlineFeatureEngine, replay


def env_data_from_bars(bars: BarMatrix, instruments: list[Instrument], key: str, timeframe: Timeframe, *,
                       start_ns: int, end_ns: int | None = None) -> EnvData:
    """The rows of `key` with `start_ns <= bar_at < end_ns`, with features from every bar of `bars` before them
    (the warm-up) over the whole universe `bars.keys` (some features read other instruments)."""
    if key not in bars.keys:
        raise InputError(f"key {key!r} not in the bar matrix's keys {list(bars.keys)}")
    column = bars.keys.index(key)
    engine = OnlineFeatureEngine(bars.keys, timeframe.value)
    features = replay(engine, bars.bar_at_ns, bars.open, bars.high, bars.low, bars.close, bars.volume)[:, column]
    upper = end_ns if end_ns is not None else int(np.iinfo(np.int64).max)
    rows = np.flatnonzero((bars.bar_at_ns >= start_ns) & (bars.bar_at_ns < upper)
                          & np.isfinite(bars.close[:, column]) & np.isfinite(bars.open[:, column]))
    context = [session_context(instruments, int(stamp), timeframe.seconds) for stamp in bars.bar_at_ns[rows]]
    return EnvData(
        key, bars.bar_at_ns[rows], bars.open[rows, column], bars.high[rows, column], bars.low[rows, column],
        bars.close[rows, column], bars.volume[rows, column],
        np.nan_to_num(features[rows], nan=0.0), engine.spec.names,
        session_day=np.array([day for day, _ in context], dtype=np.int64),
        minutes_to_close=np.array([minutes[column] for _, minutes in context], dtype=np.float64),
    )
