"""The Idempotency-Key protocol of every POST (SPEC, "Idempotency").

A request with a key first claims it with `INSERT ... IF NOT EXISTS`, storing
a hash of the request, a random owner id, a random id seed (the ids of what
the request creates: derived_id), the process holding the claim (`holder`,
host:pid) and a lease (`lease_until`, `in_flight_timeout_s` ahead).
While the request runs, its holder moves the lease forward every third of
that (`UPDATE ... IF owner = me`), so a live slow request keeps its claim and
the claim of a request whose process died lapses within the lease. Then:

- the claim applied: carry the request out, store its answer (status and
  body) on the key, answer;
- the key holds another request's hash: 422;
- the key is done: replay the stored answer with `Idempotent-Replayed: true`;
- the key is claimed, unfinished and its lease runs: 409 with Retry-After
  set to when the lease ends;
- the key is claimed, unfinished and its lease has passed: the request that
  claimed it died half-way. Take the claim over by CAS on the owner and the
  lease as read (so only one retry wins, and a holder that renewed in
  between keeps it) and carry the request out again. Every write a request
  makes is an idempotent upsert of the same values (ids are derived from the
  claim's seed, which a take-over keeps), so finishing the dead request's
  work is safe; the writes that must tell the client's own earlier attempt
  from another request's (an explicit utterance_id's claim) record
  `claimant()`.

Answers with 2xx and 4xx statuses are stored on the key. A write that can
carry the answer with its own data (an utterance's logged batch) does, via
`answer_with()`: then the key is finished by that batch and needs no write of
its own. A request that failed because Cassandra was unavailable ends its
claim's lease at once, so its retry takes the claim over (seed and all) and
finishes the work. Requests without a key are simply carried out.

Once a key has expired (`api.idempotency_ttl_s`) nothing remembers it: a
reuse is a new request, with a new seed, so it creates new rows beside the
first request's and never overwrites them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Response
from litestar.params import Parameter

from api.edge.metrics import IDEMPOTENCY
from api.edge.problems import (
    CASSANDRA_UNAVAILABLE,
    PROBLEM_JSON,
    ApiError,
    BadRequest,
    IdempotencyKeyReused,
    RequestInFlight,
    ServiceUnavailable,
    problem_body,
)
from api.writes.store import Store
from cql.clock import to_stored_time, utc_now
from cql.utterances import IdempotencyRow

log = structlog.get_logger("api.idempotency")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255

# The header as a handler parameter, so the OpenAPI document shows it;
# checked_key validates it (one message, naming the header).
KeyHeader = Annotated[
    str | None,
    Parameter(
        header=HEADER,
        required=False,
        description="Makes a retried POST safe: the same key with the same body "
        "replays the first answer (Idempotent-Replayed: true); with another body, 422.",
        schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH},
    ),
]

# What a request produces: its status and JSON body (already encoded).
Answer = tuple[int, bytes]
_encoder = msgspec.json.Encoder()
_stored = msgspec.json.Decoder(tuple[int, str, msgspec.Raw])


@dataclasses.dataclass
class _Held:
    """The claim the running request holds; see claimant() and answer_with()."""

    tenant: str
    key: str
    seed: uuid.UUID | None
    # The answer a write already stored on the key with its data.
    answered: Answer | None = None


class KeyAnswer(msgspec.Struct, frozen=True):
    """An answer to store on a key, for a write that carries it."""

    tenant: str
    key: str
    status: int
    stored: bytes


_HELD: ContextVar[_Held | None] = ContextVar("idempotency_held", default=None)


def checked_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not raw or len(raw) > MAX_KEY_LENGTH or not raw.isprintable():
        raise BadRequest(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters (a UUID is usual).",
            field=HEADER,
        )
    return raw


def request_hash(method: str, path: str, body: msgspec.Struct) -> bytes:
    """The decoded body re-encoded, so whitespace and key order don't matter."""
    return hashlib.sha256(
        b"%s %s\n%s" % (method.encode(), path.encode(), _encoder.encode(body))
    ).digest()


def derived_id(tenant: str, key: str, seed: uuid.UUID | None, index: int = 0) -> str:
    """A resource id fixed by the key's claim, so a retry that finishes a
    dead request's work writes to the very same rows, while a reuse of the
    key after it expired (a new claim, a new seed) never does. Claims from
    before seeds keep the ids derived from the key alone."""
    if seed is None:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"utterstream:{tenant}:{key}:{index}"))
    return str(uuid.uuid5(seed, str(index)))


def claimant(index: int = 0) -> str | None:
    """Who the running request is, for item `index` of its work: the id
    derived from the claim of the Idempotency-Key it holds, the same for
    every attempt of the request (None without a key). A write that finds a
    claim recording the same claimant finds the client's own earlier
    attempt, not another request's."""
    held = _HELD.get()
    return None if held is None else derived_id(held.tenant, held.key, held.seed, index)


def answer_with(status: int, body: bytes) -> KeyAnswer | None:
    """The answer of the running request, for a write to store on its key
    together with its data (None without a key). The write must be the
    request's last: once it lands, a repeat replays this answer."""
    held = _HELD.get()
    if held is None:
        return None
    held.answered = (status, body)
    return KeyAnswer(held.tenant, held.key, status, _stored_answer(status, body))


def held_key() -> str | None:
    """The Idempotency-Key the running request holds (None without one),
    recorded on the listing rows it writes so that erasing a learner finds
    the answers that carry its data."""
    held = _HELD.get()
    return None if held is None else held.key


async def run(
    store: Store,
    *,
    tenant: str,
    key: str | None,
    digest: bytes,
    in_flight_timeout_s: float,
    work: Callable[[], Awaitable[Answer]],
) -> Response[Any]:
    """`in_flight_timeout_s` is the claim's lease: a claim not renewed for
    that long belongs to a request that died."""
    if key is None:
        return _respond(*await _answer(work))
    lease = timedelta(seconds=in_flight_timeout_s)
    now = utc_now()
    claim = IdempotencyRow(
        tenant, key, digest, uuid.uuid4(), "started", now, None, None,
        to_stored_time(now + lease), _holder(), uuid.uuid4(),
    )  # fmt: skip
    held = await _claim(store, claim, lease)
    if isinstance(held, Response):
        return held
    return await _carry_out(store, claim, held, lease, work)


async def _claim(
    store: Store, claim: IdempotencyRow, lease: timedelta
) -> Response[Any] | uuid.UUID | None:
    """The stored answer to replay, or, once this request holds the key
    (claimed, or taken over from a request that died), the claim's id seed."""
    existing = await store.claim_key(claim)
    if existing is None:
        IDEMPOTENCY.labels("applied").inc()
        return claim.id_seed
    replay = await _resolve_existing(store, existing, claim, lease)
    if replay is not None:
        IDEMPOTENCY.labels("replayed").inc()
        return replay
    IDEMPOTENCY.labels("taken_over").inc()
    return existing.id_seed


async def _carry_out(
    store: Store,
    claim: IdempotencyRow,
    seed: uuid.UUID | None,
    lease: timedelta,
    work: Callable[[], Awaitable[Answer]],
) -> Response[Any]:
    """Run the work while holding the claim (renewing its lease), and store
    its answer on the key unless the work's last write stored it."""
    tenant, key = claim.tenant, claim.idem_key
    held = _Held(tenant, key, seed)
    token = _HELD.set(held)
    renewing = asyncio.create_task(_keep_claim(store, claim, lease))
    try:
        status, body = await _answer(work)
        if held.answered != (status, body):
            await store.finish_key(KeyAnswer(tenant, key, status, _stored_answer(status, body)))
    except (*CASSANDRA_UNAVAILABLE, ServiceUnavailable):
        await _stop(renewing)
        await _lapse_quietly(store, tenant, key, claim.owner)
        raise
    finally:
        await _stop(renewing)
        _HELD.reset(token)
    return _respond(status, body)


def _stored_answer(status: int, body: bytes) -> bytes:
    return _encoder.encode((status, _media(status), msgspec.Raw(body)))


async def _resolve_existing(
    store: Store, existing: IdempotencyRow, claim: IdempotencyRow, lease: timedelta
) -> Response[Any] | None:
    """A replayed answer, an error, or None when this request took the key over."""
    if existing.request_hash != claim.request_hash:
        IDEMPOTENCY.labels("reused").inc()
        raise IdempotencyKeyReused(
            f"This {HEADER} was first used with a different request body; use a new key for a new request.",
            field=HEADER,
        )
    if existing.state == "done" and existing.response is not None:
        status, media, body = _stored.decode(existing.response)
        return _respond(status, bytes(body), media=media, replayed=True)
    # Claims from before leases existed lapse one lease after they started.
    lapses_at = existing.lease_until or existing.started_at + lease
    if claim.started_at < lapses_at:
        IDEMPOTENCY.labels("in_flight").inc()
        raise RequestInFlight(
            "A request with this Idempotency-Key is still being carried out; retry after the delay.",
            retry_after_s=(lapses_at - claim.started_at).total_seconds(),
        )
    if not await store.take_over_key(existing, claim):
        IDEMPOTENCY.labels("in_flight").inc()
        raise RequestInFlight(
            "Another retry of this request is finishing it; retry after the delay.", retry_after_s=1
        )
    log.info(
        "idempotency_claim_taken_over",
        tenant=claim.tenant,
        lapsed_holder=existing.holder,
        lapsed_s=round((claim.started_at - lapses_at).total_seconds(), 3),
    )
    return None


async def _keep_claim(store: Store, claim: IdempotencyRow, lease: timedelta) -> None:
    """Move the claim's lease forward every third of it until cancelled, or
    until the claim turns out to be lost. A failed renewal is tried again at
    the next tick: two more chances before the lease runs out."""
    every = lease.total_seconds() / 3
    while True:
        await asyncio.sleep(every)
        until = to_stored_time(utc_now() + lease)
        try:
            held = await store.renew_key(claim.tenant, claim.idem_key, claim.owner, until)
        except Exception as exc:  # never fail the request over a renewal
            log.warning("idempotency_renewal_failed", tenant=claim.tenant, error=repr(exc))
            continue
        if not held:
            # Only a holder that could not renew for a whole lease gets here;
            # its work is still an upsert of the same values, so it finishes.
            IDEMPOTENCY.labels("lease_lost").inc()
            log.warning("idempotency_claim_lost", tenant=claim.tenant, owner=str(claim.owner))
            return


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _holder() -> str:
    # Per call, not at import: worker processes are forked from one parent.
    return f"{socket.gethostname()}:{os.getpid()}"


async def _answer(work: Callable[[], Awaitable[Answer]]) -> Answer:
    try:
        return await work()
    except ServiceUnavailable:
        raise
    except ApiError as exc:
        status, body, _headers = problem_body(exc)
        return status, _encoder.encode(body)


async def _lapse_quietly(store: Store, tenant: str, key: str, owner: uuid.UUID) -> None:
    # Ended, not deleted: the retry takes the claim over with its seed, so it
    # finishes whatever this attempt wrote instead of creating new rows. If
    # Cassandra is down this fails too; the lease then runs out by itself.
    with contextlib.suppress(*CASSANDRA_UNAVAILABLE):
        await store.lapse_key(tenant, key, owner, to_stored_time(utc_now()))


def _media(status: int) -> str:
    return PROBLEM_JSON if status >= 400 else "application/json"


def _respond(
    status: int, body: bytes, *, media: str | None = None, replayed: bool = False
) -> Response[Any]:
    headers = {REPLAYED: "true"} if replayed else {}
    return Response(body, status_code=status, media_type=media or _media(status), headers=headers)
