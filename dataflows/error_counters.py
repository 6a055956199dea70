"""Error counters: per learner and (category, subcategory), the number of
error points in each minute, hour, day and month, and all time.

The flow keys error points by learner and batches each learner's points per
event-time minute with a Bytewax window; points that come after their
window closed (a client that was offline for hours) come out of the window's
late stream at once. Both streams go to the same sink, which records every
point as a fact and rewrites each touched window with its absolute count,
recounted from the facts (dataflows/error_writer.py). The window only
batches; it is never the count.

That makes Bytewax's windowing trap harmless: a learner's window state is
dropped once its windows close, so a straggler for that learner later
opens a fresh window holding just the straggler, which closes with a
partial batch. Written as a count, that would overwrite the full minute;
here it only triggers a recount of the facts, which include everything.
Likewise a replay, a duplicate feed entry or a resume after a crash rewrites
the same counts rather than adding to them.

`as_of` on each row is the feed watermark of the batch that last rewrote
it: the read position less how long this flow may hold a point (a minute,
the window wait and some slack; see dataflows/feed_source.py), so every
utterance accepted before it is counted. `late_events` counts the points
written (accepted by the API) more than `late_after_s` after their window's
end.

Run it (after creating the recovery partitions once, with
`mkdir -p .local/recovery/error_counters && python -m bytewax.recovery
.local/recovery/error_counters 4`; ops/dataflow does both):

    python -m bytewax.run "dataflows.error_counters:get_flow()" -w 2 \\
        -r .local/recovery/error_counters -s 10 -b 0
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from cql.clock import DAY, MINUTE, floor_to, to_stored_time
from cql.error_counts import ErrorPointFact
from dataflows.connectors.feed_source import FeedItem, FeedSource
from dataflows.connectors.sinks import LearnerSink, Stamped, learner_key_of
from dataflows.resources import flow_settings
from dataflows.windows import batch_by_window, window_hold
from dataflows.writers.error_writer import ErrorCountWriter
from runtime.settings import Settings

FLOW = "error_counters"

ErrorPoint = Stamped[ErrorPointFact]


def error_points(item: FeedItem) -> list[ErrorPoint]:
    """One fact per error point of the utterance, numbered in the order the
    client sent them; an utterance without errors has none."""
    e = item.entry
    written_at = to_stored_time(e.feed_time)
    day = floor_to(e.ts, DAY)
    return [
        Stamped(
            ErrorPointFact(
                e.tenant, e.user_id, day, e.ts, e.utterance_id, index, *pair, written_at
            ),
            item.watermark,
        )
        for index, pair in enumerate(e.errors)
    ]


def learner_key(point: Stamped[ErrorPointFact]) -> str:
    return learner_key_of(point.row.tenant, point.row.user_id)


def event_time(point: Stamped[ErrorPointFact]) -> datetime:
    return point.row.ts.replace(tzinfo=UTC)


def feed_source(settings: Settings, name: str = FLOW, **options: Any) -> FeedSource:
    """The change feed as this flow reads it; `name` is what its progress is
    recorded under, `options` go to FeedSource (start, stop_at, ...)."""
    hold = window_hold(MINUTE, settings.dataflow)
    return FeedSource(name, settings, hold=hold, **options)


def get_flow(
    source: Source[FeedItem] | None = None,
    sink: Sink[tuple[str, list[ErrorPoint]]] | None = None,
    settings: Settings | None = None,
) -> Dataflow:
    settings = flow_settings(settings)
    flow = Dataflow(FLOW)
    items = op.input("read_feed", flow, source or feed_source(settings))
    # FeedItem
    points = op.flat_map("explode_error_points", items, error_points)
    # Stamped[ErrorPointFact]
    keyed = op.key_on("key_by_learner", points, learner_key)
    # (learner_key, Stamped[ErrorPointFact])
    batches = batch_by_window(
        "batch_by_minute", keyed, MINUTE, settings.dataflow.window_wait_s, event_time
    )
    # (learner_key, [Stamped[ErrorPointFact]]): a closed window's, or one late item
    op.output("write_error_counts", batches, sink or LearnerSink(settings, ErrorCountWriter))
    return flow
