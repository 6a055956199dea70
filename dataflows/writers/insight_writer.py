"""From one utterance to its stored insight: the one path the insights flow
and redrive share, and every table it writes (cql/schema/007_insights.cql).

`Analyst.analyse(subject, previous)`:

1. marks the utterance `processing` when a model will be called (the
   offline analyzer answers at once: a state no reader could see would
   cost a write and a live event per utterance);
2. has the LLM client analyse its text (a failure is a result, never an
   exception), at most `llm.max_concurrency` utterances at once per
   Analyst, so the client's deadline runs from when an utterance's turn
   comes rather than from when its batch arrived;
3. records the result with `InsightWriter.record_all`, together with the
   other utterances analysed meanwhile (`Rounds`: one round of a batch
   costs a few requests and one Redis pipeline, where an utterance apiece
   cost three requests and a pipeline each):
   a. insights_by_utterance, the record: one row per analysed utterance,
      failures included;
   b. a completed insight goes to insights_by_hour and insights_by_user_month;
      a failed one to failed_insights_by_day, and the served rows of a
      previous completed answer are deleted. Either way a previous
      failure's row leaves failed_insights_by_day, so that table holds each
      utterance whose current insight is a failure, once;
   c. the utterance's status, `completed` or `failed` with the reason, and
      beside it a copy of the record (utterances_by_id.insight), so that
      GET /v1/utterances/{id} reads one row.

Every write is an upsert or a delete of values fixed by the insight, so
writing one again changes nothing. The record is written first because a
rerun decides from it: a completed record is finished by `restate` (b and
c again, no LLM call), a failed or missing one is analysed again. A crash
at any point therefore leaves nothing a rerun cannot finish. b and c go
together, as unlogged batches of rows with the same replicas (`batched`;
one request costs Cassandra and the driver about half what a request per
row does): the utterance's live event and the flow's `as_of` follow both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import msgspec
import redis.asyncio
import structlog
from cassandra.query import PreparedStatement, Statement
from prometheus_client import Counter, Histogram

from cql.aio import execute
from cql.binding import bind
from cql.change_feed import FeedEntry, shard_of
from cql.clock import DAY, floor_to, utc_now
from cql.insights import (
    FAILED_INSIGHTS,
    INSIGHTS,
    INSIGHTS_BY_HOUR,
    INSIGHTS_BY_USER,
    FailedInsightRow,
    InsightByHourRow,
    InsightByUserRow,
    InsightRow,
    hour_of,
    insight_json,
    month_of,
)
from cql.session import Db
from cql.table import Table
from cql.utterances import UTTERANCES, UtteranceRow
from dataflows.connectors.sinks import batched, tenant_chunks
from dataflows.writers.rounds import Rounds
from live.bus import AsyncPublisher
from live.events import insight_events, utterance_event
from llm.client import InsightResult, LlmClient
from runtime.redis_client import connect_async
from runtime.settings import Settings

log = structlog.get_logger(__name__)

# The LLM client counts calls, retries and failures by reason; these count
# what happened to utterances.
INSIGHTS_DONE: Final = Counter(
    "utterstream_insights",
    "Utterances analysed (completed, failed) or found analysed already (skipped)",
    ["outcome"],
)
ANALYSIS_SECONDS: Final = Histogram(
    "utterstream_insight_analysis_seconds",
    "Time to analyse one utterance: rate-limit waits, retries and backoff included",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

FAILED: Final = "failed"


class Subject(msgspec.Struct, frozen=True):
    """What an analysis needs to know about an utterance."""

    tenant: str
    utterance_id: str
    user_id: str
    ts: datetime
    text: str

    @classmethod
    def of(cls, utterance: FeedEntry | UtteranceRow) -> Subject:
        u = utterance
        return cls(u.tenant, u.utterance_id, u.user_id, u.ts, u.text)


def insight_row(subject: Subject, result: InsightResult, analyzed_at: datetime) -> InsightRow:
    a = result.analysis
    return InsightRow(
        subject.tenant,
        subject.utterance_id,
        subject.user_id,
        subject.ts,
        a.sentiment if a else None,
        list(a.topics) if a else None,
        a.confidence if a else None,
        a.reasoning if a else None,
        result.model,
        result.prompt_version,
        result.parse_status,
        result.attempts,
        round(result.latency_ms),
        None if a else result.reason or "analysis failed without a reason",
        analyzed_at,
    )


def hour_row(row: InsightRow, shards: int) -> InsightByHourRow:
    # The hour's shard comes from the utterance alone, so a rewrite lands on
    # the same row.
    return InsightByHourRow(
        row.tenant, hour_of(row.ts), shard_of(row.tenant, row.utterance_id, shards),
        row.ts, row.utterance_id, row.user_id, *_served(row),
    )  # fmt: skip


def user_row(row: InsightRow) -> InsightByUserRow:
    return InsightByUserRow(
        row.tenant, row.user_id, month_of(row.ts), row.ts, row.utterance_id, *_served(row)
    )


def failure_row(row: InsightRow) -> FailedInsightRow:
    assert row.failure_reason is not None
    day = floor_to(row.analyzed_at, DAY)
    return FailedInsightRow(day, row.analyzed_at, row.tenant, row.utterance_id, row.failure_reason)


def _served(row: InsightRow) -> tuple[Any, ...]:
    assert row.sentiment is not None and row.confidence is not None
    return (
        row.sentiment, set(row.topics or ()), row.confidence, row.reasoning or "",
        row.model, row.prompt_version, row.parse_status,
    )  # fmt: skip


def _delete(table: Table[Any]) -> str:
    return f"DELETE FROM {table.name} WHERE {table.key_where(table.primary_key)}"


def _key(table: Table[Any], row: Any) -> tuple[Any, ...]:
    return tuple(getattr(row, column) for column in table.primary_key)


class InsightWriter:
    """The Cassandra side: statements prepared once, each call awaited on
    the caller's event loop, at most `max_in_flight` statements at once."""

    def __init__(self, db: Db, settings: Settings) -> None:
        self._session = db.session
        self._shards = settings.dataflow.insight_shards
        self._slots = asyncio.Semaphore(settings.cassandra.max_in_flight)
        p = db.prepare
        self._insights = p(INSIGHTS.select("tenant = ? AND utterance_id IN ?"), idempotent=True)
        self._utterance = p(UTTERANCES.select(), idempotent=True)
        self._insert_insight = p(INSIGHTS.insert(), idempotent=True)
        self._insert_hour = p(INSIGHTS_BY_HOUR.insert(), idempotent=True)
        self._insert_user = p(INSIGHTS_BY_USER.insert(), idempotent=True)
        self._insert_failure = p(FAILED_INSIGHTS.insert(), idempotent=True)
        self._delete_hour = p(_delete(INSIGHTS_BY_HOUR), idempotent=True)
        self._delete_user = p(_delete(INSIGHTS_BY_USER), idempotent=True)
        self._delete_failure = p(_delete(FAILED_INSIGHTS), idempotent=True)
        self._set_status = p(
            UTTERANCES.update(["status", "status_reason", "status_at"]), idempotent=True
        )
        self._set_outcome = p(
            UTTERANCES.update(["status", "status_reason", "status_at", "insight"]),
            idempotent=True,
        )
        self._live = AsyncPublisher(settings)

    async def current(self, tenant: str, utterance_id: str) -> InsightRow | None:
        return (await self.current_all([(tenant, utterance_id)]))[0]

    async def current_all(self, keys: Sequence[tuple[str, str]]) -> list[InsightRow | None]:
        """The record of each (tenant, utterance_id), if any: several
        utterances of a tenant per read."""
        reads = tenant_chunks(keys)
        found = await asyncio.gather(*(self._run(self._insights, read) for read in reads))
        rows = {_key(INSIGHTS, row): row for rows in found for row in map(INSIGHTS.from_row, rows)}
        return [rows.get(key) for key in keys]

    async def utterance(self, tenant: str, utterance_id: str) -> UtteranceRow | None:
        rows = await self._run(self._utterance, (tenant, utterance_id))
        return UTTERANCES.from_row(rows[0]) if rows else None

    async def mark_processing(self, subject: Subject) -> None:
        params = ("processing", None, utc_now(), subject.tenant, subject.utterance_id)
        await self._run(self._set_status, params)
        processing = utterance_event(
            subject.tenant, subject.utterance_id, subject.user_id, "processing"
        )
        await self._live.publish([processing])

    async def record(self, row: InsightRow, previous: InsightRow | None) -> None:
        """Write an analysis's result (see the module docstring for the order)."""
        await self.record_all([(row, previous)])

    async def record_all(self, results: Sequence[tuple[InsightRow, InsightRow | None]]) -> None:
        """Write several analyses' results (each with its previous record) in
        one round: every record first, then what each one implies, then
        their live events."""
        await self._write_all([(self._insert_insight, INSIGHTS.values(row)) for row, _ in results])
        await self._write_all(
            [w for row, previous in results for w in self._implied(row, previous)]
        )
        await self._live.publish([event for row, _ in results for event in insight_events(row)])

    async def restate_all(self, rows: Sequence[InsightRow]) -> None:
        """Rewrite what completed records imply: their served rows and the
        utterances' status (which a client's retried request may have put
        back to `pending`)."""
        await self._write_all(
            [w for row in rows for w in (*self._served_writes(row), self._final_status(row))]
        )

    async def forget_failure(self, failure: FailedInsightRow) -> None:
        await self._run(self._delete_failure, _key(FAILED_INSIGHTS, failure))

    def _implied(
        self, row: InsightRow, previous: InsightRow | None
    ) -> list[tuple[PreparedStatement, tuple[Any, ...]]]:
        """What a new record implies: its served rows or its failure row, the
        previous answer's rows gone, and the utterance's final status."""
        if row.parse_status != FAILED:
            writes = self._served_writes(row)
        else:
            writes = [(self._insert_failure, FAILED_INSIGHTS.values(failure_row(row)))]
            if previous is not None and previous.parse_status != FAILED:
                writes += [
                    (self._delete_hour, _key(INSIGHTS_BY_HOUR, hour_row(previous, self._shards))),
                    (self._delete_user, _key(INSIGHTS_BY_USER, user_row(previous))),
                ]
        if previous is not None and previous.parse_status == FAILED:
            writes.append((self._delete_failure, _key(FAILED_INSIGHTS, failure_row(previous))))
        return [*writes, self._final_status(row)]

    def _served_writes(self, row: InsightRow) -> list[tuple[PreparedStatement, tuple[Any, ...]]]:
        return [
            (self._insert_hour, INSIGHTS_BY_HOUR.values(hour_row(row, self._shards))),
            (self._insert_user, INSIGHTS_BY_USER.values(user_row(row))),
        ]

    def _final_status(self, row: InsightRow) -> tuple[PreparedStatement, tuple[Any, ...]]:
        status = FAILED if row.parse_status == FAILED else "completed"
        params = (status, row.failure_reason, utc_now(), insight_json(row))
        return self._set_outcome, (*params, row.tenant, row.utterance_id)

    async def _write_all(self, writes: list[tuple[PreparedStatement, tuple[Any, ...]]]) -> None:
        requests = batched(self._session, (bind(s, p) for s, p in writes))
        await asyncio.gather(*(self._run(request, None) for request, _none in requests))

    async def _run(self, statement: Statement, params: tuple[Any, ...] | None) -> list[Any]:
        async with self._slots:
            result = await execute(self._session, statement, params)
        return result.current_rows


class Analyst:
    """An LLM client and a writer on one event loop; build it with
    `open_analyst` inside the loop that will use it."""

    def __init__(
        self, writer: InsightWriter, llm: LlmClient, redis: redis.asyncio.Redis, concurrency: int
    ) -> None:
        self.writer = writer
        self._llm = llm
        self._redis = redis
        self._turns = asyncio.Semaphore(concurrency)
        # The utterances analysed meanwhile are recorded in one round.
        self._records = Rounds(writer.record_all)
        self._restated = Rounds(writer.restate_all)

    async def analyse(self, subject: Subject, previous: InsightRow | None) -> InsightRow:
        # `processing` once its model call may start, not while it waits for
        # a turn: a batch of hundreds then publishes at the pace of its
        # calls, where marking them all at once took every Redis connection
        # of the process for seconds and their live events were lost.
        async with self._turns:
            if self._llm.online:
                await self.writer.mark_processing(subject)
            result = await self._llm.analyze(subject.text)
        ANALYSIS_SECONDS.observe(result.latency_ms / 1000)
        row = insight_row(subject, result, utc_now())
        await self._records.put((row, previous))
        outcome = FAILED if row.parse_status == FAILED else "completed"
        INSIGHTS_DONE.labels(outcome).inc()
        return row

    async def restate(self, row: InsightRow) -> InsightRow:
        await self._restated.put(row)
        INSIGHTS_DONE.labels("skipped").inc()
        return row

    async def aclose(self) -> None:
        await self._llm.aclose()
        await self._redis.aclose()


async def open_analyst(writer: InsightWriter, settings: Settings) -> Analyst:
    """Connect the LLM client (and its Redis rate bucket) on the running loop."""
    client = connect_async(settings.redis)
    llm = LlmClient(settings.llm, client, limiter_prefix=settings.llm.limiter_prefix)
    await llm.warm_up()
    log.info("insights.analyst_ready", online=llm.online, rate_per_s=settings.llm.rate_per_s)
    return Analyst(writer, llm, client, settings.llm.max_concurrency)
