"""Garbage collection at safe points: the cyclic collector runs where the caller says, never in the middle of work.

Why: CPython's automatic collector starts whenever allocations pass a threshold, wherever that happens. In the
executor that can stop a decision for milliseconds (the model, the feature state and the order book are alive);
in a long backtest it re-walks an ever larger heap of kept fills that reference counting frees anyway (a fifth
to a third of the run). Inside `collect_at_safe_points` the automatic collector is off and `safe_point()` (the
executor calls it after each bar's orders are out, the backtester after each bar) collects on a schedule: one
collection every `young_every` points, of the middle generation every `middle_every` of those and of everything
every `full_every`. Reference counting still frees whatever is not in a cycle at once; a cycle only lives until
the next collection.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class SafePointCollector:
    young_every: int = 1
    middle_every: int = 10
    full_every: int = 1_000
    points: int = 0
    collections: int = 0
    collected: int = 0
    seconds: float = 0.0

    def safe_point(self) -> None:
        self.points += 1
        if self.points % self.young_every:
            return
        self.collections += 1
        count = self.collections
        generation = 2 if count % self.full_every == 0 else 1 if count % self.middle_every == 0 else 0
        started = time.perf_counter()
        self.collected += gc.collect(generation)
        self.seconds += time.perf_counter() - started


@contextlib.contextmanager
def collect_at_safe_points(*, young_every: int = 1, middle_every: int = 10, full_every: int = 1_000,
                           freeze: bool = True) -> Iterator[SafePointCollector]:
    """Turn the automatic collector off until the block ends, then restore it. With `freeze`, what exists on
    entry (for the executor: what start-up built) is collected once and then never walked again in the block."""
    for name, value in (("young_every", young_every), ("middle_every", middle_every), ("full_every", full_every)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    was_enabled = gc.isenabled()
    if freeze:
        gc.collect()  # garbage from before the block goes now, not into the frozen set
        gc.freeze()
    gc.disable()
    collector = SafePointCollector(young_every, middle_every, full_every)
    try:
        yield collector
    finally:
        if freeze:
            gc.unfreeze()
        if was_enabled:
            gc.enable()
        log.debug("safe-point garbage collection: %d points, %d collections, %d objects freed, %.1f ms",
                  collector.points, collector.collections, collector.collected, collector.seconds * 1000)
