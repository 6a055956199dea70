"""Erasing a learner (DELETE /v1/users/{id}): everything the API wrote for
it, and the record and feed entries that make the dataflows delete what
they derived.

Order, so that a failure at any point leaves nothing a retry cannot finish:

1. read what there is: the learner, its latest erasure, its days,
   conversations and utterances (from the listing tables), and each
   utterance's insight record;
2. record the erasure (erased_learners, and the learner's days in
   erased_learner_days for the flows), then append one erase entry per feed
   shard: from here on every flow, a restart and a replay skip the
   learner's utterances accepted before `erased_at`, and each flow deletes
   its facts, counts and buckets for those days;
3. delete the base and listing rows, the claims, the idempotency answers
   the listing rows name and the insights;
4. last the learner itself, so a retry after a failure still finds it.

A repeat (the learner is gone, its erasure recorded) answers the recorded
`erased_at` and runs 2-4 again with it, which deletes anything a request
racing the first erasure left behind.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from cassandra.query import PreparedStatement

from cql.aio import execute, fetch_all
from cql.change_feed import CHANGE_FEED, shard_of
from cql.clock import DAY, floor_to, month_start, utc_now
from cql.erasure import ERASED_DAYS, ERASED_LEARNERS, LATEST_ERASURE, erase_entries
from cql.insights import (
    FAILED_INSIGHTS,
    INSIGHTS,
    INSIGHTS_BY_HOUR,
    INSIGHTS_BY_USER,
    hour_of,
    month_of,
)
from cql.learners import CONVERSATIONS, USERS
from cql.listings import (
    CONVERSATIONS_BY_USER,
    LEARNERS_BY_BUCKET,
    UTTERANCE_DAYS,
    UTTERANCES_BY_CONVERSATION,
    UTTERANCES_BY_USER_DAY,
    learner_bucket,
)
from cql.session import Db
from cql.table import Table
from cql.utterances import IDEMPOTENCY_KEYS, UTTERANCE_CLAIMS, UTTERANCES
from runtime.settings import Settings

Statement = tuple[PreparedStatement, tuple[Any, ...]]
# Rows read from one partition at most: far above any learner's day.
_MOST_ROWS = 1_000_000
_IN_FLIGHT = 64


class Eraser:
    def __init__(self, db: Db, settings: Settings) -> None:
        self._session = db.session
        self._feed = settings.feed
        self._insight_shards = settings.dataflow.insight_shards
        self._slots = asyncio.Semaphore(_IN_FLIGHT)
        p = db.prepare
        self._user = p(USERS.select(), idempotent=True)
        self._latest = p(LATEST_ERASURE, idempotent=True)
        listed_where = f"{LEARNERS_BY_BUCKET.key_where()} AND user_id = ?"
        self._listed = p(
            LEARNERS_BY_BUCKET.select(listed_where, columns=("idem_key",)), idempotent=True
        )
        self._days = p(UTTERANCE_DAYS.select(columns=("day",)), idempotent=True)
        self._conversations = p(
            CONVERSATIONS_BY_USER.select(columns=("conversation_id", "idem_key")), idempotent=True
        )
        self._utterances = p(
            UTTERANCES_BY_USER_DAY.select(columns=("ts", "utterance_id", "idem_key")),
            idempotent=True,
        )
        self._insight = p(INSIGHTS.select(columns=("parse_status", "analyzed_at")), idempotent=True)
        self._record = p(ERASED_LEARNERS.insert(), idempotent=True)
        self._record_day = p(ERASED_DAYS.insert(ttl_s=self._feed.ttl_days * 86400), idempotent=True)
        self._feed_entry = p(CHANGE_FEED.insert(ttl_s=self._feed.ttl_days * 86400), idempotent=True)
        self._deletes = {
            table.name: p(table.delete(key), idempotent=True) for table, key in _DELETED
        }

    async def erase(self, tenant: str, user_id: str) -> tuple[datetime, list[str]] | None:
        """Erase the learner: when it was erased, and its conversations (for
        the caller to forget); None when there is no such learner and none
        was erased."""
        user, latest = await asyncio.gather(
            self._read(self._user, (tenant, user_id)), self._read(self._latest, (tenant, user_id))
        )
        if not user and not latest:
            return None
        erased_at = latest[0][0] if not user else utc_now()
        learner = (tenant, user_id)
        days, conversations, listed = await asyncio.gather(
            self._read(self._days, learner),
            self._read(self._conversations, learner),
            self._read(self._listed, (tenant, learner_bucket(user_id), user_id)),
        )
        days = [day for (day,) in days]
        utterances = [
            row for part in await self._all(self._utterances, [(*learner, d) for d in days])
            for row in part
        ]  # fmt: skip
        await self._record_erasure(tenant, user_id, erased_at, days)
        keys = {k for (k,) in listed} | {k for _c, k in conversations} | {k for *_, k in utterances}
        await self._run(
            self._learner_rows(tenant, user_id, days, [c for c, _k in conversations])
            + await self._utterance_rows(tenant, [(ts, u) for ts, u, _k in utterances])
            + [self._delete(IDEMPOTENCY_KEYS, (tenant, key)) for key in keys if key]
        )
        await self._run([self._delete(USERS, learner)])
        return erased_at, [c for c, _k in conversations]

    async def _record_erasure(
        self, tenant: str, user_id: str, erased_at: datetime, days: list[datetime]
    ) -> None:
        await self._run(
            [(self._record, (tenant, user_id, erased_at))]
            + [(self._record_day, (tenant, user_id, erased_at, day)) for day in days]
        )
        entries = erase_entries(tenant, user_id, erased_at, self._feed, utc_now())
        await self._run([(self._feed_entry, CHANGE_FEED.values(e)) for e in entries])

    def _learner_rows(
        self, tenant: str, user_id: str, days: list[datetime], conversations: list[str]
    ) -> list[Statement]:
        learner = (tenant, user_id)
        months = {month_start(day) for day in days}
        return [
            self._delete(LEARNERS_BY_BUCKET, (tenant, learner_bucket(user_id), user_id)),
            self._delete(CONVERSATIONS_BY_USER, learner),
            self._delete(UTTERANCE_DAYS, learner),
            *(self._delete(UTTERANCES_BY_USER_DAY, (*learner, day)) for day in days),
            *(self._delete(INSIGHTS_BY_USER, (*learner, month_of(m))) for m in months),
            *(self._delete(CONVERSATIONS, (tenant, c)) for c in conversations),
            *(self._delete(UTTERANCES_BY_CONVERSATION, (tenant, c)) for c in conversations),
        ]

    async def _utterance_rows(
        self, tenant: str, utterances: list[tuple[datetime, str]]
    ) -> list[Statement]:
        """Each utterance's own rows: base, claim, insight record, served
        insight and, for a failed insight, its failure row."""
        records = await self._all(self._insight, [(tenant, u) for _ts, u in utterances])
        statements: list[Statement] = []
        for (ts, utterance_id), record in zip(utterances, records, strict=True):
            key = (tenant, utterance_id)
            shard = shard_of(tenant, utterance_id, self._insight_shards)
            statements += [
                self._delete(UTTERANCES, key),
                self._delete(UTTERANCE_CLAIMS, key),
                self._delete(INSIGHTS, key),
                self._delete(INSIGHTS_BY_HOUR, (tenant, hour_of(ts), shard, ts, utterance_id)),
            ]
            for status, analyzed_at in record:
                if status == "failed":
                    failed = (floor_to(analyzed_at, DAY), analyzed_at, tenant, utterance_id)
                    statements.append(self._delete(FAILED_INSIGHTS, failed))
        return statements

    def _delete(self, table: Table[Any], key: tuple[Any, ...]) -> Statement:
        return self._deletes[table.name], key

    async def _read(self, statement: PreparedStatement, params: tuple[Any, ...]) -> list[Any]:
        async with self._slots:
            return await fetch_all(self._session, statement.bind(params), limit=_MOST_ROWS)

    async def _all(self, statement: PreparedStatement, params: list[tuple[Any, ...]]) -> list[Any]:
        return await asyncio.gather(*(self._read(statement, p) for p in params))

    async def _run(self, statements: list[Statement]) -> None:
        async def one(statement: PreparedStatement, params: tuple[Any, ...]) -> None:
            async with self._slots:
                await execute(self._session, statement, params)

        await asyncio.gather(*(one(s, p) for s, p in statements))


# Every table a learner's erasure deletes from, with the key it deletes by.
_DELETED: list[tuple[Table[Any], tuple[str, ...] | None]] = [
    (USERS, None),
    (LEARNERS_BY_BUCKET, LEARNERS_BY_BUCKET.primary_key),
    (CONVERSATIONS_BY_USER, None),
    (UTTERANCE_DAYS, None),
    (UTTERANCES_BY_USER_DAY, None),
    (INSIGHTS_BY_USER, None),
    (CONVERSATIONS, None),
    (UTTERANCES_BY_CONVERSATION, None),
    (UTTERANCES, None),
    (UTTERANCE_CLAIMS, None),
    (INSIGHTS, None),
    (INSIGHTS_BY_HOUR, INSIGHTS_BY_HOUR.primary_key),
    (FAILED_INSIGHTS, FAILED_INSIGHTS.primary_key),
    (IDEMPOTENCY_KEYS, None),
]
