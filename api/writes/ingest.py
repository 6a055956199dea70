"""Accepting an utterance: check its conversation, make sure an explicit
utterance_id is stored once, then write the utterance and its change-feed
entry together.

Every write here is an upsert of values fixed before the first attempt (the
id comes from the client, from the Idempotency-Key's claim, or is fresh), so a retry
that finishes a half-done request rewrites the same utterance row. Its feed
entry gets a fresh feed id: see cql/change_feed.py for why, and why a second feed
entry for the same utterance still counts once.

An explicit utterance_id's claim records which request made it
(api.edge.idempotency.claimant: its Idempotency-Key's claim and item index), so the
retry that finds the id already stored by its own earlier attempt answers
`duplicate: false`, and only an utterance another request stored is a
duplicate. (One corner stays: when request A claims an id and dies before
writing it, and request B with another key and the same content then writes
it, A's retry also answers `false`.)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec

from api.edge.idempotency import Answer, KeyAnswer, answer_with, claimant, held_key
from api.edge.problems import ApiError, BadRequest, Conflict, NotFound, Unprocessable, problem_body
from api.shapes import Accepted, ItemResult, RejectedItem, UtteranceIn
from api.writes.store import BATCH_BYTES, Store, utterance_bytes
from cql.clock import EPOCH, to_stored_time, utc_now
from cql.utterances import UtteranceClaimRow, UtteranceRow

MAX_FUTURE = timedelta(days=1)
# The earliest timestamp the reads serve (api/reads/periods.py): an
# utterance is accepted only if it can be read back.
EARLIEST = EPOCH.replace(tzinfo=UTC)
Write = UtteranceRow
_encoder = msgspec.json.Encoder()


def content_hash(item: UtteranceIn) -> bytes:
    """The utterance as it is stored: its timestamp in UTC at millisecond
    precision, so the same instant written with another offset is the same
    utterance."""
    stored = to_stored_time(item.timestamp).replace(tzinfo=UTC)
    return _hash(msgspec.structs.replace(item, timestamp=stored))


def _spelled_hash(item: UtteranceIn) -> bytes:
    """The hash of the utterance as sent, which claims made before
    content_hash normalised the timestamp hold."""
    return _hash(item)


def _hash(item: UtteranceIn) -> bytes:
    return hashlib.sha256(_encoder.encode(item)).digest()


def checked_time(moment: datetime, now: datetime) -> datetime:
    """`moment` as stored, if the reads can serve it: from 1970 up to a day
    past the server's clock (`now`, stored time)."""
    if not EARLIEST <= moment <= now.replace(tzinfo=UTC) + MAX_FUTURE:
        raise BadRequest(
            "timestamp must lie between 1970-01-01T00:00:00Z and a day past the server's "
            "clock: nothing earlier can be read back, and nothing more than a day in the "
            "future is accepted (check the client's clock); "
            f"got {moment.isoformat()}.",
            field="timestamp",
        )
    return to_stored_time(moment)


async def accept(
    store: Store,
    tenant: str,
    item: UtteranceIn,
    utterance_id: str,
    *,
    index: int = 0,
    answer: Callable[[Accepted], Answer] | None = None,
) -> Accepted:
    """`index`: the item's place in its request (a batch), which with the
    request's Idempotency-Key identifies this attempt's claims. `answer`:
    the request's answer when this write is its last, stored on its key in
    the same logged batch as the utterance."""
    checked = await _checked(store, tenant, item, utterance_id, index)
    if isinstance(checked, Accepted):
        return checked
    accepted = Accepted(utterance_id=utterance_id)
    finish = None if answer is None else answer_with(*answer(accepted))
    await store.write_utterances([checked], held_key(), finish)
    return accepted


async def _checked(
    store: Store, tenant: str, item: UtteranceIn, utterance_id: str, index: int
) -> Accepted | Write:
    """What to write for `item`, or the answer when an explicit utterance_id
    is stored already."""
    now = utc_now()
    ts = checked_time(item.timestamp, now)
    await _check_conversation(store, tenant, item)
    if item.utterance_id is not None:
        stored = await _stored_before(store, tenant, item, now, claimant(index))
        if stored is not None:
            return stored
    return _utterance_row(tenant, item, utterance_id, ts, now)


def _utterance_row(
    tenant: str, item: UtteranceIn, utterance_id: str, ts: datetime, now: datetime
) -> UtteranceRow:
    """The stored row of an accepted utterance, its analysis `pending`; the
    store stamps when it was received as it writes it."""
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
    tenant: str,
    items: list[tuple[UtteranceIn | RejectedItem, str]],
    concurrency: int,
    answer: Callable[[list[ItemResult]], Answer],
) -> list[ItemResult]:
    """One result per item, in order. Items are checked (and explicit ids
    claimed) concurrently, bounded, except that items sharing an utterance
    id go one after another in batch order: the first copy stores it, a
    later copy gets 200 and a later clashing body 409, every time. Then the
    utterances are written in chunked logged batches, the request's
    `answer` with the last chunk, once every other chunk has landed. An
    item that is not an utterance is refused in its result (400)."""
    slots = asyncio.Semaphore(concurrency)
    results: dict[int, ItemResult] = {}
    writes: list[Write] = []
    by_id: dict[str, list[int]] = {}
    for index, (item, utterance_id) in enumerate(items):
        if isinstance(item, RejectedItem):
            results[index] = _refused(index, None, BadRequest(item.detail, field=item.field))
        else:
            by_id.setdefault(utterance_id, []).append(index)

    async def in_order(indexes: list[int]) -> None:
        written: bytes | None = None  # the content hash of the copy this batch writes
        for index in indexes:
            item, utterance_id = items[index]
            assert isinstance(item, UtteranceIn)
            if written is not None:
                results[index] = _copy_of_written(index, item, utterance_id, written)
                continue
            async with slots:
                checked = await _checked_item(store, tenant, index, item, utterance_id)
            if isinstance(checked, ItemResult):
                results[index] = checked
            else:
                writes.append(checked)
                written = content_hash(item)
                results[index] = ItemResult(index, 201, utterance_id, duplicate=False)

    await asyncio.gather(*(in_order(indexes) for indexes in by_id.values()))
    ordered = [results[index] for index in range(len(items))]
    if writes:
        await _write_chunks(store, writes, answer_with(*answer(ordered)))
    return ordered


async def _checked_item(
    store: Store, tenant: str, index: int, item: UtteranceIn, utterance_id: str
) -> ItemResult | Write:
    try:
        checked = await _checked(store, tenant, item, utterance_id, index)
    except ApiError as exc:
        return _refused(index, item.utterance_id, exc)
    if isinstance(checked, Accepted):
        status = 200 if checked.duplicate else 201
        return ItemResult(index, status, checked.utterance_id, duplicate=checked.duplicate)
    return checked


def _copy_of_written(
    index: int, item: UtteranceIn, utterance_id: str, written: bytes
) -> ItemResult:
    """A later copy of an utterance this batch writes: a duplicate, or a clash."""
    if content_hash(item) == written:
        return ItemResult(index, 200, utterance_id, duplicate=True)
    return _refused(index, utterance_id, _clash(utterance_id))


async def _write_chunks(store: Store, writes: list[Write], answer: KeyAnswer | None) -> None:
    """The writes in logged batches of at most BATCH_BYTES each, the last
    one with the answer: it is sent only once the others landed, so a key
    that holds an answer never misses one of its utterances."""
    chunks = _chunks(writes)
    idem_key = held_key()
    await asyncio.gather(*(store.write_utterances(chunk, idem_key) for chunk in chunks[:-1]))
    await store.write_utterances(chunks[-1], idem_key, answer)


def _chunks(writes: list[Write]) -> list[list[Write]]:
    chunks: list[list[Write]] = [[]]
    size = 0
    for write in writes:
        cost = utterance_bytes(write)
        if chunks[-1] and size + cost > BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(write)
        size += cost
    return chunks


def _refused(index: int, utterance_id: str | None, exc: ApiError) -> ItemResult:
    status, body, _ = problem_body(exc)
    return ItemResult(
        index, status, utterance_id, error=body["type"], detail=exc.detail, field=exc.field
    )


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
) -> Accepted | None:
    """Claim the explicit utterance_id for `claimed_by`. None: write it (first
    time, or a retry finishing a write that died after the claim). Else it is
    stored, and the answer carries its stored status: `duplicate` False when
    by this request's own earlier attempt (the claim records the same
    claimant), True when by another request."""
    assert item.utterance_id is not None
    digest = content_hash(item)
    existing = await store.claim_utterance(
        UtteranceClaimRow(tenant, item.utterance_id, digest, now, claimed_by)
    )
    if existing is None:
        return None
    if existing.request_hash not in (digest, _spelled_hash(item)):
        raise _clash(item.utterance_id)
    row = await store.utterance(tenant, item.utterance_id)
    if row is None:
        return None
    duplicate = claimed_by is None or existing.claimed_by != claimed_by
    return Accepted(utterance_id=item.utterance_id, status=row.status, duplicate=duplicate)


def _clash(utterance_id: str) -> Conflict:
    return Conflict(
        f"utterance_id {utterance_id!r} already holds a different utterance; "
        "send a new utterance_id, or the same content to retry.",
        field="utterance_id",
    )
