"""The benchmark's reference: the same feed source into a sink that only
counts, so the difference from a real flow's throughput is that flow's own
cost (windows and Cassandra writes), not the cost of reading the feed.

    python -m dataflows replay passthrough --workers 2
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from prometheus_client import Counter

from dataflows.connectors.feed_source import FeedItem, flow_source
from dataflows.connectors.ledger import pay
from dataflows.resources import flow_settings
from runtime.redis_client import connect
from runtime.settings import Settings

FLOW = "passthrough"

ITEMS_SEEN = Counter("utterstream_passthrough_items", "Feed items the passthrough sink counted")


class CountingSink(DynamicSink[FeedItem]):
    """Counts items into ITEMS_SEEN and drops them (paying them back: all
    there is to write of them is done)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Counting:
        return _Counting(self.settings)


class _Counting(StatelessSinkPartition[FeedItem]):
    def __init__(self, settings: Settings) -> None:
        self._redis = connect(settings.redis)

    def write_batch(self, items: list[FeedItem]) -> None:
        ITEMS_SEEN.inc(len(items))
        pay(self._redis, (item.ticket for item in items))

    def close(self) -> None:
        self._redis.close()


feed_source = flow_source(FLOW)


def get_flow(
    source: Source[FeedItem] | None = None,
    sink: Sink[FeedItem] | None = None,
    settings: Settings | None = None,
) -> Dataflow:
    settings = flow_settings(settings)
    flow = Dataflow(FLOW)
    items = op.input("read_feed", flow, source or feed_source(settings))
    # FeedItem
    op.output("count_items", items, sink or CountingSink(settings))
    return flow
