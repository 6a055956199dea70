"""The Idempotency-Key protocol of every POST (SPEC, "Idempotency").

A request with a key first claims it with `INSERT ... IF NOT EXISTS`, storing
a hash of the request and a random owner id. Then:

- the claim applied: carry the request out, store its answer (status and
  body) on the key, answer;
- the key holds another request's hash: 422;
- the key is done: replay the stored answer with `Idempotent-Replayed: true`;
- the key is claimed but unfinished and young: 409 with Retry-After;
- the key is claimed, unfinished and older than the in-flight timeout: the
  request that claimed it died half-way. Take the claim over by CAS on the
  owner (so only one retry wins) and carry the request out again. Every
  write a request makes is an idempotent upsert of the same values (ids are
  derived from the key), so finishing the dead request's work is safe.

Answers with 2xx and 4xx statuses are stored; a request that failed because
Cassandra was unavailable releases its claim, so the retry starts afresh.
Requests without a key are simply carried out.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
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
from cql.clock import utc_now
from cql.utterances import IdempotencyRow

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


def derived_id(tenant: str, key: str, index: int = 0) -> str:
    """A resource id fixed by the key, so a retry that finishes a dead
    request's work writes to the very same rows."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"utterstream:{tenant}:{key}:{index}"))


async def run(
    store: Store,
    *,
    tenant: str,
    key: str | None,
    digest: bytes,
    in_flight_timeout_s: float,
    work: Callable[[], Awaitable[Answer]],
) -> Response[Any]:
    if key is None:
        return _respond(*await _answer(work))
    owner = uuid.uuid4()
    now = utc_now()
    claim = IdempotencyRow(tenant, key, digest, owner, "started", now, None, None)
    existing = await store.claim_key(claim)
    if existing is not None:
        replay = await _resolve_existing(store, existing, claim, in_flight_timeout_s)
        if replay is not None:
            IDEMPOTENCY.labels("replayed").inc()
            return replay
        IDEMPOTENCY.labels("taken_over").inc()
    else:
        IDEMPOTENCY.labels("applied").inc()
    try:
        status, body = await _answer(work)
    except (*CASSANDRA_UNAVAILABLE, ServiceUnavailable):
        await _release_quietly(store, tenant, key, owner)
        raise
    await store.finish_key(
        tenant, key, status, _encoder.encode((status, _media(status), msgspec.Raw(body)))
    )
    return _respond(status, body)


async def _resolve_existing(
    store: Store, existing: IdempotencyRow, claim: IdempotencyRow, timeout_s: float
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
    age = (claim.started_at - existing.started_at).total_seconds()
    if age < timeout_s:
        IDEMPOTENCY.labels("in_flight").inc()
        raise RequestInFlight(
            "A request with this Idempotency-Key is still being carried out; retry after the delay.",
            retry_after_s=max(1.0, min(timeout_s - age, 5.0)),
        )
    taken = await store.take_over_key(
        claim.tenant, claim.idem_key, existing.owner, claim.owner, claim.started_at
    )
    if not taken:
        raise RequestInFlight(
            "Another retry of this request is finishing it; retry after the delay.", retry_after_s=1
        )
    return None


async def _answer(work: Callable[[], Awaitable[Answer]]) -> Answer:
    try:
        return await work()
    except ServiceUnavailable:
        raise
    except ApiError as exc:
        status, body, _headers = problem_body(exc)
        return status, _encoder.encode(body)


async def _release_quietly(store: Store, tenant: str, key: str, owner: uuid.UUID) -> None:
    # If Cassandra is down the release fails too; the claim then ages past
    # the in-flight timeout and the retry takes it over.
    with contextlib.suppress(*CASSANDRA_UNAVAILABLE):
        await store.release_key(tenant, key, owner)


def _media(status: int) -> str:
    return PROBLEM_JSON if status >= 400 else "application/json"


def _respond(
    status: int, body: bytes, *, media: str | None = None, replayed: bool = False
) -> Response[Any]:
    headers = {REPLAYED: "true"} if replayed else {}
    return Response(body, status_code=status, media_type=media or _media(status), headers=headers)
