"""runtime/pauses.py: collections are timed without touching a metric's
lock inside the collector, and start-up's objects are frozen."""

from __future__ import annotations

import gc

from runtime import pauses


def _count(generation: str) -> float:
    return next(
        s.value
        for metric in pauses.GC_PAUSE.collect()
        for s in metric.samples
        if s.name.endswith("_count") and s.labels["generation"] == generation
    )


def test_a_collection_is_noted_then_reported() -> None:
    pauses.measure()
    pauses.measure()  # once is enough: no second callback
    assert gc.callbacks.count(pauses._timed) == 1
    pauses.report()
    pauses.GC_PAUSE.labels("2")  # the series exists from here, at 0
    before = _count("2")
    gc.collect()
    assert _count("2") == before  # only noted, inside the collector
    pauses.report()
    assert _count("2") == before + 1


def test_settle_freezes_what_exists() -> None:
    kept = [[] for _ in range(1000)]  # lists: tracked by the collector
    try:
        pauses.settle()
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()
