"""GET /v1/ws against a real API process: utterances in with the POST's
idempotency, problems for malformed frames on an open connection, the
learners' live events out, the connection cap before the upgrade,
replacement by client_id, and the cross-process message budget."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import websocket

from api.live.budget import KEY as BUDGET_KEY
from api.live.budget import Budget
from runtime.settings import Settings
from tests.conftest import ApiProcess, Tenant
from tests.helpers import learner_sync, utterance
from tests.live_helpers import LIVE_ENV, live_tenant, ws_connect, ws_messages, ws_until


@pytest.fixture(scope="module")
def api(migrated: Settings) -> Iterator[ApiProcess]:
    proc = ApiProcess(migrated, workers=2, extra_env=LIVE_ENV)
    yield proc
    proc.stop()


@pytest.fixture
def http(api: ApiProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=10) as client:
        yield client


def send_utterance(ws: websocket.WebSocket, body: dict[str, Any], key: str | None) -> None:
    ws.send(json.dumps({"type": "utterance", "idempotency_key": key, "utterance": body}))


def test_utterances_get_the_post_idempotency(
    api: ApiProcess, http: httpx.Client, tenant: Tenant
) -> None:
    user, conv = learner_sync(http, tenant.headers)
    body, key = utterance(user, conv), str(uuid.uuid4())
    ws = ws_connect(api.url, tenant.headers, client_id="app")
    try:
        send_utterance(ws, body, key)
        first = ws_until(ws, "accepted")
        assert first["idempotency_key"] == key and first["replayed"] is False
        assert first["status"] == "pending" and first["duplicate"] is False
        send_utterance(ws, body, key)
        again = ws_until(ws, "accepted")
        assert again["replayed"] is True and again["utterance_id"] == first["utterance_id"]
        send_utterance(ws, {**body, "text": "Another text."}, key)
        refused = ws_until(ws, "problem")
        assert refused["problem"]["status"] == 422
    finally:
        ws.close()
    # The same key over POST is the same request: replayed, not stored again.
    posted = http.post(
        "/v1/utterances", json=body, headers={**tenant.headers, "Idempotency-Key": key}
    )
    assert posted.status_code == 202 and posted.headers["Idempotent-Replayed"] == "true"
    assert posted.json()["utterance_id"] == first["utterance_id"]


def test_malformed_frames_get_a_problem_naming_the_field_and_store_nothing(
    api: ApiProcess, http: httpx.Client, tenant: Tenant
) -> None:
    user, conv = learner_sync(http, tenant.headers)
    ws = ws_connect(api.url, tenant.headers, client_id="app")
    try:
        ws.send("{not json")
        assert ws_until(ws, "problem")["problem"]["status"] == 400
        ws.send(
            json.dumps({"type": "utterance", "utterance": {**utterance(user, conv), "user_id": 7}})
        )
        assert ws_until(ws, "problem")["problem"]["field"] == "utterance.user_id"
        ws.send(json.dumps({"type": "shout", "utterance": utterance(user, conv)}))
        assert ws_until(ws, "problem")["problem"]["field"] == "type"
        bad_id = f"bad-{uuid.uuid4().hex[:8]}"
        send_utterance(ws, utterance(user, conv, text="", utterance_id=bad_id), None)
        assert ws_until(ws, "problem")["problem"]["field"] == "utterance.text"
        # Still open, and still taking utterances.
        send_utterance(ws, utterance(user, conv), None)
        assert ws_until(ws, "accepted")["status"] == "pending"
    finally:
        ws.close()
    assert http.get(f"/v1/utterances/{bad_id}", headers=tenant.headers).status_code == 404


def test_it_receives_the_events_of_its_learners_only(
    api: ApiProcess, http: httpx.Client, tenant: Tenant
) -> None:
    followed, conv_f = learner_sync(http, tenant.headers)
    spoken, conv_s = learner_sync(http, tenant.headers)
    other, conv_o = learner_sync(http, tenant.headers)
    ws = ws_connect(api.url, tenant.headers, client_id="app", user_id=followed)
    try:
        send_utterance(ws, utterance(spoken, conv_s), None)
        for user, conv in ((other, conv_o), (followed, conv_f), (spoken, conv_s)):
            r = http.post("/v1/utterances", json=utterance(user, conv), headers=tenant.headers)
            assert r.status_code == 202
        # Its own utterance's event may come before or after its `accepted`.
        events = [m for m in ws_messages(ws, count=4, kinds={"accepted", "event"})]
        assert [m["type"] for m in events].count("accepted") == 1
        users = [m["data"]["user_id"] for m in events if m["type"] == "event"]
        assert users == [spoken, followed, spoken]
    finally:
        ws.close()


def test_past_the_cap_the_upgrade_gets_429(api: ApiProcess, db) -> None:
    tenant = live_tenant(db, live_connections=1)
    ws = ws_connect(api.url, tenant.headers, client_id="first")
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            ws_connect(api.url, tenant.headers, client_id="second")
        assert refused.value.status_code == 429
        assert int(refused.value.resp_headers["retry-after"]) >= 1
    finally:
        ws.close()


def test_the_same_client_id_replaces_the_first_connection(api: ApiProcess, db) -> None:
    tenant = live_tenant(db, live_connections=1)
    first = ws_connect(api.url, tenant.headers, client_id="phone")
    second = ws_connect(api.url, tenant.headers, client_id="phone")
    try:
        opcode, frame = first.recv_data(control_frame=True)
        while opcode != websocket.ABNF.OPCODE_CLOSE:
            opcode, frame = first.recv_data(control_frame=True)
        assert int.from_bytes(frame[:2], "big") == 4001 and frame[2:] == b"replaced"
        second.send("{}")
        assert ws_until(second, "problem")["problem"]["status"] == 400
    finally:
        first.close()
        second.close()


def test_a_ticket_opens_a_websocket_once(
    api: ApiProcess, http: httpx.Client, tenant: Tenant
) -> None:
    ticket = http.post("/v1/live/tickets", headers=tenant.headers).json()["ticket"]
    ws = ws_connect(api.url, client_id="browser", ticket=ticket)
    ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as reused:
        ws_connect(api.url, client_id="browser", ticket=ticket)
    assert reused.value.status_code == 401


async def test_the_message_budget_is_shared_and_bounded(settings: Settings) -> None:
    client = aioredis.Redis.from_url(settings.redis.url)
    # Two processes' views of one budget (the real key is shared by all).
    key = f"live:test:{uuid.uuid4().hex}"
    here, there = Budget(client, 2, key), Budget(client, 2, key)
    try:
        held = [await here.take(), await there.take()]
        assert all(held)
        assert await here.take() is None and await there.take() is None
        await there.give_back(held[0])
        assert await here.take() is not None
    finally:
        await client.delete(key)
        await client.aclose()


def test_past_the_shared_budget_a_message_gets_busy(migrated: Settings, db, redis_client) -> None:
    """The budget as the API applies it: one message in flight elsewhere
    (another process's, in the shared key) and a cap of 1 leave none."""
    proc = ApiProcess(
        migrated, workers=1, extra_env={**LIVE_ENV, "UTTERSTREAM_LIVE_WS_MAX_IN_FLIGHT": "1"}
    )
    tenant, elsewhere = live_tenant(db), f"test-{uuid.uuid4().hex}"
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as http:
            user, conv = learner_sync(http, tenant.headers)
            redis_client.zadd(BUDGET_KEY, {elsewhere: int(time.time() * 1000) + 30_000})
            ws = ws_connect(proc.url, tenant.headers, client_id="busy", user_id=user)
            try:
                send_utterance(ws, utterance(user, conv), "k-busy")
                busy = ws_until(ws, "busy")
            finally:
                ws.close()
            assert busy == {"type": "busy", "idempotency_key": "k-busy", "retry_after": 1}
    finally:
        redis_client.zrem(BUDGET_KEY, elsewhere)
        proc.stop()
