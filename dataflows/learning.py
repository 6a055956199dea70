"""Learning tables: per learner, the utterances and words practised in each
UTC quarter hour, from which the API rolls up days, weeks and months in any
time zone.

Same shape as the error counters (dataflows/error_counters.py): each
learner's utterances are collected for a flush (dataflows/batching.py)
and go to a sink that records one fact per utterance and rewrites each touched bucket
with absolute totals recounted from the facts
(dataflows/writers/learning_writer.py). A duplicate feed entry, a replay or
a resume after a crash therefore rewrites the same totals, and the current
quarter hour is served as it fills.

Run it (ops/dataflow does, through `python -m dataflows run learning`):

    python -m bytewax.run "dataflows.learning:get_flow()" -w 2 \\
        -r .local/recovery/learning -s 10 -b 0
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from cql.clock import DAY, floor_to, to_stored_time
from cql.learning import LEARNING_FLOW, LearningFact
from dataflows.batching import batch_by_learner
from dataflows.connectors.feed_source import FeedItem, flow_source
from dataflows.connectors.sinks import LearnerSink, Stamped, learner_key_of
from dataflows.resources import flow_settings
from dataflows.writers.erasure import Erasure, erasing, erasure_of, learning_partitions
from dataflows.writers.learning_writer import LearningWriter
from runtime.settings import Settings

FLOW = LEARNING_FLOW

LearningEvent = Stamped[LearningFact]


def learning_event(item: FeedItem) -> LearningEvent | Stamped[Erasure]:
    """Every utterance is an entry, whether or not it practised words. An
    erase entry goes on as the erasure, to the learner's writer."""
    if (erasure := erasure_of(item)) is not None:
        return erasure
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
    return Stamped(fact, item.watermark, item.ticket)


def learner_key(event: LearningEvent | Stamped[Erasure]) -> str:
    return learner_key_of(event.row.tenant, event.row.user_id)


feed_source = flow_source(FLOW)


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
    # Stamped[LearningFact], or Stamped[Erasure] of an erase entry
    keyed = op.key_on("key_by_learner", events, learner_key)
    # (learner_key, Stamped[LearningFact])
    batches = batch_by_learner(keyed, settings)
    # (learner_key, [Stamped[LearningFact]]): what came within a flush
    writer = erasing(LearningWriter, learning_partitions)
    op.output("write_learning_buckets", batches, sink or LearnerSink(settings, writer))
    return flow
