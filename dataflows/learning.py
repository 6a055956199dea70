"""Learning tables: per learner, the utterances and words practised in each
UTC quarter hour, from which the API rolls up days, weeks and months in any
time zone.

Same shape as the error counters (dataflows/error_counters.py): each
learner's utterances are batched per event-time quarter hour by a Bytewax
window, late ones come out of its late stream at once, and both go to a
sink that records one fact per utterance and rewrites each touched bucket
with absolute totals recounted from the facts
(dataflows/learning_writer.py). A straggler that reopens a closed window,
a duplicate feed entry, a replay or a resume after a crash therefore
rewrites the same totals. A bucket's `as_of` is the feed watermark less a
quarter hour, the window wait and some slack (how long an utterance may wait
in its window), so every utterance accepted before it is counted.

Run it (after `mkdir -p .local/recovery/learning && python -m bytewax.recovery
.local/recovery/learning 4` once; ops/dataflow does both):

    python -m bytewax.run "dataflows.learning:get_flow()" -w 2 \\
        -r .local/recovery/learning -s 10 -b 0
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from cql.clock import DAY, QUARTER_HOUR, floor_to, to_stored_time
from cql.learning import LearningFact
from dataflows.connectors.feed_source import FeedItem, FeedSource
from dataflows.connectors.sinks import LearnerSink, Stamped, learner_key_of
from dataflows.resources import flow_settings
from dataflows.windows import batch_by_window, window_hold
from dataflows.writers.learning_writer import LearningWriter
from runtime.settings import Settings

FLOW = "learning"

LearningEvent = Stamped[LearningFact]


def learning_event(item: FeedItem) -> LearningEvent:
    """Every utterance is an entry, whether or not it practised words."""
    entry = item.entry
    fact = LearningFact(
        entry.tenant,
        entry.user_id,
        floor_to(entry.ts, DAY),
        entry.ts,
        entry.utterance_id,
        entry.words_learned,
        to_stored_time(entry.feed_time),
    )
    return Stamped(fact, item.watermark)


def learner_key(event: LearningEvent) -> str:
    return learner_key_of(event.row.tenant, event.row.user_id)


def event_time(event: LearningEvent) -> datetime:
    return event.row.ts.replace(tzinfo=UTC)


def feed_source(settings: Settings, name: str = FLOW, **options: Any) -> FeedSource:
    """The change feed as this flow reads it; `name` is what its progress is
    recorded under, `options` go to FeedSource (start, stop_at, ...)."""
    hold = window_hold(QUARTER_HOUR, settings.dataflow)
    return FeedSource(name, settings, hold=hold, **options)


def get_flow(
    source: Source[FeedItem] | None = None,
    sink: Sink[tuple[str, list[LearningEvent]]] | None = None,
    settings: Settings | None = None,
) -> Dataflow:
    settings = flow_settings(settings)
    flow = Dataflow(FLOW)
    items = op.input("read_feed", flow, source or feed_source(settings))
    # FeedItem
    events = op.map("to_learning_event", items, learning_event)
    # Stamped[LearningFact]
    keyed = op.key_on("key_by_learner", events, learner_key)
    # (learner_key, Stamped[LearningFact])
    batches = batch_by_window(
        "batch_by_quarter_hour", keyed, QUARTER_HOUR, settings.dataflow.window_wait_s, event_time
    )
    # (learner_key, [Stamped[LearningFact]]): a closed window's, or one late item
    op.output("write_learning_buckets", batches, sink or LearnerSink(settings, LearningWriter))
    return flow
