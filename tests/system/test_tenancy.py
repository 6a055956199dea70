"""A tenant sees only its own data, and API keys stay secret.

Tenant B is pointed at everything tenant A owns, through every route of the
OpenAPI document: A's learners, conversations, utterances, counters and
Idempotency-Keys are 404 to B (never 403: B learns nothing, not even that
they exist), and when B uses the same ids for data of its own, neither
tenant sees the other's. Keys are stored hashed, never logged, and a
missing, unknown or revoked key gets a 401 problem document."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.commands.keys import revoke
from api.edge.auth import key_hash
from cql.api_keys import API_KEYS
from cql.insights import InsightRow
from cql.learners import USERS
from dataflows.writers.insight_writer import InsightWriter
from runtime.settings import Settings
from tests.api.test_observability import Server
from tests.conftest import Tenant, new_tenant
from tests.helpers import learner, utterance
from tests.served_seed import Seeder, utc

PROBLEM = "application/problem+json"
PUBLIC = {("GET", "/health"), ("GET", "/ready")}
# Streams never end, which the in-process client cannot read: their tenancy
# is tested against a real server in tests/api/test_live.py
# (test_tenant_a_never_receives_tenant_b_events, by key and by ticket).
LIVE = {("GET", "/v1/live"), ("POST", "/v1/live/tickets")}
ERRORS_QUERY = {"window": "hour", "from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}
LEARNING_QUERY = {"granularity": "day", "from": "2026-03-01", "to": "2026-03-02", "tz": "UTC"}
INSIGHTS_QUERY = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}
LISTING_QUERY = {"from": "2026-03-01", "to": "2026-03-02"}


@dataclass
class World:
    """Tenant A's data, and tenant B who goes looking for it."""

    a: Tenant
    b: Tenant
    user_id: str
    conversation_id: str
    utterance_id: str
    idempotency_key: str


def operations() -> set[tuple[str, str]]:
    """(METHOD, path) of every operation the API documents."""
    schema = create_app(Settings()).openapi_schema.to_schema()
    return {(method.upper(), path) for path, item in schema["paths"].items() for method in item}


def _insight(tenant: str, utterance_id: str, user_id: str, ts: datetime) -> InsightRow:
    return InsightRow(
        tenant, utterance_id, user_id, ts.replace(tzinfo=None), 0.5, ["travel"], 0.9,
        "because", "fake-model", "insights-v1", "strict", 1, 12, None, ts.replace(tzinfo=None),
    )  # fmt: skip


@pytest.fixture
async def world(client: httpx.AsyncClient, db, migrated: Settings) -> World:
    a, b = new_tenant(db), new_tenant(db)
    user_id, conversation_id = await learner(client, a.headers)
    utterance_id = f"utt-{uuid.uuid4().hex[:8]}"
    key = f"shared-{uuid.uuid4()}"
    body = utterance(user_id, conversation_id, utterance_id=utterance_id, text="A's sentence.")
    r = await client.post("/v1/utterances", json=body, headers=a.headers | {"Idempotency-Key": key})
    assert r.status_code == 202, r.text
    seed = Seeder(db, a.name)
    seed.error_count(user_id, "hour", utc(2026, 3, 1, 10), "grammar", "articles", 3)
    seed.error_total(user_id, "grammar", "articles", 3)
    seed.learning_bucket(user_id, utc(2026, 3, 1, 10), entries=2, words=7)
    writer = InsightWriter(db, migrated)
    for minute, uid in ((1, utterance_id), (2, f"{utterance_id}-2")):
        await writer.record(_insight(a.name, uid, user_id, utc(2026, 3, 1, 10, minute)), None)
    world = World(a, b, user_id, conversation_id, utterance_id, key)
    await _a_sees_its_own_data(client, world)
    return world


async def _a_sees_its_own_data(client: httpx.AsyncClient, w: World) -> None:
    """So that B's 404s below are about tenancy, not about missing data."""
    h = w.a.headers
    r = await client.get(f"/v1/utterances/{w.utterance_id}", headers=h)
    assert r.status_code == 200 and r.json()["text"] == "A's sentence."
    r = await client.get(f"/v1/users/{w.user_id}/errors", params=ERRORS_QUERY, headers=h)
    assert r.status_code == 200 and r.json()["windows"][0]["counts"][0]["count"] == 3
    r = await client.get(f"/v1/users/{w.user_id}/errors/top", headers=h)
    assert r.status_code == 200 and r.json()["errors"][0]["count"] == 3
    r = await client.get(f"/v1/users/{w.user_id}/learning", params=LEARNING_QUERY, headers=h)
    assert r.status_code == 200 and r.json()["periods"][0]["total_words"] == 7
    r = await client.get("/v1/insights", params=INSIGHTS_QUERY, headers=h)
    assert r.status_code == 200 and len(r.json()["insights"]) == 2
    r = await client.post(f"/v1/users/{w.user_id}/exercises", json={}, headers=h)
    assert r.status_code == 200 and r.json()["targets"][0]["count"] == 3


def _not_found(r: httpx.Response, field: str | None = None) -> None:
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/not-found")
    if field is not None:
        assert r.json()["field"] == field


# ---- B aimed at A's data, route by route

Case = Callable[[httpx.AsyncClient, World], Awaitable[None]]


async def _create_user(client: httpx.AsyncClient, w: World) -> None:
    # B may use the same user_id for a learner of its own: ids are per
    # tenant, so this creates B's learner and leaves A's alone. A 409 here
    # would tell B that A's learner exists.
    body = {"user_id": w.user_id, "email": "b@example.com", "name": "Bea"}
    r = await client.post("/v1/users", json=body, headers=w.b.headers)
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "b@example.com"


async def _create_conversation(client: httpx.AsyncClient, w: World) -> None:
    r = await client.post("/v1/conversations", json={"user_id": w.user_id}, headers=w.b.headers)
    _not_found(r, "user_id")


async def _accept_utterance(client: httpx.AsyncClient, w: World) -> None:
    body = utterance(w.user_id, w.conversation_id, utterance_id=w.utterance_id)
    r = await client.post("/v1/utterances", json=body, headers=w.b.headers)
    _not_found(r, "conversation_id")


async def _accept_batch(client: httpx.AsyncClient, w: World) -> None:
    items = [utterance(w.user_id, w.conversation_id, utterance_id=w.utterance_id)]
    r = await client.post("/v1/utterances/batch", json={"utterances": items}, headers=w.b.headers)
    assert r.status_code == 202, r.text
    (item,) = r.json()["results"]
    assert item["status"] == 404 and item["error"].endswith("/not-found")


async def _get_utterance(client: httpx.AsyncClient, w: World) -> None:
    r = await client.get(f"/v1/utterances/{w.utterance_id}", headers=w.b.headers)
    _not_found(r)
    # Exactly what an id that exists nowhere gets, bar the id in the detail.
    never = await client.get("/v1/utterances/never-existed", headers=w.b.headers)
    assert {k: v for k, v in r.json().items() if k not in ("detail", "instance")} == {
        k: v for k, v in never.json().items() if k not in ("detail", "instance")
    }


async def _get_errors(client: httpx.AsyncClient, w: World) -> None:
    r = await client.get(f"/v1/users/{w.user_id}/errors", params=ERRORS_QUERY, headers=w.b.headers)
    _not_found(r, "user_id")


async def _get_top_errors(client: httpx.AsyncClient, w: World) -> None:
    _not_found(
        await client.get(f"/v1/users/{w.user_id}/errors/top", headers=w.b.headers), "user_id"
    )


async def _get_learning(client: httpx.AsyncClient, w: World) -> None:
    r = await client.get(
        f"/v1/users/{w.user_id}/learning", params=LEARNING_QUERY, headers=w.b.headers
    )
    _not_found(r, "user_id")


async def _create_exercises(client: httpx.AsyncClient, w: World) -> None:
    r = await client.post(f"/v1/users/{w.user_id}/exercises", json={}, headers=w.b.headers)
    _not_found(r, "user_id")


async def _list_insights(client: httpx.AsyncClient, w: World) -> None:
    r = await client.get("/v1/insights", params=INSIGHTS_QUERY, headers=w.b.headers)
    assert r.status_code == 200, r.text
    assert r.json()["insights"] == []
    # A's learner is unknown to B, as on every per-learner read.
    params = INSIGHTS_QUERY | {"user_id": w.user_id}
    _not_found(await client.get("/v1/insights", params=params, headers=w.b.headers), "user_id")
    # A's page token leads B nowhere.
    page = await client.get(
        "/v1/insights", params=INSIGHTS_QUERY | {"limit": 1}, headers=w.a.headers
    )
    token = page.json()["next_page_token"]
    assert token
    r = await client.get(
        "/v1/insights",
        params=INSIGHTS_QUERY | {"limit": 1, "page_token": token},
        headers=w.b.headers,
    )
    assert r.status_code == 400 and r.json()["field"] == "page_token", r.text


async def _ask(client: httpx.AsyncClient, w: World) -> None:
    # A's learner and utterance are unknown to B: a question naming them is
    # to be clarified, with no data, whichever read it plans.
    for question in (
        f"top errors of learner {w.user_id}",
        f"errors per hour of learner {w.user_id} on 2026-03-01",
        f"words practised per day by learner {w.user_id} on 2026-03-01",
        f"insights of learner {w.user_id} on 2026-03-01",
        f"show utterance {w.utterance_id}",
    ):
        r = await client.post("/v1/ask", json={"question": question}, headers=w.b.headers)
        assert r.status_code == 422, r.text
        assert "clarify" in r.json() and "data" not in r.json(), r.text
    # B's own insights of A's day: none of A's.
    r = await client.post(
        "/v1/ask", json={"question": "insights on 2026-03-01"}, headers=w.b.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["insights"] == []


async def _list_users(client: httpx.AsyncClient, w: World) -> None:
    r = await client.get("/v1/users", params={"prefix": w.user_id}, headers=w.b.headers)
    assert r.status_code == 200, r.text
    assert r.json()["users"] == []


async def _get_user(client: httpx.AsyncClient, w: World) -> None:
    _not_found(await client.get(f"/v1/users/{w.user_id}", headers=w.b.headers), "user_id")


async def _list_conversations(client: httpx.AsyncClient, w: World) -> None:
    r = await client.get(f"/v1/users/{w.user_id}/conversations", headers=w.b.headers)
    _not_found(r, "user_id")


async def _list_user_utterances(client: httpx.AsyncClient, w: World) -> None:
    r = await client.get(
        f"/v1/users/{w.user_id}/utterances", params=LISTING_QUERY, headers=w.b.headers
    )
    _not_found(r, "user_id")


async def _list_conversation_utterances(client: httpx.AsyncClient, w: World) -> None:
    r = await client.get(f"/v1/conversations/{w.conversation_id}/utterances", headers=w.b.headers)
    _not_found(r, "conversation_id")


async def _erase_user(client: httpx.AsyncClient, w: World) -> None:
    _not_found(await client.delete(f"/v1/users/{w.user_id}", headers=w.b.headers), "user_id")
    # A's learner is still there for A.
    r = await client.get(f"/v1/users/{w.user_id}", headers=w.a.headers)
    assert r.status_code == 200, r.text


MATRIX: dict[tuple[str, str], Case] = {
    ("GET", "/v1/users"): _list_users,
    ("GET", "/v1/users/{user_id}"): _get_user,
    ("DELETE", "/v1/users/{user_id}"): _erase_user,
    ("GET", "/v1/users/{user_id}/conversations"): _list_conversations,
    ("GET", "/v1/users/{user_id}/utterances"): _list_user_utterances,
    ("GET", "/v1/conversations/{conversation_id}/utterances"): _list_conversation_utterances,
    ("POST", "/v1/users"): _create_user,
    ("POST", "/v1/conversations"): _create_conversation,
    ("POST", "/v1/utterances"): _accept_utterance,
    ("POST", "/v1/utterances/batch"): _accept_batch,
    ("GET", "/v1/utterances/{utterance_id}"): _get_utterance,
    ("GET", "/v1/users/{user_id}/errors"): _get_errors,
    ("GET", "/v1/users/{user_id}/errors/top"): _get_top_errors,
    ("GET", "/v1/users/{user_id}/learning"): _get_learning,
    ("POST", "/v1/users/{user_id}/exercises"): _create_exercises,
    ("GET", "/v1/insights"): _list_insights,
    ("POST", "/v1/ask"): _ask,
}


def test_the_matrix_covers_every_documented_route() -> None:
    assert operations() - PUBLIC - LIVE == set(MATRIX)


async def test_b_cannot_reach_a_through_any_route(client: httpx.AsyncClient, world: World) -> None:
    # Reads first, while B has no learner of that id; the user write last.
    for operation, case in sorted(MATRIX.items(), key=lambda kv: kv[0] == ("POST", "/v1/users")):
        try:
            await case(client, world)
        except AssertionError as exc:
            raise AssertionError(f"{operation}: {exc}") from exc
    await _a_sees_its_own_data(client, world)


async def test_same_ids_in_two_tenants_stay_apart(
    client: httpx.AsyncClient, world: World, db
) -> None:
    w, b = world, world.b.headers
    await _create_user(client, w)
    # B's learner of the same id has none of A's counters.
    r = await client.get(f"/v1/users/{w.user_id}/errors", params=ERRORS_QUERY, headers=b)
    assert r.status_code == 200 and r.json()["windows"] == []
    r = await client.get(f"/v1/users/{w.user_id}/errors/top", headers=b)
    assert r.status_code == 200 and r.json()["errors"] == []
    r = await client.get(f"/v1/users/{w.user_id}/learning", params=LEARNING_QUERY, headers=b)
    assert r.status_code == 200 and r.json()["periods"][0]["total_words"] == 0
    r = await client.post(f"/v1/users/{w.user_id}/exercises", json={}, headers=b)
    assert r.status_code == 200 and r.json()["targets"] == []
    r = await client.get("/v1/insights", params=INSIGHTS_QUERY | {"user_id": w.user_id}, headers=b)
    assert r.status_code == 200 and r.json()["insights"] == []
    # B's conversation and utterance of the same ids are new, not conflicts
    # with (nor duplicates of) A's.
    body = {"user_id": w.user_id, "conversation_id": w.conversation_id}
    r = await client.post("/v1/conversations", json=body, headers=b)
    assert r.status_code == 201, r.text
    mine = utterance(
        w.user_id, w.conversation_id, utterance_id=w.utterance_id, text="B's sentence."
    )
    r = await client.post("/v1/utterances", json=mine, headers=b)
    assert r.status_code == 202 and r.json()["duplicate"] is False, r.text
    # The same Idempotency-Key is B's own: carried out, neither replayed nor 422.
    r = await client.post(
        "/v1/utterances",
        json=utterance(w.user_id, w.conversation_id, text="Keyed."),
        headers=b | {"Idempotency-Key": w.idempotency_key},
    )
    assert r.status_code == 202 and "idempotent-replayed" not in r.headers

    theirs = await client.get(f"/v1/utterances/{w.utterance_id}", headers=b)
    assert theirs.json()["text"] == "B's sentence."
    assert theirs.json()["insight"] is None  # A's insight of the same id stays A's
    ours = await client.get(f"/v1/utterances/{w.utterance_id}", headers=w.a.headers)
    assert ours.json()["text"] == "A's sentence."
    a_user = db.session.execute(
        db.prepare(USERS.select(columns=("email",))), (w.a.name, w.user_id)
    ).one()
    assert a_user[0] != "b@example.com"
    await _a_sees_its_own_data(client, w)


# ---- keys


def _request_for(operation: tuple[str, str]) -> dict[str, Any]:
    method, path = operation
    url = path.replace("{utterance_id}", "x").replace("{user_id}", "x")
    url = url.replace("{conversation_id}", "x")
    return {"method": method, "url": url, "json": {} if method == "POST" else None}


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwdw==",
        "Bearer nope",
        "Bearer us_unknown_key",
        "bearer us_" + "x" * 300,
    ],
)
async def test_every_route_refuses_a_missing_or_unknown_key(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for operation in sorted(MATRIX):
        r = await client.request(**_request_for(operation), headers=headers)
        assert r.status_code == 401, (operation, r.text)
        assert r.headers["content-type"] == PROBLEM
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["detail"]


async def test_a_revoked_key_is_401(client: httpx.AsyncClient, db) -> None:
    gone = new_tenant(db)
    revoke(db, gone.key)
    r = await client.get("/v1/utterances/x", headers=gone.headers)
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_keys_are_stored_hashed(db) -> None:
    tenant = new_tenant(db)
    columns = list(API_KEYS.columns)
    row = db.session.execute(
        db.prepare(API_KEYS.select(columns=tuple(columns))), (key_hash(tenant.key),)
    ).one()
    assert row is not None
    stored = dict(zip(columns, row, strict=True))
    assert stored["key_hash"] == key_hash(tenant.key)
    # us_<key id>_<secret>; the secret is base64url, so it may hold "_" too.
    secret = tenant.key.split("_", 2)[2]
    assert len(secret) > 20
    for value in stored.values():
        raw = value if isinstance(value, bytes) else str(value).encode()
        assert tenant.key.encode() not in raw and secret.encode() not in raw
    # No column that could hold a key in clear.
    schema = db.session.execute(
        "SELECT column_name, type FROM system_schema.columns WHERE keyspace_name = %s AND table_name = 'api_keys'",
        (db.keyspace,),
    ).all()
    assert {name for name, _ in schema} == set(columns)
    assert [name for name, kind in schema if kind == "blob"] == ["key_hash"]


def test_keys_never_reach_the_log(migrated: Settings, db) -> None:
    tenant = new_tenant(db)
    stranger = "us_0123456789ab_" + "S3cr3t" * 7
    server = Server(migrated, extra_env={"UTTERSTREAM_LOG_LEVEL": "DEBUG"})
    try:
        with httpx.Client(base_url=server.url) as c:
            user = {"email": "k@example.com", "name": "Key"}
            assert c.post("/v1/users", json=user, headers=tenant.headers).status_code == 201
            assert c.get("/v1/utterances/x", headers=tenant.headers).status_code == 404
            assert c.post("/v1/utterances", content=b"{", headers=tenant.headers).status_code == 400
            assert (
                c.get(
                    "/v1/utterances/x", headers={"Authorization": f"Bearer {stranger}"}
                ).status_code
                == 401
            )
            assert c.get("/v1/utterances/x", headers={"Authorization": stranger}).status_code == 401
    finally:
        server.stop()
    log = open(server.log_path, encoding="utf-8", errors="replace").read()  # noqa: SIM115
    assert tenant.name in log, "the log holds the access lines"
    for key in (tenant.key, stranger):
        assert key not in log
        assert key.split("_", 2)[2] not in log  # the secret, which may hold "_" too
