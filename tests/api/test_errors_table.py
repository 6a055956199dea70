"""Every error answer is an RFC 9457 problem document: one test per row of
api/errors.py ERROR_TABLE, each triggered by a real request, plus what the
framework answers (405, 404 route, 413, malformed JSON), the driver errors
mapped to 503, an unexpected error (500), and a key lookup that meets a
Cassandra outage."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from cassandra import OperationTimedOut, WriteTimeout, WriteType
from cassandra.cluster import NoHostAvailable
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.edge.idempotency import request_hash
from api.edge.problems import CASSANDRA_UNAVAILABLE, ERROR_TABLE, TYPE_BASE, ApiError
from api.shapes import UtteranceIn
from cql.clock import utc_now
from cql.utterances import IDEMPOTENCY_KEYS, IdempotencyRow
from runtime.settings import RedisSettings, Settings
from tests.conftest import Tenant, free_port, new_tenant
from tests.helpers import learner, utterance

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].split(";")[0] == PROBLEM
    body = r.json()
    assert body["status"] == status
    assert body["type"].startswith(TYPE_BASE)
    if slug is not None:
        assert body["type"] == TYPE_BASE + slug
    assert body["title"].strip() and body["detail"].strip(), body
    return body


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


# ---- one trigger per ERROR_TABLE row: (client, tenant, db, settings) -> response

Trigger = Callable[[httpx.AsyncClient, Tenant, Any, Settings], Awaitable[httpx.Response]]


async def _bad_request(client, tenant, db, settings) -> httpx.Response:
    body = {"email": 42, "name": "Ana"}
    return await client.post("/v1/users", json=body, headers=tenant.headers)


async def _unauthorized(client, tenant, db, settings) -> httpx.Response:
    r = await client.get("/v1/utterances/any")
    assert r.headers["www-authenticate"].startswith("Bearer")
    return r


async def _not_found(client, tenant, db, settings) -> httpx.Response:
    return await client.get("/v1/utterances/no-such-utterance", headers=tenant.headers)


async def _conflict(client, tenant, db, settings) -> httpx.Response:
    user = {"user_id": "u-conflict", "email": "a@example.com", "name": "Ana"}
    assert (await client.post("/v1/users", json=user, headers=tenant.headers)).status_code == 201
    return await client.post("/v1/users", json=user | {"name": "Bea"}, headers=tenant.headers)


async def _request_in_flight(client, tenant, db, settings) -> httpx.Response:
    user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance(user_id, conversation_id)
    digest = request_hash("POST", "/v1/utterances", msgspec.convert(body, UtteranceIn))
    claim = IdempotencyRow(
        tenant.name, "k-busy", digest, uuid.uuid4(), "started", utc_now(), None, None
    )
    db.session.execute(db.prepare(IDEMPOTENCY_KEYS.insert()), IDEMPOTENCY_KEYS.values(claim))
    r = await client.post(
        "/v1/utterances", json=body, headers=tenant.headers | {"Idempotency-Key": "k-busy"}
    )
    assert int(r.headers["retry-after"]) >= 1
    return r


async def _key_reused(client, tenant, db, settings) -> httpx.Response:
    user_id, conversation_id = await learner(client, tenant.headers)
    headers = tenant.headers | {"Idempotency-Key": "k-reused"}
    first = await client.post(
        "/v1/utterances", json=utterance(user_id, conversation_id), headers=headers
    )
    assert first.status_code == 202
    other = utterance(user_id, conversation_id, text="Another sentence.")
    return await client.post("/v1/utterances", json=other, headers=headers)


async def _unprocessable(client, tenant, db, settings) -> httpx.Response:
    _user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance("someone-else", conversation_id)
    return await client.post("/v1/utterances", json=body, headers=tenant.headers)


async def _rate_limited(client, tenant, db, settings) -> httpx.Response:
    slow = new_tenant(db, rate=0.01, burst=1)
    assert (await client.get("/v1/utterances/x", headers=slow.headers)).status_code == 404
    r = await client.get("/v1/utterances/x", headers=slow.headers)
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["ratelimit-limit"] == "1" and r.headers["ratelimit-remaining"] == "0"
    return r


async def _unavailable(client, tenant, db, settings) -> httpx.Response:
    # A deployment that refuses what it cannot count, and a Redis that is not there.
    closed = msgspec.structs.replace(
        settings,
        api=msgspec.structs.replace(settings.api, redis_failure_policy="closed"),
        redis=RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"),
    )
    async with app_client(closed) as down:
        r = await down.get("/v1/utterances/x", headers=tenant.headers)
    assert int(r.headers["retry-after"]) >= 1
    return r


TRIGGERS: dict[str, Trigger] = {
    "BadRequest": _bad_request,
    "Unauthorized": _unauthorized,
    "NotFound": _not_found,
    "Conflict": _conflict,
    "RequestInFlight": _request_in_flight,
    "IdempotencyKeyReused": _key_reused,
    "Unprocessable": _unprocessable,
    "RateLimited": _rate_limited,
    "ServiceUnavailable": _unavailable,
}


def test_every_row_has_a_trigger() -> None:
    assert {exc.__name__ for exc in ERROR_TABLE} == set(TRIGGERS)


@pytest.mark.parametrize("error", list(ERROR_TABLE), ids=lambda e: e.__name__)
async def test_error_table_row(
    error: type[ApiError], client, tenant, db, migrated: Settings
) -> None:
    status, slug, title = ERROR_TABLE[error]
    r = await TRIGGERS[error.__name__](client, tenant, db, migrated)
    body = assert_problem(r, status, slug)
    assert body["title"] == title
    assert r.headers["x-request-id"]


# ---- what the framework answers


async def test_method_not_allowed_is_405(client, tenant) -> None:
    r = await client.delete("/v1/users", headers=tenant.headers)
    assert_problem(r, 405, "method-not-allowed")


async def test_unknown_route_is_404(client, tenant) -> None:
    assert_problem(await client.get("/v1/nothing-here", headers=tenant.headers), 404)


async def test_oversized_body_is_413(client, tenant, migrated: Settings) -> None:
    raw = b'{"text": "' + b"a" * (migrated.api.max_body_bytes + 1) + b'"}'
    headers = tenant.headers | {"content-type": "application/json"}
    body = assert_problem(await client.post("/v1/utterances", content=raw, headers=headers), 413)
    assert str(migrated.api.max_body_bytes) in body["detail"]


@pytest.mark.parametrize("raw", [b'{"user_id": ', b"\xff\xfe", b"", b"[1, 2"])
async def test_malformed_json_is_400(client, tenant, raw: bytes) -> None:
    headers = tenant.headers | {"content-type": "application/json"}
    assert_problem(await client.post("/v1/users", content=raw, headers=headers), 400)


# ---- what the driver and the unexpected answer


def _driver_error(kind: type[Exception]) -> Exception:
    if kind is NoHostAvailable:
        return NoHostAvailable("Unable to connect to any servers", {})
    if kind is WriteTimeout:
        return WriteTimeout("timed out", write_type=WriteType.SIMPLE)
    return kind("timed out")


@pytest.mark.parametrize("kind", CASSANDRA_UNAVAILABLE, ids=lambda k: k.__name__)
async def test_cassandra_cannot_serve_is_503_with_retry_after(
    kind: type[Exception], client, tenant, monkeypatch
) -> None:
    async def fails(*_args: Any) -> None:
        raise _driver_error(kind)

    monkeypatch.setattr(client.app.state.services.store, "utterance", fails)
    r = await client.get("/v1/utterances/x", headers=tenant.headers)
    assert_problem(r, 503, "unavailable")
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-request-id"]


async def test_key_lookup_during_an_outage_is_503_not_500(client, db, monkeypatch) -> None:
    fresh = new_tenant(db)  # not in any key cache yet, so the lookup reaches Cassandra

    async def fails(*_args: Any) -> None:
        raise OperationTimedOut("timed out")

    monkeypatch.setattr(client.app.state.services.store, "api_key", fails)
    r = await client.get("/v1/utterances/x", headers=fresh.headers | {"X-Request-ID": "outage-1"})
    assert_problem(r, 503, "unavailable")
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-request-id"] == "outage-1"


async def test_unexpected_error_is_a_500_problem_that_hides_the_cause(
    client, tenant, monkeypatch
) -> None:
    async def fails(*_args: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(client.app.state.services.store, "utterance", fails)
    r = await client.get("/v1/utterances/x", headers=tenant.headers)
    body = assert_problem(r, 500, "internal")
    assert "secret internals" not in r.text and body["detail"]
