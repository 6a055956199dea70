"""Error counters: per learner and (category, subcategory), the number of
error points in each minute, hour, day and month, and all time.

The flow keys error points by learner, collects each learner's points
for a flush (dataflows/batching.py: a short deadline while the flow keeps
up, a wait for a pause while it catches up), and hands them to a sink that
records every point as a fact and rewrites each touched window with
its absolute count, recounted from the facts
(dataflows/writers/error_writer.py). An open window is served with its
count so far; later points rewrite it. Nothing waits for a window to close,
so a point that arrives days late counts in its own window as fast as a
current one.

A replay, a duplicate feed entry or a resume after a crash rewrites the same
counts rather than adding to them: the batch never is the count.

`as_of` on each row is the sweep position (`FeedItem.watermark`) its feed
shard had read to when the batch that last rewrote it was read, or the
acceptance time of the newest utterance counted in the row when that is
later: the row was counted no earlier than either. `late_events` counts the points
written (accepted by the API) more than `late_after_s` after their window's
end.

Run it (ops/dataflow does, through `python -m dataflows run error_counters`):

    python -m bytewax.run "dataflows.error_counters:get_flow()" -w 2 \\
        -r .local/recovery/error_counters -s 10 -b 0
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from cql.change_feed import FeedEntry
from cql.clock import DAY, floor_to, to_stored_time
from cql.error_counts import ErrorPointFact
from cql.learning import ERROR_FLOW
from dataflows.batching import batch_by_learner
from dataflows.connectors.feed_source import FeedItem, flow_source
from dataflows.connectors.sinks import LearnerSink, Stamped, learner_key_of
from dataflows.resources import flow_settings
from dataflows.writers.erasure import Erasure, erasing, erasure_of, error_partitions
from dataflows.writers.error_writer import ErrorCountWriter
from runtime.settings import Settings

FLOW = ERROR_FLOW

ErrorPoint = Stamped[ErrorPointFact]


def error_points(item: FeedItem) -> list[ErrorPoint | Stamped[Erasure]]:
    """One fact per error point of the utterance, numbered in the order the
    client sent them; an utterance without errors has none. An erase entry
    goes on as the erasure, to the learner's writer."""
    if (erasure := erasure_of(item)) is not None:
        return [erasure]
    e = item.entry
    written_at = to_stored_time(e.feed_time)
    day = floor_to(e.ts, DAY)
    return [
        Stamped(
            ErrorPointFact(
                e.tenant, e.user_id, day, e.ts, e.utterance_id, index, *pair, written_at
            ),
            item.watermark,
            item.ticket,
        )
        for index, pair in enumerate(e.errors)
    ]


def error_point_count(entry: FeedEntry) -> int:
    """How many items error_points makes of an entry (the feed's ledger)."""
    return 1 if entry.erased_at is not None else len(entry.errors)


def learner_key(point: Stamped[ErrorPointFact] | Stamped[Erasure]) -> str:
    return learner_key_of(point.row.tenant, point.row.user_id)


feed_source = flow_source(FLOW, weigh=error_point_count)


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
    # Stamped[ErrorPointFact], or Stamped[Erasure] of an erase entry
    keyed = op.key_on("key_by_learner", points, learner_key)
    # (learner_key, Stamped[ErrorPointFact])
    batches = batch_by_learner(keyed, settings)
    # (learner_key, [Stamped[ErrorPointFact]]): what came within a flush
    writer = erasing(ErrorCountWriter, error_partitions)
    op.output("write_error_counts", batches, sink or LearnerSink(settings, writer))
    return flow
