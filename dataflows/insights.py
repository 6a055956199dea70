"""Insights: every utterance in the change feed analysed by an
OpenAI-compatible model (or the offline analyzer) for sentiment, topics,
confidence and reasoning, with provenance, into the insight tables.

The flow routes each feed entry to a lane (a hash of its learner), so the
duplicates of an utterance (the feed may hold a retried request twice) meet
on one worker and are never analysed by two at once, and so do a learner's
erase entries and utterances (the worker keeps its learners' erasures
current, dataflows/writers/erasure.py); it collects each
lane's entries into batches (`insight_batch_size` entries, or what came
until `insight_batch_wait_s` passed without more), and the sink analyses a
worker's batches concurrently on that worker's own event loop, where its
LLM client bounds the calls in flight and takes every call's token from the
rate bucket all workers and processes share.

Per utterance (dataflows/insight_writer.py has the tables and their order):
an utterance whose record already holds a completed analysis by the
current prompt version is not analysed again, only its served rows and
status rewritten; any other is marked `processing`, analysed and recorded:
`completed`, or `failed` with its reason. Nothing is dropped: a failure is
a row in failed_insights_by_day, for `python -m dataflows redrive`.

Delivery: at-least-once, like the feed source. After a crash, Bytewax
resumes from the last snapshot and replays every entry after it, batched or
not; an utterance left `processing` by the crash comes round again and is
analysed again, one already recorded is finished without an LLM call.

Each worker analyses at most `llm.max_concurrency` utterances at once; the
rest of its batch waits for a turn, outside the LLM client's deadline. The
utterances in flight on every worker wait for the one shared rate, so keep
workers * max_concurrency / rate_per_s well under that deadline
(timeout_s * max_attempts), or utterances fail waiting for a token.

Run it (ops/dataflow does, through `python -m dataflows run insights`):

    python -m bytewax.recovery .local/recovery/insights 4    # once
    python -m bytewax.run "dataflows.insights:get_flow()" -w 2 \\
        -r .local/recovery/insights -s 10 -b 0
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from typing import TypeGuard

import bytewax.operators as op
import structlog
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition

from cql.change_feed import shard_of
from cql.insights import InsightRow
from cql.learning import INSIGHTS_FLOW
from dataflows.connectors.feed_source import FeedItem, flow_source
from dataflows.connectors.ledger import pay
from dataflows.resources import acquire_db, flow_settings, release_db
from dataflows.writers.insight_erasure import InsightErasure
from dataflows.writers.insight_writer import FAILED, Analyst, InsightWriter, Subject, open_analyst
from llm.analysis import PROMPT_VERSION
from runtime.redis_client import connect
from runtime.settings import Settings

log = structlog.get_logger(__name__)

FLOW = INSIGHTS_FLOW
# More lanes than workers, so Bytewax spreads them evenly over any worker
# count; a lane is only a route, so the number can change between runs.
LANES = 32

Batch = tuple[str, list[FeedItem]]


def lane_of(item: FeedItem) -> str:
    return str(shard_of(item.entry.tenant, item.entry.user_id, LANES))


def subjects(items: Iterable[FeedItem]) -> list[Subject]:
    """One subject per utterance, in feed order: a duplicate entry in the
    same batch is the same utterance."""
    unique: dict[tuple[str, str], Subject] = {}
    for item in items:
        unique.setdefault((item.entry.tenant, item.entry.utterance_id), Subject.of(item.entry))
    return list(unique.values())


def analysed_already(previous: InsightRow | None) -> TypeGuard[InsightRow]:
    return (
        previous is not None
        and previous.parse_status != FAILED
        and previous.prompt_version == PROMPT_VERSION
    )


async def process(analyst: Analyst, batch: list[Subject]) -> Counter[str]:
    """Analyse and record a batch concurrently; how many ended how."""
    previous = await analyst.writer.current_all([(s.tenant, s.utterance_id) for s in batch])
    rows = await asyncio.gather(
        *(
            analyst.restate(before) if analysed_already(before) else analyst.analyse(s, before)
            for s, before in zip(batch, previous, strict=True)
        )
    )
    skipped = sum(analysed_already(before) for before in previous)
    failed = sum(row.parse_status == FAILED for row in rows)
    return Counter(completed=len(rows) - skipped - failed, failed=failed, skipped=skipped)


class InsightSink(DynamicSink[Batch]):
    """Analyses and records each worker's batches. Holds configuration only;
    each worker's partition opens its connections and its event loop.

    At-least-once: a batch written again after a crash finds its finished
    utterances recorded and only rewrites what they imply."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _InsightPartition:
        return _InsightPartition(self.settings)


class _InsightPartition(StatelessSinkPartition[Batch]):
    def __init__(self, settings: Settings) -> None:
        self._cassandra = settings.cassandra
        db = acquire_db(settings.cassandra)
        writer = InsightWriter(db, settings)
        self._erasure = InsightErasure(db, settings)
        # One loop for the worker's life: the LLM client, its Redis client
        # and its limiters belong to the loop they were made on.
        self._loop = asyncio.new_event_loop()
        self._analyst = self._loop.run_until_complete(open_analyst(writer, settings))
        self._redis = connect(settings.redis)

    def write_batch(self, items: list[Batch]) -> None:
        entries = [item for _lane, lane_items in items for item in lane_items]
        batch = subjects(self._erasure.live(entries))
        counts = self._loop.run_until_complete(process(self._analyst, batch))
        pay(self._redis, (item.ticket for item in entries))
        log.info("insights.batch", entries=len(entries), **counts)

    def close(self) -> None:
        self._redis.close()
        self._loop.run_until_complete(self._analyst.aclose())
        self._loop.close()
        release_db(self._cassandra)


feed_source = flow_source(FLOW)


def get_flow(
    source: Source[FeedItem] | None = None,
    sink: Sink[Batch] | None = None,
    settings: Settings | None = None,
) -> Dataflow:
    settings = flow_settings(settings)
    flow = Dataflow(FLOW)
    items = op.input("read_feed", flow, source or feed_source(settings))
    # FeedItem
    lanes = op.key_on("key_by_lane", items, lane_of)
    # (lane, FeedItem)
    batches = op.collect(
        "batch_per_lane",
        lanes,
        timeout=timedelta(seconds=settings.dataflow.insight_batch_wait_s),
        max_size=settings.dataflow.insight_batch_size,
    )
    # (lane, [FeedItem])
    op.output("analyse_and_record", batches, sink or InsightSink(settings))
    return flow
