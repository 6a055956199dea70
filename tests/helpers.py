"""Small builders shared by the API tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from runtime.settings import Settings
    from tests.conftest import ApiProcess


def utterance(user_id: str, conversation_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "conversation_id": conversation_id,
        "user_id": user_id,
        "text": "Yesterday I goed to the market and buyed apples.",
        "timestamp": datetime.now(UTC).isoformat(),
        "errors": [
            {"category": "grammar", "subcategory": "past tense"},
            {"category": "vocabulary", "subcategory": "word choice"},
        ],
        "words_learned": 3,
    }
    body.update(overrides)
    return body


async def learner(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, str]:
    """Create a learner and a conversation; return their ids."""
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    r = await client.post(
        "/v1/users",
        json={"user_id": user_id, "email": f"{user_id}@example.com", "name": "Ana"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    r = await client.post("/v1/conversations", json={"user_id": user_id}, headers=headers)
    assert r.status_code == 201, r.text
    return user_id, r.json()["conversation_id"]


def learner_sync(client: httpx.Client, headers: dict[str, str]) -> tuple[str, str]:
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    r = client.post(
        "/v1/users",
        json={"user_id": user_id, "email": f"{user_id}@example.com", "name": "Ana"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    r = client.post("/v1/conversations", json={"user_id": user_id}, headers=headers)
    assert r.status_code == 201, r.text
    return user_id, r.json()["conversation_id"]


class Served:
    """GET /v1/users/{user_id}/RESOURCE as one tenant, through the app (a
    `from_` keyword is the `from` parameter)."""

    def __init__(self, client: httpx.AsyncClient, tenant: Any, resource: str) -> None:
        self.client, self.tenant, self.resource = client, tenant, resource

    async def __call__(self, user_id: str, **params: Any) -> httpx.Response:
        params = {("from" if k == "from_" else k): v for k, v in params.items()}
        return await self.client.get(
            f"/v1/users/{user_id}/{self.resource}", params=params, headers=self.tenant.headers
        )

    async def ok(self, user_id: str, **params: Any) -> dict[str, Any]:
        """The body of the answer, which must be a 200."""
        r = await self(user_id, **params)
        assert r.status_code == 200, r.text
        return r.json()

    async def assert_bad_parameter(self, user_id: str, params: dict[str, Any], field: str) -> None:
        """A 400 problem that names `field`, in its `field` and its detail
        (a parameter whose value is None is left out)."""
        r = await self(user_id, **{k: v for k, v in params.items() if v is not None})
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["field"] == field
        assert f"`{field}`" in problem["detail"]


def bad_values(bad: dict[str, list[Any]]) -> list[tuple[str, Any]]:
    """(parameter, value) of each bad value in {parameter: [values]}."""
    return [(field, value) for field, values in bad.items() for value in values]


def api_process(settings: Settings) -> Iterator[ApiProcess]:
    """A real API process on `settings`, for a module-scoped fixture to
    `yield from`: it stops once the module's tests are done."""
    from tests.api.test_observability import Server  # which imports this module

    server = Server(settings)
    yield server
    server.stop()


def feed_entries(db, feed_settings, tenant: str, since: datetime) -> list:
    """Every change-feed entry of `tenant` written since `since`, all shards
    (a test-only scan: bounded by the time range, filtered in Python)."""
    from cql.change_feed import FeedReader

    reader = FeedReader(db.session, db.keyspace, feed_settings)
    until = datetime.now(UTC).replace(tzinfo=None)
    start = since.astimezone(UTC).replace(tzinfo=None)
    return [
        entry
        for shard in range(feed_settings.shards)
        for entry in reader.read(shard, start, until)
        if entry.tenant == tenant
    ]


def key_id(db, tenant: str, key: str, index: int = 0) -> str:
    """The id a request holding Idempotency-Key `key` gives item `index` of
    what it creates: derived from the seed its claim stores."""
    from api.edge.idempotency import derived_id
    from cql.utterances import IDEMPOTENCY_KEYS

    row = db.session.execute(db.prepare(IDEMPOTENCY_KEYS.select()), (tenant, key)).one()
    return derived_id(tenant, key, IDEMPOTENCY_KEYS.from_row(row).id_seed, index)
