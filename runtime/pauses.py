"""Python's garbage collector in a long-running process: every collection
timed, and the objects that live as long as the process kept out of it.

A full (generation 2) collection walks every tracked object. In an API
worker most of them are made at start-up and never freed (the driver's
cluster metadata and prepared statements, Litestar's routes and models,
the imported modules), and each full collection walks them all again
while a request waits. `settle()`, once start-up is over, moves them to
the permanent generation (`gc.freeze`), which no collection walks.

A dataflow process allocates differently: each batch makes tens of
thousands of short-lived objects (bound statements, the driver's futures,
rows), and with the default thresholds (700, 10, 10) enough of them
survive a young collection to set off full collections, which then walk
every held partition too. A process that wrote a 30,000-entry feed and
replayed it twice through the error-counter flow spent 22 s of its CPU
in collections, 15 s in 43 full ones. `spaced()` sets the thresholds a
dataflow process runs with (`FLOW_THRESHOLDS`): a batch's objects are
mostly freed by reference counting before a young collection sees them,
and the same process (with one more replay) spent 9 s, with no full
collection (the README has the flows' throughput with it).

`utterstream_gc_pause_seconds` shows what collections cost, by
generation. The collector's callback only notes each pause: observing a
metric takes prometheus_client's lock, which the collection may have
interrupted in this very thread, so `watch()` moves the notes to the
metric from ordinary code. It also measures how late the event loop runs
its timer (`utterstream_event_loop_lag_seconds`): what every request of
the process waited on top of its own work, whatever held the loop (a
collection, a large reply parsed, plain overload).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from typing import Any, Final

from prometheus_client import Histogram

GC_PAUSE: Final = Histogram(
    "utterstream_gc_pause_seconds",
    "Python garbage collections, by generation: how long each held the process",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
LOOP_LAG: Final = Histogram(
    "utterstream_event_loop_lag_seconds",
    "How late the event loop ran a timer: the wait every request had on top of its own work",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
WATCH_S = 0.25
# Young collections every 10,000 net allocations (not 700), the middle
# generation every 10 of them, a full one every 100 middle ones (and then
# only when a quarter of the old objects are new, CPython's own rule).
FLOW_THRESHOLDS: Final = (10_000, 10, 100)
# (generation, seconds); bounded, so a process nobody reports for keeps
# only the latest pauses.
_noted: deque[tuple[int, float]] = deque(maxlen=4096)
_started = [0.0]


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _noted.append((info["generation"], time.perf_counter() - _started[0]))


def measure() -> None:
    """Note every collection of this process from now on."""
    if _timed not in gc.callbacks:
        gc.callbacks.append(_timed)


def report() -> None:
    """Move the pauses noted so far to `utterstream_gc_pause_seconds`."""
    while _noted:
        generation, seconds = _noted.popleft()
        GC_PAUSE.labels(str(generation)).observe(seconds)


async def watch() -> None:
    """Report the pauses noted and the loop's lateness every WATCH_S, for ever."""
    while True:
        asleep = time.monotonic()
        await asyncio.sleep(WATCH_S)
        LOOP_LAG.observe(max(0.0, time.monotonic() - asleep - WATCH_S))
        report()


def settle() -> None:
    """Collect what start-up left behind, then freeze the rest: later full
    collections walk only what was made since."""
    gc.collect()
    gc.freeze()


def spaced() -> None:
    """A dataflow process's collector: start-up frozen (`settle`), and
    collections spaced for batches (`FLOW_THRESHOLDS`)."""
    settle()
    gc.set_threshold(*FLOW_THRESHOLDS)
