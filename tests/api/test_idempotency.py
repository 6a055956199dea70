"""The Idempotency-Key protocol and exactly-once storage (SPEC, Idempotency)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest
from cassandra import OperationTimedOut
from cassandra.query import BatchStatement

import api.writes.store
import cql.group_commit
from api.edge.idempotency import derived_id, request_hash
from api.shapes import UtteranceIn
from cql.clock import utc_now
from cql.utterances import IDEMPOTENCY_KEYS, IdempotencyRow
from tests.conftest import ApiProcess
from tests.helpers import feed_entries, key_id, learner, learner_sync, utterance


async def test_same_key_same_body_replays_the_first_answer(client, tenant, db, settings) -> None:
    started = datetime.now(UTC)
    user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance(user_id, conversation_id)
    headers = tenant.headers | {"Idempotency-Key": "k-replay"}
    first = await client.post("/v1/utterances", json=body, headers=headers)
    again = await client.post("/v1/utterances", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(feed_entries(db, settings.feed, tenant.name, started)) == 1


async def test_same_key_other_body_is_422(client, tenant) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    headers = tenant.headers | {"Idempotency-Key": "k-reused"}
    assert (
        await client.post(
            "/v1/utterances", json=utterance(user_id, conversation_id), headers=headers
        )
    ).status_code == 202
    other = await client.post(
        "/v1/utterances", json=utterance(user_id, conversation_id, text="Other."), headers=headers
    )
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["field"] == "Idempotency-Key"


def _claim(
    db, tenant: str, key: str, body: dict, started_at: datetime, seed: uuid.UUID | None = None
) -> None:
    digest = request_hash("POST", "/v1/utterances", msgspec.convert(body, UtteranceIn))
    row = IdempotencyRow(
        tenant, key, digest, uuid.uuid4(), "started", started_at, None, None, id_seed=seed
    )
    db.session.execute(db.prepare(IDEMPOTENCY_KEYS.insert()), IDEMPOTENCY_KEYS.values(row))


async def test_repeat_while_first_in_flight_is_409_with_retry_after(client, tenant, db) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance(user_id, conversation_id)
    _claim(db, tenant.name, "k-busy", body, utc_now())
    r = await client.post(
        "/v1/utterances", json=body, headers=tenant.headers | {"Idempotency-Key": "k-busy"}
    )
    assert r.status_code == 409
    assert int(r.headers["Retry-After"]) >= 1


async def test_request_that_died_after_claiming_is_finished_by_its_retry(
    client, tenant, db, settings
) -> None:
    """What a request killed after the LWT and before the data write leaves
    behind is exactly a stale claim; its retry must complete the work, with
    the ids of the claim's seed."""
    started = datetime.now(UTC)
    user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance(user_id, conversation_id)
    seed = uuid.uuid4()
    _claim(db, tenant.name, "k-died", body, utc_now() - timedelta(minutes=5), seed)
    r = await client.post(
        "/v1/utterances", json=body, headers=tenant.headers | {"Idempotency-Key": "k-died"}
    )
    assert r.status_code == 202, r.text
    utterance_id = r.json()["utterance_id"]
    assert utterance_id == derived_id(tenant.name, "k-died", seed)
    assert (
        await client.get(f"/v1/utterances/{utterance_id}", headers=tenant.headers)
    ).status_code == 200
    assert [e.utterance_id for e in feed_entries(db, settings.feed, tenant.name, started)] == [
        utterance_id
    ]


async def test_explicit_utterance_id_is_stored_once_whatever_the_key(
    client, tenant, db, settings
) -> None:
    started = datetime.now(UTC)
    user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance(user_id, conversation_id, utterance_id="explicit-1")
    answers = [
        await client.post(
            "/v1/utterances", json=body, headers=tenant.headers | {"Idempotency-Key": f"k-{i}"}
        )
        for i in range(3)
    ] + [await client.post("/v1/utterances", json=body, headers=tenant.headers)]
    assert [a.status_code for a in answers] == [202] * 4
    assert [a.json()["duplicate"] for a in answers] == [False, True, True, True]
    assert len(feed_entries(db, settings.feed, tenant.name, started)) == 1
    clash = await client.post(
        "/v1/utterances", json=body | {"text": "Different."}, headers=tenant.headers
    )
    assert clash.status_code == 409
    assert clash.json()["field"] == "utterance_id"


def _expire(db, tenant: str, key: str) -> None:
    """What the key's TTL (api.idempotency_ttl_s) leaves once it runs out: no row."""
    db.session.execute(db.prepare(IDEMPOTENCY_KEYS.delete()), (tenant, key))


async def test_a_key_reused_after_it_expired_never_touches_the_first_utterance(
    client, tenant, db, settings
) -> None:
    """Past its TTL nothing remembers a key, so a reuse is a new request: it
    gets a new utterance id, and the first utterance, its feed entry and its
    listing stay as they were (no second fact at the old timestamp)."""
    started = datetime.now(UTC)
    user_id, conversation_id = await learner(client, tenant.headers)
    headers = tenant.headers | {"Idempotency-Key": "k-expired"}
    bodies = [
        utterance(user_id, conversation_id, text="First.", timestamp="2026-01-01T07:10:00Z"),
        utterance(user_id, conversation_id, text="Second.", timestamp="2026-01-02T09:00:00Z"),
    ]
    first = await client.post("/v1/utterances", json=bodies[0], headers=headers)
    _expire(db, tenant.name, "k-expired")
    second = await client.post("/v1/utterances", json=bodies[1], headers=headers)
    assert first.status_code == second.status_code == 202, second.text
    ids = [first.json()["utterance_id"], second.json()["utterance_id"]]
    assert ids[0] != ids[1]
    assert second.json()["duplicate"] is False
    for utterance_id, body in zip(ids, bodies, strict=True):
        stored = await client.get(f"/v1/utterances/{utterance_id}", headers=tenant.headers)
        assert stored.json()["text"] == body["text"]
    fed = feed_entries(db, settings.feed, tenant.name, started)
    assert sorted((e.utterance_id, e.text) for e in fed) == sorted(
        zip(ids, ["First.", "Second."], strict=True)
    )
    listed = await client.get(
        f"/v1/conversations/{conversation_id}/utterances", headers=tenant.headers
    )
    assert sorted(u["text"] for u in listed.json()["utterances"]) == ["First.", "Second."]
    again = await client.post("/v1/utterances", json=bodies[1], headers=headers)
    assert again.content == second.content and again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("landed", [True, False])
async def test_a_post_whose_batch_answer_was_lost_is_settled_by_its_retry(
    client, tenant, db, settings, monkeypatch, landed
) -> None:
    """The utterance's logged batch also stores the answer on the key. When
    the batch's answer is lost (it landed or not: a timeout cannot tell),
    the request answers 503 and ends its lease, so the retry comes at once:
    it replays the answer the batch stored, or takes the claim over and
    writes the utterance under the same seed. Either way one utterance, one
    feed entry, and the id of the key's claim."""
    started = datetime.now(UTC)
    user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance(user_id, conversation_id)
    headers = tenant.headers | {"Idempotency-Key": "k-lost-batch"}
    real = api.writes.store.execute

    async def lose_the_batch(session, statement, params=None, **kw):
        if not isinstance(statement, BatchStatement):
            return await real(session, statement, params, **kw)
        if landed:
            await real(session, statement, params, **kw)
        raise OperationTimedOut("injected: the batch's answer was lost")

    _route_execute(monkeypatch, lose_the_batch)
    lost = await client.post("/v1/utterances", json=body, headers=headers)
    assert lost.status_code == 503, lost.text
    _route_execute(monkeypatch, real)
    retry = await client.post("/v1/utterances", json=body, headers=headers)
    assert retry.status_code == 202, retry.text
    assert (retry.headers.get("Idempotent-Replayed") == "true") == landed
    assert retry.json()["utterance_id"] == key_id(db, tenant.name, "k-lost-batch")
    fed = feed_entries(db, settings.feed, tenant.name, started)
    assert [e.utterance_id for e in fed] == [retry.json()["utterance_id"]]


async def test_a_key_only_post_is_one_lwt_and_one_logged_batch(
    client, tenant, db, monkeypatch
) -> None:
    """The round trips of a keyed POST without an utterance_id: the key's
    claim (an LWT) and one logged batch carrying the utterance, its feed
    entry, its listing rows and the answer; nothing else reaches Cassandra."""
    user_id, conversation_id = await learner(client, tenant.headers)
    await client.post(  # the conversation is then remembered, as under load
        "/v1/utterances", json=utterance(user_id, conversation_id), headers=tenant.headers
    )
    sent: list[str] = []
    real = api.writes.store.execute

    async def counted(session, statement, params=None, **kw):
        sent.append(_kind(statement))
        return await real(session, statement, params, **kw)

    _route_execute(monkeypatch, counted)
    r = await client.post(
        "/v1/utterances",
        json=utterance(user_id, conversation_id),
        headers=tenant.headers | {"Idempotency-Key": "k-two-trips"},
    )
    assert r.status_code == 202, r.text
    assert sent == ["INSERT INTO idempotency_keys", "logged batch"]
    row = db.session.execute(db.prepare(IDEMPOTENCY_KEYS.select()), (tenant.name, "k-two-trips"))
    assert IDEMPOTENCY_KEYS.from_row(row.one()).state == "done"  # answered by the batch


async def test_a_batch_is_written_in_chunked_logged_batches_the_answer_last(
    client, tenant, db, settings, monkeypatch
) -> None:
    """A batch request's utterances go in logged batches of bounded size, and
    the request's answer rides in the last, sent once the others landed: 60
    items of 2,000 characters make several chunks, each utterance stored
    and fed once, and a repeat replays the answer."""
    started = datetime.now(UTC)
    user_id, conversation_id = await learner(client, tenant.headers)
    items = [utterance(user_id, conversation_id, text=f"{i} " + "x" * 2000) for i in range(60)]
    headers = tenant.headers | {"Idempotency-Key": "k-chunks"}
    sent: list[str] = []
    real = api.writes.store.execute

    async def counted(session, statement, params=None, **kw):
        sent.append(_kind(statement))
        return await real(session, statement, params, **kw)

    _route_execute(monkeypatch, counted)
    r = await client.post("/v1/utterances/batch", json={"utterances": items}, headers=headers)
    _route_execute(monkeypatch, real)
    assert r.status_code == 202, r.text
    assert [res["status"] for res in r.json()["results"]] == [201] * 60
    batches = sent.count("logged batch")
    assert 1 < batches < 60 and sent[-1] == "logged batch", sent
    assert "UPDATE idempotency_keys USING" not in sent  # the answer came with the last
    ids = [res["utterance_id"] for res in r.json()["results"]]
    assert ids == [key_id(db, tenant.name, "k-chunks", i) for i in range(60)]
    fed = feed_entries(db, settings.feed, tenant.name, started)
    assert sorted(e.utterance_id for e in fed) == sorted(ids)
    again = await client.post("/v1/utterances/batch", json={"utterances": items}, headers=headers)
    assert again.content == r.content and again.headers["Idempotent-Replayed"] == "true"


def _route_execute(monkeypatch, execute) -> None:
    """Every statement the store sends goes through `execute`: its own, and
    its logged batches (cql/group_commit.py)."""
    monkeypatch.setattr(api.writes.store, "execute", execute)
    monkeypatch.setattr(cql.group_commit, "execute", execute)


def _kind(statement) -> str:
    if isinstance(statement, BatchStatement):
        return f"{statement.batch_type.name.lower()} batch"
    return " ".join(statement.query_string.split()[:3])


async def test_post_without_key_is_accepted(client, tenant) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    first = await client.post(
        "/v1/utterances", json=utterance(user_id, conversation_id), headers=tenant.headers
    )
    second = await client.post(
        "/v1/utterances", json=utterance(user_id, conversation_id), headers=tenant.headers
    )
    assert first.status_code == second.status_code == 202
    assert first.json()["utterance_id"] != second.json()["utterance_id"]


def test_100_identical_posts_on_two_api_processes_write_once(
    api_processes, tenant, db, settings
) -> None:
    started = datetime.now(UTC)
    with httpx.Client(base_url=api_processes[0].url) as c:
        user_id, conversation_id = learner_sync(c, tenant.headers)
    body = utterance(user_id, conversation_id)
    headers = tenant.headers | {"Idempotency-Key": f"race-{uuid.uuid4()}"}

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as c:
            return await asyncio.gather(
                *(
                    c.post(api_processes[i % 2].url + "/v1/utterances", json=body, headers=headers)
                    for i in range(100)
                )
            )

    answers = asyncio.run(race())
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {202, 409}, statuses
    assert {a.json()["utterance_id"] for a in answers if a.status_code == 202} == {
        key_id(db, tenant.name, headers["Idempotency-Key"])
    }
    assert len(feed_entries(db, settings.feed, tenant.name, started)) == 1


def test_kill_9_mid_stream_loses_nothing_and_writes_nothing_twice(
    migrated, tenant, db, settings
) -> None:
    """200 keyed requests; the API process is killed with SIGKILL while they
    are in flight; a fresh process takes every key's retry to completion.
    Every key ends with exactly one utterance, each in the feed."""
    started = datetime.now(UTC)
    env = {"UTTERSTREAM_API_IN_FLIGHT_TIMEOUT_S": "2"}
    server = ApiProcess(migrated, extra_env=env)
    with httpx.Client(base_url=server.url) as c:
        user_id, conversation_id = learner_sync(c, tenant.headers)
    keys = [f"crash-{uuid.uuid4()}" for _ in range(200)]
    bodies = {
        k: utterance(user_id, conversation_id, text=f"Sentence {i}.") for i, k in enumerate(keys)
    }

    async def fire(url: str) -> dict[str, int]:
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=50)) as c:

            async def one(k: str) -> tuple[str, int]:
                try:
                    r = await c.post(
                        url + "/v1/utterances",
                        json=bodies[k],
                        headers=tenant.headers | {"Idempotency-Key": k},
                    )
                    return k, r.status_code
                except httpx.HTTPError:
                    return k, 0

            return dict(await asyncio.gather(*(one(k) for k in keys)))

    async def fire_and_kill() -> dict[str, int]:
        task = asyncio.create_task(fire(server.url))
        await asyncio.sleep(0.4)
        server.kill()
        return await task

    first = asyncio.run(fire_and_kill())
    server.stop()
    replacement = ApiProcess(migrated, extra_env=env)
    try:
        pending = set(keys)
        for _ in range(20):
            outcome = asyncio.run(fire(replacement.url))
            pending = {k for k in pending if outcome[k] != 202}
            if not pending:
                break
            asyncio.run(asyncio.sleep(1))
        assert not pending, f"{len(pending)} keys never completed"
    finally:
        replacement.stop()
    ids = [e.utterance_id for e in feed_entries(db, settings.feed, tenant.name, started)]
    expected = {key_id(db, tenant.name, k) for k in keys}
    assert set(ids) == expected
    acknowledged_before_kill = sum(s == 202 for s in first.values())
    assert acknowledged_before_kill < len(keys), "the kill came too late to test anything"


async def test_keys_and_feed_entries_live_as_long_as_the_settings_say(
    migrated, redis_client, tenant, db
) -> None:
    """The tables' default_time_to_live is only a fallback: the API writes
    idempotency keys with api.idempotency_ttl_s and feed entries with
    feed.ttl_days, on every write (claim and finish alike)."""
    from litestar.testing import AsyncTestClient

    from api.app import create_app

    started = datetime.now(UTC)
    api = msgspec.structs.replace(migrated.api, idempotency_ttl_s=100_000)
    feed = msgspec.structs.replace(migrated.feed, ttl_days=2)
    settings = msgspec.structs.replace(migrated, api=api, feed=feed)
    async with AsyncTestClient(app=create_app(settings)) as client:
        user_id, conversation_id = await learner(client, tenant.headers)
        r = await client.post(
            "/v1/utterances",
            json=utterance(user_id, conversation_id),
            headers=tenant.headers | {"Idempotency-Key": "k-ttl"},
        )
    assert r.status_code == 202, r.text
    key_ttls = db.session.execute(
        db.prepare(
            "SELECT TTL(request_hash), TTL(owner), TTL(state), TTL(response)"
            f" FROM {IDEMPOTENCY_KEYS.name} WHERE {IDEMPOTENCY_KEYS.key_where()}"
        ),
        (tenant.name, "k-ttl"),
    ).one()
    assert all(100_000 - 600 < ttl <= 100_000 for ttl in key_ttls), key_ttls
    [entry] = feed_entries(db, settings.feed, tenant.name, started)
    (feed_ttl,) = db.session.execute(
        db.prepare(
            "SELECT TTL(text) FROM change_feed WHERE shard = ? AND bucket = ? AND feed_id = ?"
        ),
        (entry.shard, entry.bucket, entry.feed_id),
    ).one()
    assert 2 * 86400 - 600 < feed_ttl <= 2 * 86400


async def test_the_same_instant_in_another_offset_is_the_same_utterance(client, tenant) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    utterance_id = f"same-instant-{uuid.uuid4().hex[:8]}"
    utc = utterance(
        user_id, conversation_id, utterance_id=utterance_id, timestamp="2026-01-01T07:10:00Z"
    )
    paris = utc | {"timestamp": "2026-01-01T08:10:00.000+01:00"}
    first = await client.post("/v1/utterances", json=utc, headers=tenant.headers)
    again = await client.post("/v1/utterances", json=paris, headers=tenant.headers)
    assert first.status_code == 202, first.text
    assert again.status_code == 202, again.text
    assert again.json()["duplicate"] is True
    later = paris | {"timestamp": "2026-01-01T08:10:01+01:00"}
    other = await client.post("/v1/utterances", json=later, headers=tenant.headers)
    assert other.status_code == 409


async def test_a_duplicate_answers_the_stored_status(client, tenant, db) -> None:
    from cql.utterances import UTTERANCES

    user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance(user_id, conversation_id, utterance_id=f"done-{uuid.uuid4().hex[:8]}")
    assert (await client.post("/v1/utterances", json=body, headers=tenant.headers)).json()[
        "status"
    ] == "pending"
    db.session.execute(
        db.prepare(UTTERANCES.update(["status"])),
        ("completed", tenant.name, body["utterance_id"]),
    )
    again = await client.post("/v1/utterances", json=body, headers=tenant.headers)
    assert again.status_code == 202
    assert again.json() | {"utterance_id": None} == {
        "utterance_id": None,
        "status": "completed",
        "duplicate": True,
    }
    batch = await client.post(
        "/v1/utterances/batch", json={"utterances": [body]}, headers=tenant.headers
    )
    assert batch.json()["results"][0]["status"] == 200
