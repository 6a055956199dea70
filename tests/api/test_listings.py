"""The listings: every row written is found, once, walking the pages with
their tokens; filters (prefix, from/to) select exactly what they say; bad
tokens, limits and ranges are 400 problems naming the parameter; unknown
learners and conversations are 404."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant
from tests.helpers import learner, utterance


async def walk(
    client: httpx.AsyncClient, tenant: Tenant, path: str, key: str, **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every row of a listing, page by page; and how many pages it took."""
    rows: list[dict[str, Any]] = []
    pages = 0
    token = None
    while True:
        asked = params | ({"page_token": token} if token else {})
        r = await client.get(path, params=asked, headers=tenant.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        rows += body[key]
        pages += 1
        token = body["next_page_token"]
        if token is None:
            return rows, pages


async def create_user(client: httpx.AsyncClient, tenant: Tenant, user_id: str) -> None:
    r = await client.post(
        "/v1/users",
        json={"user_id": user_id, "email": f"{user_id}@example.com", "name": "Ana"},
        headers=tenant.headers,
    )
    assert r.status_code == 201, r.text


async def test_learners_are_listed_in_id_order_page_by_page_and_by_prefix(client, tenant):
    ids = [f"ana-{i:02d}" for i in range(9)] + [f"bo-{i}" for i in range(4)] + ["anabel"]
    for user_id in reversed(ids):
        await create_user(client, tenant, user_id)
    rows, pages = await walk(client, tenant, "/v1/users", "users", limit=3)
    assert [u["user_id"] for u in rows] == sorted(ids)
    assert pages == 5
    assert rows[0]["email"] == "ana-00@example.com" and rows[0]["created_at"]
    by_prefix, _ = await walk(client, tenant, "/v1/users", "users", prefix="ana-", limit=4)
    assert [u["user_id"] for u in by_prefix] == sorted(i for i in ids if i.startswith("ana-"))
    exact, pages = await walk(client, tenant, "/v1/users", "users", prefix="anabel")
    assert ([u["user_id"] for u in exact], pages) == (["anabel"], 1)


async def test_another_tenants_learners_are_not_listed(client, tenant, db):
    from tests.conftest import new_tenant

    other = new_tenant(db)
    await create_user(client, other, "only-other")
    rows, _ = await walk(client, tenant, "/v1/users", "users")
    assert rows == []
    r = await client.get("/v1/users/only-other", headers=tenant.headers)
    assert r.status_code == 404


async def test_one_learner_and_an_unknown_one(client, tenant):
    await create_user(client, tenant, "cleo")
    r = await client.get("/v1/users/cleo", headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "cleo@example.com"
    r = await client.get("/v1/users/nobody", headers=tenant.headers)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == "user_id"


async def test_a_learners_conversations_page_by_page(client, tenant):
    user_id, first = await learner(client, tenant.headers)
    made = [first]
    for i in range(4):
        r = await client.post(
            "/v1/conversations",
            json={"user_id": user_id, "conversation_id": f"c-{i}", "title": f"T{i}"},
            headers=tenant.headers | {"Idempotency-Key": f"conv-{uuid.uuid4()}"},
        )
        assert r.status_code == 201, r.text
        made.append(f"c-{i}")
    path = f"/v1/users/{user_id}/conversations"
    rows, pages = await walk(client, tenant, path, "conversations", limit=2)
    assert [c["conversation_id"] for c in rows] == sorted(made)
    assert pages == 3
    assert {c["title"] for c in rows} == {None, "T0", "T1", "T2", "T3"}
    r = await client.get("/v1/users/nobody/conversations", headers=tenant.headers)
    assert r.status_code == 404


async def post(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]) -> str:
    r = await client.post("/v1/utterances", json=body, headers=tenant.headers)
    assert r.status_code == 202, r.text
    return r.json()["utterance_id"]


async def test_a_learners_utterances_of_a_range_in_time_order(client, tenant):
    user_id, conversation_id = await learner(client, tenant.headers)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    offsets = [timedelta(hours=h) for h in (0, 1, 5, 23, 24, 49, 49, 24 * 40)]
    sent = {}
    for i, offset in enumerate(offsets):
        ts = base + offset
        body = utterance(user_id, conversation_id, timestamp=ts.isoformat(), text=f"say {i}")
        sent[await post(client, tenant, body)] = ts
    # Another learner's utterance on the same day is not listed.
    other, other_conversation = await learner(client, tenant.headers)
    await post(client, tenant, utterance(other, other_conversation, timestamp=base.isoformat()))
    path = f"/v1/users/{user_id}/utterances"
    rows, pages = await walk(
        client, tenant, path, "utterances", limit=2, **{"from": "2026-03-01", "to": "2026-03-03"}
    )
    inside = sorted((ts, i) for i, ts in sent.items() if ts < base + timedelta(days=2))
    assert [(datetime.fromisoformat(u["timestamp"]), u["utterance_id"]) for u in rows] == inside
    assert pages == 3
    first = rows[0]
    assert first["text"] == "say 0" and first["words_learned"] == 3
    assert first["errors"][0] == {"category": "grammar", "subcategory": "past tense"}
    assert first["conversation_id"] == conversation_id and first["status"] in (
        "pending", "processing", "completed",
    )  # fmt: skip
    # `to` is exclusive and RFC 3339 bounds are exact.
    cut, _ = await walk(
        client,
        tenant,
        path,
        "utterances",
        **{"from": "2026-03-01T01:00:00Z", "to": "2026-03-02T00:00:00+00:00"},
    )
    assert [u["text"] for u in cut] == ["say 1", "say 2", "say 3"]


async def test_a_conversations_utterances_batch_posted_too(client, tenant):
    user_id, conversation_id = await learner(client, tenant.headers)
    now = datetime.now(UTC)
    items = [
        utterance(user_id, conversation_id, timestamp=(now - timedelta(minutes=i)).isoformat())
        for i in range(5)
    ]
    r = await client.post(
        "/v1/utterances/batch", json={"utterances": items}, headers=tenant.headers
    )
    assert r.status_code == 202, r.text
    ids = [res["utterance_id"] for res in r.json()["results"]]
    path = f"/v1/conversations/{conversation_id}/utterances"
    rows, pages = await walk(client, tenant, path, "utterances", limit=4)
    assert [u["utterance_id"] for u in rows] == list(reversed(ids))
    assert pages == 2
    r = await client.get("/v1/conversations/nothing/utterances", headers=tenant.headers)
    assert r.status_code == 404 and r.json()["field"] == "conversation_id"


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/users", {"limit": "0"}, "limit"),
        ("/v1/users", {"limit": "101"}, "limit"),
        ("/v1/users", {"page_token": "not-a-token"}, "page_token"),
        ("/v1/users", {"prefix": "a b"}, "prefix"),
        ("/v1/users", {"preffix": "a"}, "preffix"),
        ("/v1/users/{u}/utterances", {"from": "2026-01-01"}, "to"),
        ("/v1/users/{u}/utterances", {"from": "2026-01-01", "to": "2026-04-04"}, "to"),
        ("/v1/users/{u}/utterances", {"from": "2026-01-02", "to": "2026-01-01"}, "to"),
        ("/v1/users/{u}/utterances", {"from": "yesterday", "to": "2026-01-01"}, "from"),
        ("/v1/users/{u}/conversations", {"page_token": "AAAA"}, "page_token"),
    ],
)
async def test_bad_parameters_are_problems_naming_them(client, tenant, path, params, field):
    user_id, _ = await learner(client, tenant.headers)
    r = await client.get(path.format(u=user_id), params=params, headers=tenant.headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == field


async def test_a_token_of_another_listing_or_filter_is_refused(client, tenant):
    for i in range(3):
        await create_user(client, tenant, f"dee-{i}")
    r = await client.get("/v1/users", params={"limit": 1}, headers=tenant.headers)
    token = r.json()["next_page_token"]
    assert token
    for path, params in [
        ("/v1/users", {"prefix": "dee-1"}),
        ("/v1/users/dee-0/conversations", {}),
    ]:
        r = await client.get(path, params=params | {"page_token": token}, headers=tenant.headers)
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "page_token"
