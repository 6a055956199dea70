"""The reads of the listing endpoints, each from the table made for it
(cql/schema/010_listings.cql): statements prepared once at start-up, every
read one bounded slice of one partition, `limit + 1` rows so a page knows
whether another follows.

- learners: every bucket of the tenant read after the position, merged in
  user_id order (a page reads LEARNER_BUCKETS slices);
- a learner's conversations, a conversation's utterances: one partition;
- a learner's utterances in [from, to): the days that hold some, from the
  learner's day index, read in waves (1, 2, 4, 8 days at once) until the
  page is full.

Each listed utterance's status is read from utterances_by_id, which the
insights flow keeps current; an utterance erased meanwhile is left out.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cassandra.query import PreparedStatement

from cql.aio import execute, fetch_all
from cql.listings import (
    CONVERSATIONS_BY_USER,
    LEARNER_BUCKETS,
    LEARNERS_BY_BUCKET,
    UTTERANCE_DAYS,
    UTTERANCES_BY_CONVERSATION,
    UTTERANCES_BY_USER_DAY,
    ListedConversationRow,
    ListedLearnerRow,
)
from cql.session import Db
from cql.table import Table
from cql.utterances import UTTERANCES

# Past every id: ids are ASCII (api.shapes.ID_PATTERN).
ID_END = "\U0010ffff"
# A listed utterance: (ts, utterance_id, conversation_id, user_id, text, errors, words, status).
UtteranceTuple = tuple[datetime, str, str, str, str, list, int, str]
_UTTERANCE = ("ts", "utterance_id", "conversation_id", "user_id", "text", "errors", "words_learned")
_MOST_DAYS_AT_ONCE = 8
# Enough for the longest range the endpoint allows, and then some.
MAX_DAYS = 400


class ListingReads:
    def __init__(self, db: Db) -> None:
        self._session = db.session
        p = db.prepare
        slice_ = "AND user_id {} ? AND user_id < ? LIMIT ?"
        self._learners_from = p(_with(LEARNERS_BY_BUCKET, slice_.format(">=")), idempotent=True)
        self._learners_after = p(_with(LEARNERS_BY_BUCKET, slice_.format(">")), idempotent=True)
        self._conversations = p(
            _with(CONVERSATIONS_BY_USER, "AND conversation_id > ? LIMIT ?"), idempotent=True
        )
        self._days = p(
            UTTERANCE_DAYS.select(
                f"{UTTERANCE_DAYS.key_where()} AND day >= ? AND day < ?", columns=("day",)
            ),
            idempotent=True,
        )
        self._by_day = p(
            UTTERANCES_BY_USER_DAY.select(
                f"{UTTERANCES_BY_USER_DAY.key_where()} AND (ts, utterance_id) > (?, ?)"
                " AND ts < ? LIMIT ?",
                columns=_UTTERANCE,
            ),
            idempotent=True,
        )
        self._by_conversation = p(
            UTTERANCES_BY_CONVERSATION.select(
                f"{UTTERANCES_BY_CONVERSATION.key_where()} AND (ts, utterance_id) > (?, ?) LIMIT ?",
                columns=_UTTERANCE,
            ),
            idempotent=True,
        )
        self._status = p(UTTERANCES.select(columns=("status",)), idempotent=True)

    async def learners(
        self, tenant: str, low: str, inclusive: bool, high: str, limit: int
    ) -> list[ListedLearnerRow]:
        """The first `limit + 1` learners with user_id in [low, high) (or
        (low, high)), merged over the buckets in user_id order."""
        statement = self._learners_from if inclusive else self._learners_after
        slices = await asyncio.gather(
            *(
                self._rows(statement, (tenant, bucket, low, high, limit + 1), limit + 1)
                for bucket in range(LEARNER_BUCKETS)
            )
        )
        rows = [LEARNERS_BY_BUCKET.from_row(r) for part in slices for r in part]
        return heapq.nsmallest(limit + 1, rows, key=lambda row: row.user_id)

    async def conversations(
        self, tenant: str, user_id: str, after: str, limit: int
    ) -> list[ListedConversationRow]:
        rows = await self._rows(self._conversations, (tenant, user_id, after, limit + 1), limit + 1)
        return [CONVERSATIONS_BY_USER.from_row(r) for r in rows]

    async def conversation_utterances(
        self, tenant: str, conversation_id: str, after: tuple[datetime, str], limit: int
    ) -> list[UtteranceTuple]:
        params = (tenant, conversation_id, *after, limit + 1)
        return await self._with_status(
            tenant, await self._rows(self._by_conversation, params, limit + 1)
        )

    async def user_utterances(
        self, tenant: str, user_id: str, after: tuple[datetime, str], end: datetime, limit: int
    ) -> list[UtteranceTuple]:
        """The first `limit + 1` utterances after `after` (ts, utterance_id)
        with ts before `end`."""
        first = after[0].replace(hour=0, minute=0, second=0, microsecond=0)
        days = [
            day for (day,) in await self._rows(self._days, (tenant, user_id, first, end), MAX_DAYS)
        ]
        found: list[tuple] = []
        at_once = 1
        while days and len(found) <= limit:
            wave, days = days[:at_once], days[at_once:]
            need = limit + 1 - len(found)
            slices = await asyncio.gather(
                *(
                    self._rows(
                        self._by_day,
                        (tenant, user_id, day, *(after if day == first else (day, "")), end, need),
                        need,
                    )
                    for day in wave
                )
            )
            found += itertools.chain.from_iterable(slices)
            at_once = min(2 * at_once, _MOST_DAYS_AT_ONCE)
        return await self._with_status(tenant, found[: limit + 1])

    async def _with_status(self, tenant: str, rows: Sequence[tuple]) -> list[UtteranceTuple]:
        statuses = await asyncio.gather(
            *(execute(self._session, self._status, (tenant, row[1])) for row in rows)
        )
        return [
            (*row, status.current_rows[0][0])
            for row, status in zip(rows, statuses, strict=True)
            if status.current_rows
        ]

    async def _rows(self, statement: PreparedStatement, params: tuple, limit: int) -> list:
        return await fetch_all(self._session, statement.bind(params), limit=limit)


def _with(table: Table[Any], condition: str) -> str:
    return table.select(f"{table.key_where()} {condition}")
