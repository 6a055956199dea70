"""The API's reads and writes: every statement prepared once at start-up,
each operation one awaited round trip (or a bounded few).

Lightweight transactions settle an unknown outcome (a CAS write timeout) with
a SERIAL read of the same row, never by sending the insert again. The driver
itself sends any statement again on another node when the connection it went
out on fails before the answer (cql/session.py): an Idempotency-Key claim or
take-over not applied with our own (random) owner in place means the first
send applied. The other LWTs need no such rule: their callers already take
a row like their own for their own (learners, conversations) or look for the
utterance itself (utterance claims).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from cassandra import WriteTimeout, WriteType
from cassandra.query import PreparedStatement

from api.edge.problems import ServiceUnavailable
from api.writes.listed import ListingWrites
from api.writes.recent import Recent
from cql import consistency
from cql.aio import execute, fetch_all
from cql.api_keys import API_KEYS, ApiKeyRow
from cql.change_feed import CHANGE_FEED, entry_for
from cql.clock import utc_now
from cql.group_commit import GroupCommit, Rows
from cql.insights import INSIGHTS, INSIGHTS_BY_HOUR, INSIGHTS_BY_USER, InsightRow
from cql.learners import CONVERSATIONS, USERS, ConversationRow, UserRow
from cql.session import Db
from cql.table import Table
from cql.utterances import (
    IDEMPOTENCY_KEYS,
    UTTERANCE_CLAIMS,
    UTTERANCES,
    IdempotencyRow,
    UtteranceClaimRow,
    UtteranceRow,
)
from runtime.settings import ApiSettings, FeedSettings

if TYPE_CHECKING:
    from api.edge.idempotency import KeyAnswer

# Learners and conversations remembered: at most this many of each, each
# trusted for a second.
_CACHED = (50_000, 1.0)
_FEED = FeedSettings()
_API = ApiSettings()
# Utterances go in logged batches of about this size, well under
# Cassandra's batch_size_warn_threshold (64 KiB in ops/cassandra/conf):
# fewer round trips, no batch Cassandra warns about.
BATCH_BYTES = 48 * 1024
# What an utterance row carries beside its text: ids, times, error points.
_ROW_OVERHEAD_BYTES = 300


def utterance_bytes(utterance: UtteranceRow) -> int:
    """About what an utterance adds to a logged batch: its text and ids go
    into its row, its feed entry and its listing rows, about four times."""
    return 4 * (len(utterance.text.encode()) + _ROW_OVERHEAD_BYTES)


class Store:
    def __init__(
        self,
        db: Db,
        max_in_flight: int,
        *,
        idempotency_ttl_s: int = _API.idempotency_ttl_s,
        feed: FeedSettings = _FEED,
        write_batches_in_flight: int = _API.write_batches_in_flight,
    ) -> None:
        """Idempotency keys and feed entries are written with the TTLs of the
        settings (`api.idempotency_ttl_s`, `feed.ttl_days`), not the tables'
        default_time_to_live: every write to those tables must pass `ttl_s`.
        Feed entries go where `feed` says (shards, buckets). Utterances'
        logged batches go through a group commit with
        `write_batches_in_flight` lanes (cql/group_commit.py)."""
        self.db = db
        self._feed = feed
        self._slots = asyncio.Semaphore(max_in_flight)
        self._batches = GroupCommit(db.session, write_batches_in_flight, BATCH_BYTES)
        self._conversations: Recent[tuple[str, str], ConversationRow] = Recent(*_CACHED)
        self._users: Recent[tuple[str, str], UserRow] = Recent(*_CACHED)
        self.listings = ListingWrites(db.prepare)
        self.ping = db.session.prepare("SELECT release_version FROM system.local")
        self._prepare_learners(db.prepare)
        self._prepare_utterances(db.prepare, feed.ttl_days)
        self._prepare_keys(db.prepare, idempotency_ttl_s)
        self._prepare_insights(db.prepare)

    def _prepare_learners(self, p: Callable[..., PreparedStatement]) -> None:
        self._api_key = p(API_KEYS.select(), idempotent=True)
        self._insert_user = p(USERS.insert(if_not_exists=True))
        self._user = p(USERS.select(), idempotent=True)
        self._insert_conversation = p(CONVERSATIONS.insert(if_not_exists=True))
        self._conversation = p(CONVERSATIONS.select(), idempotent=True)

    def _prepare_utterances(self, p: Callable[..., PreparedStatement], feed_ttl_days: int) -> None:
        self._insert_utterance = p(UTTERANCES.insert(), idempotent=True)
        self._utterance = p(UTTERANCES.select(), idempotent=True)
        self._insert_feed = p(CHANGE_FEED.insert(ttl_s=feed_ttl_days * 86400), idempotent=True)
        self._claim_utterance = p(UTTERANCE_CLAIMS.insert(if_not_exists=True))
        self._utterance_claim = p(UTTERANCE_CLAIMS.select(), idempotent=True)

    def _prepare_keys(self, p: Callable[..., PreparedStatement], key_ttl: int) -> None:
        self._claim_key = p(IDEMPOTENCY_KEYS.insert(if_not_exists=True, ttl_s=key_ttl))
        self._idem_key = p(IDEMPOTENCY_KEYS.select(), idempotent=True)
        # A lapsed claim changes hands only if neither its owner nor its lease
        # moved since it was read: a holder that renewed in between keeps it.
        self._take_over_key = p(
            IDEMPOTENCY_KEYS.update(
                ["owner", "started_at", "lease_until", "holder"],
                condition="owner = ? AND lease_until = ?",
                ttl_s=key_ttl,
            )
        )
        # Renewing and ending a lease are the same write: a lease moved to now
        # has lapsed, and a retry takes the claim over at once.
        self._renew_key = p(
            IDEMPOTENCY_KEYS.update(["lease_until"], condition="owner = ?", ttl_s=key_ttl)
        )
        self._finish_key = p(
            IDEMPOTENCY_KEYS.update(["state", "status_code", "response"], ttl_s=key_ttl),
            idempotent=True,
        )

    def _prepare_insights(self, p: Callable[..., PreparedStatement]) -> None:
        self._insight = p(INSIGHTS.select(), idempotent=True)
        self._insight_slices = {
            (by, topic): p(_insight_slice(table, topic), idempotent=True)
            for by, table in (("hour", INSIGHTS_BY_HOUR), ("user", INSIGHTS_BY_USER))
            for topic in (False, True)
        }

    async def _run(self, statement: PreparedStatement, params: tuple) -> list[tuple]:
        async with self._slots:
            result = await execute(self.db.session, statement, params)
            return result.current_rows

    async def _one(self, statement: PreparedStatement, params: tuple) -> tuple | None:
        rows = await self._run(statement, params)
        return rows[0] if rows else None

    async def _cas(
        self, table: Table, row: Any, insert: PreparedStatement, read: PreparedStatement
    ) -> Any | None:
        """Run an LWT insert of `row`; None when it applied, else the row that
        was there. On a CAS write timeout the outcome is unknown, and a SERIAL
        read tells: finding our own row means the insert did apply."""
        key = tuple(getattr(row, c) for c in table.partition_key)
        try:
            async with self._slots:
                result = await execute(self.db.session, insert, table.values(row))
        except WriteTimeout as exc:
            if exc.write_type != WriteType.CAS:
                raise
            found = await self._serial_read(read, key)
            return None if found == table.values(row) else table.from_row(found)
        first = result.current_rows[0]
        if first[0]:
            return None
        # A not-applied LWT returns the existing row in schema order, so map by name.
        return table.from_mapping(dict(zip(result.column_names, first, strict=True)))

    async def _serial_read(self, statement: PreparedStatement, key: tuple) -> tuple:
        bound = statement.bind(key)
        bound.consistency_level = consistency.SERIAL
        async with self._slots:
            result = await execute(self.db.session, bound)
        if not result.current_rows:
            raise ServiceUnavailable(
                "The write's outcome is unknown and could not be read back; retry.", retry_after_s=1
            )
        return tuple(result.current_rows[0])

    # ---- keys, learners, conversations

    async def api_key(self, digest: bytes) -> ApiKeyRow | None:
        row = await self._one(self._api_key, (digest,))
        return API_KEYS.from_row(row) if row else None

    async def create_user(self, user: UserRow) -> UserRow | None:
        """None when created; the existing learner when the id is taken."""
        return await self._cas(USERS, user, self._insert_user, self._user)

    async def user(self, tenant: str, user_id: str) -> UserRow | None:
        """Found learners are remembered for a moment (api/writes/recent.py)."""
        return await self._cached(self._users, (tenant, user_id), self._user, USERS)

    def forget_learner(self, tenant: str, user_id: str, conversations: list[str]) -> None:
        self._users.forget((tenant, user_id))
        for conversation_id in conversations:
            self._conversations.forget((tenant, conversation_id))

    async def create_conversation(self, conversation: ConversationRow) -> ConversationRow | None:
        return await self._cas(
            CONVERSATIONS, conversation, self._insert_conversation, self._conversation
        )

    async def conversation(self, tenant: str, conversation_id: str) -> ConversationRow | None:
        """Found conversations are remembered for a moment, like learners."""
        key = (tenant, conversation_id)
        return await self._cached(self._conversations, key, self._conversation, CONVERSATIONS)

    async def _cached(
        self, cache: Recent, key: tuple[str, str], statement: PreparedStatement, table: Table
    ) -> Any | None:
        if (cached := cache.get(key)) is not None:
            return cached
        row = await self._one(statement, key)
        return None if row is None else cache.put(key, table.from_row(row))

    async def list_row(self, write: tuple[PreparedStatement, tuple]) -> None:
        """Write a listing row (api/writes/listed.py)."""
        await self._run(*write)

    # ---- utterances and the change feed

    async def claim_utterance(self, claim: UtteranceClaimRow) -> UtteranceClaimRow | None:
        return await self._cas(
            UTTERANCE_CLAIMS, claim, self._claim_utterance, self._utterance_claim
        )

    async def utterance(self, tenant: str, utterance_id: str) -> UtteranceRow | None:
        row = await self._one(self._utterance, (tenant, utterance_id))
        return UTTERANCES.from_row(row) if row else None

    async def write_utterance(self, utterance: UtteranceRow, idem_key: str | None = None) -> None:
        await self.write_utterances([utterance], idem_key)

    async def write_utterances(
        self,
        utterances: list[UtteranceRow],
        idem_key: str | None = None,
        answer: KeyAnswer | None = None,
    ) -> None:
        """Utterances, their feed entries, their listing rows and the answer
        of the request on its Idempotency-Key in one logged batch: all land
        or none, and a retry rewrites the same rows. Concurrent requests'
        batches may go out as one (cql/group_commit.py).

        Each utterance is received, and its feed entry placed, at the moment
        the batch is sent, not when its request came in: an entry then lands
        within one write's latency of its feed time, which the feed readers'
        lag (`feed.reader_lag_s`) is there to cover. Under load a request can
        wait much longer than that before its write (a claim, a slot, a busy
        event loop), and an entry that lands behind a reader's position waits
        for the next sweep (dataflows/connectors/feed_source.py)."""

        def rows() -> Rows:
            now = utc_now()
            found: Rows = []
            for utterance in utterances:
                received = msgspec.structs.replace(utterance, received_at=now, status_at=now)
                found.append((self._insert_utterance, UTTERANCES.values(received)))
                entry = entry_for(received, self._feed)
                found.append((self._insert_feed, CHANGE_FEED.values(entry)))
                found += self.listings.utterance(received, idem_key)
            if answer is not None:
                found.append((self._finish_key, self._finished(answer)))
            return found

        size = sum(map(utterance_bytes, utterances)) + (len(answer.stored) if answer else 0)
        async with self._slots:
            await self._batches.commit(size, rows)

    # ---- idempotency keys

    async def claim_key(self, row: IdempotencyRow) -> IdempotencyRow | None:
        existing = await self._cas(IDEMPOTENCY_KEYS, row, self._claim_key, self._idem_key)
        # Our own claim (its owner is random): the first send applied, and the
        # driver sent the insert again because that node's connection failed
        # before it answered.
        return None if existing is not None and existing.owner == row.owner else existing

    async def take_over_key(self, lapsed: IdempotencyRow, claim: IdempotencyRow) -> bool:
        """Hand the key from `lapsed` (the claim as read) to `claim`'s owner,
        start, lease and holder; True when this call won."""
        tenant, key = claim.tenant, claim.idem_key
        params = (
            claim.owner, claim.started_at, claim.lease_until, claim.holder,
            tenant, key, lapsed.owner, lapsed.lease_until,
        )  # fmt: skip
        try:
            async with self._slots:
                result = await execute(self.db.session, self._take_over_key, params)
        except WriteTimeout:
            current = IDEMPOTENCY_KEYS.from_row(
                await self._serial_read(self._idem_key, (tenant, key))
            )
            return current.owner == claim.owner
        row = dict(zip(result.column_names, result.current_rows[0], strict=True))
        # Not applied, yet ours: a send again after a failed connection
        # (claim_key). A key deleted meanwhile (erasure, TTL) has no owner.
        return row["[applied]"] or row.get("owner") == claim.owner

    async def renew_key(
        self, tenant: str, key: str, owner: uuid.UUID, lease_until: datetime
    ) -> bool:
        """Move the claim's lease forward; False when `owner` no longer holds
        the key (it lapsed and a retry took it over)."""
        row = await self._one(self._renew_key, (lease_until, tenant, key, owner))
        return bool(row[0])

    async def finish_key(self, answer: KeyAnswer) -> None:
        await self._run(self._finish_key, self._finished(answer))

    @staticmethod
    def _finished(answer: KeyAnswer) -> tuple:
        return ("done", answer.status, answer.stored, answer.tenant, answer.key)

    async def lapse_key(self, tenant: str, key: str, owner: uuid.UUID, now: datetime) -> None:
        """End `owner`'s lease now, so a retry takes the claim over at once."""
        await self.renew_key(tenant, key, owner, now)

    # ---- insights

    async def insight(self, tenant: str, utterance_id: str) -> InsightRow | None:
        row = await self._one(self._insight, (tenant, utterance_id))
        return INSIGHTS.from_row(row) if row else None

    async def insights_after(
        self,
        by: Literal["hour", "user"],
        partition: tuple[Any, ...],
        after: tuple[datetime, str],
        before: datetime,
        bounds: tuple[float, float, float],
        topic: str | None,
        limit: int,
    ) -> list[tuple]:
        """The first `limit` insights of one partition of insights_by_hour
        (tenant, hour, shard) or insights_by_user_month (tenant, user_id,
        month) after `after` = (ts, utterance_id) and before the instant
        `before`, with confidence >= bounds[0] and sentiment in [bounds[1],
        bounds[2]] (and the topic), in (ts, utterance_id) order: tuples of
        INSIGHT_SLICE_COLUMNS."""
        statement = self._insight_slices[(by, topic is not None)]
        topics = () if topic is None else (topic,)
        params = (*partition, *after, before, *bounds, *topics, limit)
        async with self._slots:
            # Every page, not just the first: a short page would look like
            # the end of the partition.
            return await fetch_all(self.db.session, statement, params, limit=limit)


INSIGHT_SLICE_COLUMNS = (
    "ts", "utterance_id", "user_id", "sentiment", "topics", "confidence", "reasoning",
    "model", "prompt_version", "parse_status",
)  # fmt: skip


def _insight_slice(table: Table, topic: bool) -> str:
    # Storage-attached indexes filter inside the one partition read; the
    # tuple bounds are a clustering slice.
    where = (
        f"{table.key_where()} AND (ts, utterance_id) > (?, ?) AND (ts) < (?)"
        " AND confidence >= ? AND sentiment >= ? AND sentiment <= ?"
        + (" AND topics CONTAINS ?" if topic else "")
    )
    return table.select(where, columns=INSIGHT_SLICE_COLUMNS) + " LIMIT ?"
