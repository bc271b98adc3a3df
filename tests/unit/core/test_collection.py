from __future__ import annotations

import gc
import weakref

import pytest

from tradeloom.collection import collect_at_safe_points


class _Node:
    partner: object = None


def _cycle() -> weakref.ref[_Node]:
    node = _Node()
    node.partner = node  # only the cyclic collector can free this
    return weakref.ref(node)


def test_the_automatic_collector_is_off_inside_and_restored_after() -> None:
    assert gc.isenabled()
    with collect_at_safe_points():
        assert not gc.isenabled()
        alive = _cycle()
        for _ in range(2_000):
            _cycle()  # allocations far past the automatic threshold: nothing collects by itself
        assert alive() is not None
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collect_at_safe_points():
        raise RuntimeError("a failing loop")
    assert gc.isenabled()


def test_a_safe_point_frees_the_cycles_of_the_bar_and_walks_older_generations_on_schedule() -> None:
    seen: list[int] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    with collect_at_safe_points(middle_every=2, full_every=4) as collector:
        alive = _cycle()
        gc.callbacks.append(watch)
        try:
            collector.safe_point()
            assert alive() is None
            for _ in range(3):
                collector.safe_point()
        finally:
            gc.callbacks.remove(watch)
    assert seen == [0, 1, 0, 2]
    assert collector.points == 4 and collector.collected >= 1


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with collect_at_safe_points():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_young_every_spaces_the_collections_out() -> None:
    seen: list[int] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    with collect_at_safe_points(young_every=3, middle_every=1) as collector:
        alive = _cycle()
        gc.callbacks.append(watch)
        try:
            collector.safe_point()
            collector.safe_point()
            assert alive() is not None and seen == []  # not yet: one collection every three points
            collector.safe_point()
            assert alive() is None and seen == [1]
        finally:
            gc.callbacks.remove(watch)


@pytest.mark.parametrize("schedule", [{"young_every": 0}, {"middle_every": 0}, {"full_every": -1}])
def test_bad_schedules_are_refused(schedule: dict[str, int]) -> None:
    name = next(iter(schedule))
    with pytest.raises(ValueError, match=f"{name} must be >= 1"), collect_at_safe_points(**schedule):
        pass
    assert gc.isenabled()
