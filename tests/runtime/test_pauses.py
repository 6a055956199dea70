"""runtime/pauses.py: collections are timed without touching a metric's
lock inside the collector, and start-up's objects are frozen."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time

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


def _lag() -> tuple[float, float]:
    samples = {s.name: s.value for m in pauses.LOOP_LAG.collect() for s in m.samples}
    return samples["utterstream_event_loop_lag_seconds_count"], samples[
        "utterstream_event_loop_lag_seconds_sum"
    ]


async def test_a_loop_held_up_is_seen_late() -> None:
    watching = asyncio.create_task(pauses.watch())
    try:
        await asyncio.sleep(0.01)  # the watch is asleep in its timer now
        count, total = _lag()
        time.sleep(0.6)  # noqa: ASYNC251 - holding the loop is the point: its timer fires late
        await asyncio.sleep(pauses.WATCH_S)
    finally:
        watching.cancel()
    later_count, later_total = _lag()
    assert later_count > count
    assert later_total - total >= 0.3


def test_a_flow_process_runs_with_spaced_collections() -> None:
    """What `python -m bytewax.run "dataflows.<flow>:get_flow()"` sets up,
    in a process of its own: the collector is process-wide."""
    probe = (
        "import gc; from dataflows.resources import flow_settings; flow_settings(None); "
        "print(gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.split("\n")[0] == f"{pauses.FLOW_THRESHOLDS} True"
    assert gc.get_threshold() != pauses.FLOW_THRESHOLDS  # not this test process's
