"""Small builders shared by the API tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx


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
