"""Accepting an utterance: check its conversation, make sure an explicit
utterance_id is stored once, then write the utterance and its change-feed
entry together.

Every write here is an upsert of values fixed before the first attempt (the
id comes from the client, from the Idempotency-Key, or is fresh), so a retry
that finishes a half-done request rewrites the same utterance row. Its feed
entry gets a fresh feed id: see cql/feed.py for why, and why a second feed
entry for the same utterance still counts once.

An explicit utterance_id's claim records which request made it
(api.edge.idempotency.claimant: its Idempotency-Key and item index), so the
retry that finds the id already stored by its own earlier attempt answers
`duplicate: false`, and only an utterance another request stored is a
duplicate. (One corner stays: when request A claims an id and dies before
writing it, and request B with another key and the same content then writes
it, A's retry also answers `false`.)
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta

import msgspec

from api.edge.idempotency import claimant
from api.edge.problems import ApiError, BadRequest, Conflict, NotFound, Unprocessable, problem_body
from api.shapes import Accepted, ItemResult, UtteranceIn
from api.writes.store import Store
from cql.change_feed import entry_for
from cql.clock import to_stored_time, utc_now
from cql.utterances import UtteranceClaimRow, UtteranceRow
from runtime.settings import FeedSettings

MAX_FUTURE = timedelta(days=1)
_encoder = msgspec.json.Encoder()


def content_hash(item: UtteranceIn) -> bytes:
    return hashlib.sha256(_encoder.encode(item)).digest()


async def accept(
    store: Store,
    feed: FeedSettings,
    tenant: str,
    item: UtteranceIn,
    utterance_id: str,
    *,
    index: int = 0,
) -> Accepted:
    """`index`: the item's place in its request (a batch), which with the
    request's Idempotency-Key identifies this attempt's claims."""
    now = utc_now()
    ts = to_stored_time(item.timestamp)
    if ts > now + MAX_FUTURE:
        raise BadRequest(
            "timestamp is more than a day in the future; check the client's clock.",
            field="timestamp",
        )
    await _check_conversation(store, tenant, item)
    if item.utterance_id is not None:
        duplicate = await _stored_before(store, tenant, item, now, claimant(index))
        if duplicate is not None:
            return Accepted(utterance_id=utterance_id, duplicate=duplicate)
    row = _utterance_row(tenant, item, utterance_id, ts, now)
    entry = entry_for(row, feed)
    await store.write_utterance(row, entry)
    return Accepted(utterance_id=utterance_id)


def _utterance_row(
    tenant: str, item: UtteranceIn, utterance_id: str, ts: datetime, now: datetime
) -> UtteranceRow:
    """The stored row of an accepted utterance: received `now`, its analysis `pending`."""
    errors = [(e.category, e.subcategory) for e in item.errors]
    return UtteranceRow(
        tenant,
        utterance_id,
        item.user_id,
        item.conversation_id,
        item.text,
        ts,
        errors,
        item.words_learned,
        now,
        "pending",
        None,
        now,
    )


async def accept_batch(
    store: Store,
    feed: FeedSettings,
    tenant: str,
    items: list[tuple[UtteranceIn, str]],
    concurrency: int,
) -> list[ItemResult]:
    """One result per item, in order. Items run concurrently, bounded, except
    that items sharing an utterance id run one after another in batch order:
    the first copy stores it and a later clashing body gets 409, every time."""
    slots = asyncio.Semaphore(concurrency)
    results: dict[int, ItemResult] = {}
    by_id: dict[str, list[int]] = {}
    for index, (_, utterance_id) in enumerate(items):
        by_id.setdefault(utterance_id, []).append(index)

    async def in_order(indexes: list[int]) -> None:
        for index in indexes:
            item, utterance_id = items[index]
            async with slots:
                results[index] = await _accept_item(store, feed, tenant, index, item, utterance_id)

    await asyncio.gather(*(in_order(indexes) for indexes in by_id.values()))
    return [results[index] for index in range(len(items))]


async def _accept_item(
    store: Store, feed: FeedSettings, tenant: str, index: int, item: UtteranceIn, utterance_id: str
) -> ItemResult:
    try:
        done = await accept(store, feed, tenant, item, utterance_id, index=index)
    except ApiError as exc:
        status, body, _ = problem_body(exc)
        return ItemResult(index, status, item.utterance_id, error=body["type"], detail=exc.detail)
    status = 200 if done.duplicate else 201
    return ItemResult(index, status, done.utterance_id, duplicate=done.duplicate)


async def _check_conversation(store: Store, tenant: str, item: UtteranceIn) -> None:
    conversation = await store.conversation(tenant, item.conversation_id)
    if conversation is None:
        raise NotFound(
            f"conversation {item.conversation_id!r} does not exist; create it with POST /v1/conversations.",
            field="conversation_id",
        )
    if conversation.user_id != item.user_id:
        raise Unprocessable(
            f"conversation {item.conversation_id!r} belongs to another learner, not {item.user_id!r}.",
            field="user_id",
        )


async def _stored_before(
    store: Store, tenant: str, item: UtteranceIn, now: datetime, claimed_by: str | None
) -> bool | None:
    """Claim the explicit utterance_id for `claimed_by`. None: write it (first
    time, or a retry finishing a write that died after the claim). Else it is
    stored: False when by this request's own earlier attempt (the claim
    records the same claimant), True when by another request."""
    digest = content_hash(item)
    existing = await store.claim_utterance(
        UtteranceClaimRow(tenant, item.utterance_id, digest, now, claimed_by)
    )
    if existing is None:
        return None
    if existing.request_hash != digest:
        raise Conflict(
            f"utterance_id {item.utterance_id!r} already holds a different utterance; "
            "send a new utterance_id, or the same content to retry.",
            field="utterance_id",
        )
    if await store.utterance(tenant, item.utterance_id) is None:
        return None
    return claimed_by is None or existing.claimed_by != claimed_by
