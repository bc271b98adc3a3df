"""TWAP / VWAP slicing of a parent quantity into child orders over bars, under a participation cap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tradeloom.engine.config import ExecutionConfig


@dataclass
class WorkingParent:
    """A parent order being worked slice by slice (held in the engine state)."""

    parent_id: str
    index: int  # instrument index
    side: int  # +1 / -1
    remaining: int
    slices_left: int
    purpose: str
    # Client order ids of the children sent so far: an exit cancels those still working (a child the
    # participation cap left unfilled would otherwise keep trading after the position is gone).
    children: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.children = tuple(self.children)  # a list after a JSON round trip; a tuple is never shared mutably


def next_slice(
    config: ExecutionConfig,
    parent: WorkingParent,
    *,
    lot_size: int,
    bar_volume: float,
    expected_volume_share: float | None = None,
) -> int:
    """Quantity of the next child order (whole lots, possibly 0 when the cap leaves no room).

    TWAP spreads the remainder evenly over the slices left; VWAP weights this bar by its expected share of
    the remaining volume (`expected_volume_share` in (0, 1]; without one it falls back to TWAP). The last
    slice takes the whole remainder unless the participation cap stops it, in which case the parent keeps
    working on later bars.
    """
    if parent.remaining <= 0:
        return 0
    if parent.slices_left <= 1:
        quantity = float(parent.remaining)
    elif config.algo == "vwap" and expected_volume_share is not None and expected_volume_share > 0:
        quantity = parent.remaining * min(expected_volume_share, 1.0)
    else:
        quantity = parent.remaining / parent.slices_left
    if config.participation_cap is not None and np.isfinite(bar_volume):
        quantity = min(quantity, config.participation_cap * max(bar_volume, 0.0))
    lots = int(np.ceil(quantity / lot_size - 1e-9)) if parent.slices_left > 1 else int(quantity // lot_size)
    if config.participation_cap is not None and np.isfinite(bar_volume):
        lots = min(lots, int(config.participation_cap * max(bar_volume, 0.0) // lot_size))
    return min(lots * lot_size, parent.remaining)


def slice_schedule(
    config: ExecutionConfig, quantity: int, *, lot_size: int, volumes: list[float],
    volume_profile: list[float] | None = None,
) -> list[int]:
    """The child quantities a parent of `quantity` gets over bars with the given volumes (planning aid)."""
    parent = WorkingParent("plan", 0, 1, quantity, config.slices, "entry")
    children: list[int] = []
    for bar, volume in enumerate(volumes):
        share = None
        if volume_profile is not None:
            ahead = sum(volume_profile[bar:bar + parent.slices_left])
            share = volume_profile[bar] / ahead if ahead > 0 else None
        child = next_slice(config, parent, lot_size=lot_size, bar_volume=volume, expected_volume_share=share)
        children.append(child)
        parent.remaining -= child
        parent.slices_left = max(parent.slices_left - 1, 1)
        if parent.remaining == 0:
            break
    return children
