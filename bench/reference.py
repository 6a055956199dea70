"""The throughput reference of the counting flows: the change feed, read by
the same FeedSource, into a sink that writes one row per entry to Cassandra
with the writers' own bounded-concurrency helpers
(dataflows/connectors/sinks.py `upserts`, `write_all`). That is the least a
flow with a durable result does: read the feed, write each entry once. The
error-counter and learning flows do that and more (facts read back, windows
recounted, cache generations bumped), so their throughput over this one's
is what their own work costs; the target is at least 0.5.

Each entry becomes one LearningFact in learning_events_by_user_day (no table
of its own), under the tenant `reference:<tenant>`: the learning flow's
writer reads those partitions back, and finding its facts already written by
this flow would spare it their writes and flatter its figure.

Bench only (it writes rows no reader wants), so it lives here and not in
dataflows/; bench/flows.py replays it with dataflows.commands.replay like the
product's flows.

Delivery: at-least-once like the feed source; a repeated entry rewrites the
same row.
"""

from __future__ import annotations

from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition

from cql.clock import DAY, floor_to, to_stored_time
from cql.learning import LEARNING_EVENTS, LearningFact
from dataflows import passthrough
from dataflows.connectors.feed_source import FeedItem
from dataflows.connectors.ledger import pay
from dataflows.connectors.sinks import upserts, write_all
from dataflows.resources import acquire_db, flow_settings, release_db
from runtime.redis_client import connect
from runtime.settings import Settings

FLOW = "reference"
TENANT_PREFIX = "reference:"


def entry_row(item: FeedItem) -> LearningFact:
    """The one row an entry becomes: what the learning flow makes of it,
    under a tenant of the reference's own."""
    e = item.entry
    return LearningFact(
        TENANT_PREFIX + e.tenant, e.user_id, floor_to(e.ts, DAY), e.ts, e.utterance_id,
        e.words_learned, to_stored_time(e.feed_time),
    )  # fmt: skip


class RowPerEntrySink(DynamicSink[FeedItem]):
    """Writes each batch of entries as rows, on the worker that read them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Writing:
        return _Writing(self.settings)


class _Writing(StatelessSinkPartition[FeedItem]):
    def __init__(self, settings: Settings) -> None:
        self._cassandra = settings.cassandra
        db = acquire_db(settings.cassandra)
        self._session = db.session
        self._insert = db.prepare(LEARNING_EVENTS.insert(), idempotent=True)
        self._concurrency = settings.cassandra.max_in_flight
        self._redis = connect(settings.redis)

    def write_batch(self, items: list[FeedItem]) -> None:
        rows = [entry_row(item) for item in items]
        write_all(self._session, upserts(self._insert, LEARNING_EVENTS, rows), self._concurrency)
        pay(self._redis, (item.ticket for item in items))

    def close(self) -> None:
        self._redis.close()
        release_db(self._cassandra)


# The passthrough's reading of the feed, unchanged.
feed_source = passthrough.feed_source


def get_flow(
    source: Source[FeedItem] | None = None,
    sink: Sink[FeedItem] | None = None,
    settings: Settings | None = None,
) -> Dataflow:
    """The passthrough flow with a sink that writes one row per entry."""
    settings = flow_settings(settings)
    return passthrough.get_flow(source, sink or RowPerEntrySink(settings), settings)
