"""DELETE /v1/users/{id}: every read of the learner answers 404 or nothing
at once, its rows and idempotency answers are gone from the base and
listing tables, the erasure is recorded with one erase entry per feed
shard, a repeat answers the same, another learner is untouched, and the id
can be created again as a new learner with nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from cql.erasure import ERASED_LEARNERS
from cql.listings import UTTERANCE_DAYS, UTTERANCES_BY_USER_DAY
from cql.utterances import IDEMPOTENCY_KEYS, UTTERANCE_CLAIMS, UTTERANCES
from tests.api.test_listings import walk
from tests.helpers import feed_entries, utterance


async def make_learner(client, tenant, user_id: str) -> tuple[str, list[str]]:
    """A learner with a conversation and three utterances, each written with
    an Idempotency-Key; returns the conversation and the utterance ids."""
    h = tenant.headers
    body = {"user_id": user_id, "email": f"{user_id}@example.com", "name": "Ana"}
    r = await client.post("/v1/users", json=body, headers=h | {"Idempotency-Key": f"u-{user_id}"})
    assert r.status_code == 201, r.text
    r = await client.post(
        "/v1/conversations",
        json={"user_id": user_id},
        headers=h | {"Idempotency-Key": f"c-{user_id}"},
    )
    conversation_id = r.json()["conversation_id"]
    ids = []
    for i in range(3):
        ts = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=i)
        item = utterance(
            user_id, conversation_id, timestamp=ts.isoformat(), utterance_id=f"{user_id}-{i}"
        )
        r = await client.post(
            "/v1/utterances", json=item, headers=h | {"Idempotency-Key": f"{user_id}-{i}"}
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["utterance_id"])
    return conversation_id, ids


def rows(db, table, *key) -> list:
    return list(db.session.execute(db.prepare(table.select()), key))


async def test_an_erased_learner_is_gone_everywhere_and_its_neighbour_is_not(
    client, tenant, db, migrated
):
    began = datetime.now(UTC)
    erased, other = f"ana-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    conversation, ids = await make_learner(client, tenant, erased)
    _conversation, other_ids = await make_learner(client, tenant, other)
    r = await client.delete(f"/v1/users/{erased}", headers=tenant.headers)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["user_id"] == erased and datetime.fromisoformat(answer["erased_at"]) >= began

    h = tenant.headers
    span = {"from": "2026-03-01", "to": "2026-04-01"}
    for path, params in [
        (f"/v1/users/{erased}", {}),
        (f"/v1/users/{erased}/conversations", {}),
        (f"/v1/users/{erased}/utterances", span),
        (f"/v1/conversations/{conversation}/utterances", {}),
        (f"/v1/users/{erased}/errors/top", {}),
        (f"/v1/users/{erased}/learning", {"granularity": "day", **span}),
        *((f"/v1/utterances/{i}", {}) for i in ids),
    ]:
        r = await client.get(path, params=params, headers=h)
        assert r.status_code == 404, (path, r.text)
    listed, _ = await walk(client, tenant, "/v1/users", "users")
    assert [u["user_id"] for u in listed] == [other]
    kept, _ = await walk(client, tenant, f"/v1/users/{other}/utterances", "utterances", **span)
    assert [u["utterance_id"] for u in kept] == other_ids

    for utterance_id in ids:
        assert rows(db, UTTERANCES, tenant.name, utterance_id) == []
        assert rows(db, UTTERANCE_CLAIMS, tenant.name, utterance_id) == []
        assert rows(db, IDEMPOTENCY_KEYS, tenant.name, utterance_id) == []
    assert rows(db, IDEMPOTENCY_KEYS, tenant.name, f"u-{erased}") == []
    assert rows(db, IDEMPOTENCY_KEYS, tenant.name, f"c-{erased}") == []
    assert rows(db, IDEMPOTENCY_KEYS, tenant.name, f"u-{other}") != []
    assert rows(db, UTTERANCE_DAYS, tenant.name, erased) == []
    day = datetime(2026, 3, 1)
    assert rows(db, UTTERANCES_BY_USER_DAY, tenant.name, erased, day) == []
    recorded = rows(db, ERASED_LEARNERS, tenant.name, erased)
    assert len(recorded) == 1
    erase_entries = [e for e in feed_entries(db, migrated.feed, tenant.name, began) if e.erased_at]
    assert sorted(e.shard for e in erase_entries) == list(range(migrated.feed.shards))
    assert {(e.user_id, e.erased_at) for e in erase_entries} == {(erased, recorded[0][2])}

    # A repeat answers the same; an id never created is 404.
    again = await client.delete(f"/v1/users/{erased}", headers=h)
    assert (again.status_code, again.json()) == (200, answer)
    assert (await client.delete("/v1/users/never-was", headers=h)).status_code == 404


async def test_an_erased_id_can_be_created_again_with_nothing(client, tenant):
    user_id = f"cy-{uuid.uuid4().hex[:6]}"
    await make_learner(client, tenant, user_id)
    first = (await client.get(f"/v1/users/{user_id}", headers=tenant.headers)).json()
    r = await client.delete(f"/v1/users/{user_id}", headers=tenant.headers)
    assert r.status_code == 200
    # The same request with the same Idempotency-Key is carried out afresh:
    # its stored answer was erased too.
    body = {"user_id": user_id, "email": "new@example.com", "name": "Cy"}
    r = await client.post(
        "/v1/users", json=body, headers=tenant.headers | {"Idempotency-Key": f"u-{user_id}"}
    )
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    again = (await client.get(f"/v1/users/{user_id}", headers=tenant.headers)).json()
    assert again["email"] == "new@example.com" and again["created_at"] > first["created_at"]
    conversations, _ = await walk(
        client, tenant, f"/v1/users/{user_id}/conversations", "conversations"
    )
    assert conversations == []
    span = {"from": "2026-03-01", "to": "2026-04-01"}
    said, _ = await walk(client, tenant, f"/v1/users/{user_id}/utterances", "utterances", **span)
    assert said == []
