"""Row-level checks applied to every ingested bar before it may reach a raw table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# Sentinel for a timestamp that could not be parsed (numpy's NaT as int64).
NAT = np.iinfo(np.int64).min


@dataclass(frozen=True)
class BarColumns:
    """A batch of bars as parallel arrays; `bar_at` is UTC epoch nanoseconds (NAT when unparseable)."""

    instrument_key: npt.NDArray[np.object_]
    bar_at: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return int(self.bar_at.shape[0])

    def take_order(self, index: npt.NDArray[np.intp]) -> BarColumns:
        return BarColumns(
            self.instrument_key[index], self.bar_at[index], self.open[index], self.high[index],
            self.low[index], self.close[index], self.volume[index],
        )

    def take(self, mask: npt.NDArray[np.bool_]) -> BarColumns:
        return BarColumns(
            self.instrument_key[mask], self.bar_at[mask], self.open[mask], self.high[mask],
            self.low[mask], self.close[mask], self.volume[mask],
        )


# Checked in this order; a row gets the first reason that applies.
REASONS = (
    "unparseable_timestamp",
    "future_timestamp",
    "non_finite_price",
    "non_positive_price",
    "high_below_open_or_close",
    "low_above_open_or_close",
    "invalid_volume",
    "duplicate_key_in_batch",
)


def key_codes(keys: npt.NDArray[np.object_]) -> tuple[IntArray, list[str]]:
    """A small integer per row for its instrument key, and the distinct keys (sorted) the codes index.

    Rows usually arrive in runs of one instrument, so only the first key of each run is looked at in
    Python; comparing neighbours is one vectorised pass.
    """
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64), []
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    heads = [str(key) for key in keys[starts]]
    distinct = sorted(set(heads))
    code_of = {key: code for code, key in enumerate(distinct)}
    run_codes = np.fromiter((code_of[key] for key in heads), dtype=np.int64, count=len(heads))
    return np.repeat(run_codes, np.diff(np.append(starts, len(keys)))), distinct


def row_problems(bars: BarColumns, now_ns: int, future_tolerance_s: int = 60) -> npt.NDArray[np.object_]:
    """Per row, the first failed check's reason, or "" for a clean row. Pure and vectorised."""
    # Reasons as small ints (0 = clean) while checking: comparing a million Python strings per check
    # cost more than all the checks together.
    codes = np.zeros(len(bars), dtype=np.int8)

    def mark(mask: npt.NDArray[np.bool_] | np.bool_, reason: str) -> None:
        codes[(codes == 0) & mask] = REASONS.index(reason) + 1

    prices = np.vstack([bars.open, bars.high, bars.low, bars.close])
    mark(bars.bar_at == NAT, "unparseable_timestamp")
    mark(bars.bar_at > now_ns + future_tolerance_s * 1_000_000_000, "future_timestamp")
    finite = np.isfinite(prices).all(axis=0)
    mark(~finite, "non_finite_price")
    with np.errstate(invalid="ignore"):
        mark((prices <= 0).any(axis=0), "non_positive_price")
        mark(bars.high < np.maximum(bars.open, bars.close), "high_below_open_or_close")
        mark(bars.low > np.minimum(bars.open, bars.close), "low_above_open_or_close")
        mark(~np.isfinite(bars.volume) | (bars.volume < 0), "invalid_volume")
    # Duplicates among the rows that passed every other check: the first of those is kept, later ones are
    # quarantined (a bad first copy followed by a corrected one keeps the corrected one).
    instruments, _ = key_codes(bars.instrument_key)
    clean = np.flatnonzero(codes == 0)
    order = clean[np.lexsort((clean, bars.bar_at[clean], instruments[clean]))]
    instruments_sorted = instruments[order]
    times_sorted = bars.bar_at[order]
    repeat = np.zeros(order.size, dtype=bool)
    if order.size > 1:
        repeat[1:] = (instruments_sorted[1:] == instruments_sorted[:-1]) & (times_sorted[1:] == times_sorted[:-1])
    duplicate = np.zeros(len(bars), dtype=bool)
    duplicate[order] = repeat
    mark(duplicate, "duplicate_key_in_batch")
    labels: npt.NDArray[np.object_] = np.array(("", *REASONS), dtype=object)
    return labels[codes]
