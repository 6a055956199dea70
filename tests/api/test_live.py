"""GET /v1/live (SSE) and POST /v1/live/tickets against real API processes
(two granian workers, so connections and events cross processes): events
after the write, resume with Last-Event-ID, reset, the connection cap,
replacement by client_id, tickets, tenant isolation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest
import redis

from live.bus import id_parts, stream_key
from runtime.settings import Settings
from tests.conftest import ApiProcess, Tenant
from tests.helpers import learner_sync, utterance
from tests.live_helpers import LIVE_ENV, SseReader, live_tenant, sse


@pytest.fixture(scope="module")
def api(migrated: Settings) -> Iterator[ApiProcess]:
    proc = ApiProcess(migrated, workers=2, extra_env=LIVE_ENV)
    yield proc
    proc.stop()


@pytest.fixture
def http(api: ApiProcess) -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=80)
    with httpx.Client(base_url=api.url, timeout=10, limits=limits) as client:
        yield client


def wait_for(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)


def post_utterances(http: httpx.Client, tenant: Tenant, user: str, conv: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        r = http.post("/v1/utterances", json=utterance(user, conv), headers=tenant.headers)
        assert r.status_code == 202, r.text
        ids.append(r.json()["utterance_id"])
    return ids


def utterance_ids(reader: SseReader) -> list[str]:
    return [e.data["utterance_id"] for e in reader.of("utterance")]


def test_an_utterance_event_follows_the_write(http: httpx.Client, tenant: Tenant) -> None:
    user, conv = learner_sync(http, tenant.headers)
    with sse(http, tenant.headers, types="utterance") as reader:
        [posted] = post_utterances(http, tenant, user, conv, 1)
        wait_for(lambda: len(reader.events) >= 1)
        [event] = reader.events
        assert event.event == "utterance" and event.id is not None
        assert event.data == {"user_id": user, "utterance_id": posted, "status": "pending"}
        stored = http.get(f"/v1/utterances/{posted}", headers=tenant.headers)
        assert stored.status_code == 200


def test_tenant_a_never_receives_tenant_b_events(db, http: httpx.Client) -> None:
    a, b = live_tenant(db), live_tenant(db)
    user_a, conv_a = learner_sync(http, a.headers)
    user_b, conv_b = learner_sync(http, b.headers)
    # B asks by ticket for A's learner id: its ticket holds B's tenant only.
    ticket = http.post("/v1/live/tickets", headers=b.headers).json()["ticket"]
    with sse(http, a.headers) as reader, sse(http, None, ticket=ticket, user_id=user_a) as b_reads:
        post_utterances(http, b, user_b, conv_b, 3)
        [own] = post_utterances(http, a, user_a, conv_a, 1)
        wait_for(lambda: own in utterance_ids(reader))
        time.sleep(0.5)
        assert {e.data["user_id"] for e in reader.events} == {user_a}
        assert b_reads.events == []


def test_resume_with_last_event_id_gives_exactly_the_missed_events(
    http: httpx.Client, tenant: Tenant
) -> None:
    user, conv = learner_sync(http, tenant.headers)
    with sse(http, tenant.headers, user_id=user) as first:
        seen = post_utterances(http, tenant, user, conv, 3)
        wait_for(lambda: len(first.events) == 3)
        assert utterance_ids(first) == seen
        cursor = first.events[-1].id
    missed = post_utterances(http, tenant, user, conv, 4)
    with sse(http, {**tenant.headers, "Last-Event-ID": cursor}, user_id=user) as resumed:
        wait_for(lambda: len(resumed.events) == 4)
        after = post_utterances(http, tenant, user, conv, 1)
        wait_for(lambda: len(resumed.events) == 5)
        time.sleep(0.5)
        assert utterance_ids(resumed) == missed + after
        ids = [id_parts(e.id) for e in resumed.events]
        assert ids == sorted(set(ids)) and ids[0] > id_parts(cursor)


def test_a_client_that_got_no_event_yet_resumes_from_where_it_started(
    http: httpx.Client, tenant: Tenant
) -> None:
    user, conv = learner_sync(http, tenant.headers)
    with sse(http, tenant.headers, user_id=user) as first:
        # At once, not at the first heartbeat (a second here).
        wait_for(lambda: first.last_id is not None, within_s=0.5)
    assert first.events == []
    missed = post_utterances(http, tenant, user, conv, 2)
    with sse(http, {**tenant.headers, "Last-Event-ID": first.last_id}, user_id=user) as resumed:
        wait_for(lambda: len(resumed.events) >= 2)
        time.sleep(0.3)
        assert [e.event for e in resumed.events] == ["utterance", "utterance"]
        assert utterance_ids(resumed) == missed


def test_a_cursor_the_stream_no_longer_holds_gets_reset(
    http: httpx.Client, tenant: Tenant, redis_client: redis.Redis
) -> None:
    user, conv = learner_sync(http, tenant.headers)
    with sse(http, tenant.headers) as reader:
        post_utterances(http, tenant, user, conv, 3)
        wait_for(lambda: len(reader.events) == 3)
    old, trimmed_to = reader.events[0].id, reader.events[2].id
    # What the retention does to old entries: gone from the stream.
    redis_client.xtrim(stream_key(tenant.name), minid=trimmed_to, approximate=False)
    with sse(http, {**tenant.headers, "Last-Event-ID": old}) as resumed:
        wait_for(lambda: len(resumed.events) >= 1)
        reset = resumed.events[0]
        assert reset.event == "reset" and reset.data["reason"] == "cursor_too_old"
        [later] = post_utterances(http, tenant, user, conv, 1)
        wait_for(lambda: later in utterance_ids(resumed))
        assert utterance_ids(resumed) == [later]


def test_an_old_cursor_of_a_stream_that_is_gone_gets_reset(http: httpx.Client, db) -> None:
    quiet = live_tenant(db)
    with sse(http, {**quiet.headers, "Last-Event-ID": "1000-0"}) as reader:
        wait_for(lambda: len(reader.events) >= 1)
        assert reader.events[0].event == "reset"


def test_the_51st_connection_gets_429_until_one_closes(db, http: httpx.Client) -> None:
    tenant = live_tenant(db)  # the default cap: 50
    with ExitStack() as open_streams:
        readers = [open_streams.enter_context(sse(http, tenant.headers)) for _ in range(50)]
        refused = http.get("/v1/live", headers=tenant.headers)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["content-type"] == "application/problem+json"
        readers[0].response.close()

        def admitted() -> bool:
            with http.stream("GET", "/v1/live", headers=tenant.headers) as r:
                return r.status_code == 200

        wait_for(admitted, within_s=10)


def test_a_key_can_have_its_own_cap(db, http: httpx.Client) -> None:
    tenant = live_tenant(db, live_connections=2)
    with sse(http, tenant.headers), sse(http, tenant.headers):
        assert http.get("/v1/live", headers=tenant.headers).status_code == 429


def test_a_second_connection_with_the_same_client_id_replaces_the_first(
    db, http: httpx.Client
) -> None:
    tenant = live_tenant(db, live_connections=1)
    user, conv = learner_sync(http, tenant.headers)
    with (
        sse(http, tenant.headers, client_id="phone") as first,
        sse(http, tenant.headers, client_id="phone") as second,
    ):
        assert first.ended.wait(10), "the first connection was not closed"
        assert [e.data["reason"] for e in first.of("closed")] == ["replaced"]
        [posted] = post_utterances(http, tenant, user, conv, 1)
        wait_for(lambda: posted in utterance_ids(second))
        # The slot moved to the second connection; no slot was added.
        other = http.get("/v1/live", headers=tenant.headers, params={"client_id": "tablet"})
        assert other.status_code == 429


def test_tickets_work_once_and_expire(api: ApiProcess, http: httpx.Client, tenant: Tenant) -> None:
    r = http.post("/v1/live/tickets", headers=tenant.headers)
    assert r.status_code == 201, r.text
    ticket = r.json()["ticket"]
    user, conv = learner_sync(http, tenant.headers)
    with sse(http, None, ticket=ticket) as reader:
        [posted] = post_utterances(http, tenant, user, conv, 1)
        wait_for(lambda: posted in utterance_ids(reader))
    reused = http.get("/v1/live", params={"ticket": ticket})
    assert reused.status_code == 401 and reused.json()["field"] == "ticket"
    stale = http.post("/v1/live/tickets", headers=tenant.headers).json()["ticket"]
    time.sleep(2.5)  # the test server's ticket_ttl_s is 2
    assert http.get("/v1/live", params={"ticket": stale}).status_code == 401
    assert http.get("/v1/live").status_code == 401
    log = api.log_path.read_text()
    assert ticket not in log and stale not in log
    assert "/v1/live" in log


def test_heartbeats_move_the_cursor_past_filtered_events(
    http: httpx.Client, tenant: Tenant
) -> None:
    user, conv = learner_sync(http, tenant.headers)
    with sse(http, tenant.headers, types="insight") as reader, sse(http, tenant.headers) as every:
        post_utterances(http, tenant, user, conv, 1)
        wait_for(lambda: len(every.events) == 1)
        wait_for(lambda: reader.heartbeats >= 2, within_s=5)
        assert reader.events == []
        assert reader.last_id == every.events[0].id


def test_bad_parameters_are_refused_before_the_stream(http: httpx.Client, tenant: Tenant) -> None:
    r = http.get("/v1/live", headers=tenant.headers, params={"types": "errors,nope"})
    assert r.status_code == 400 and r.json()["field"] == "types"
    r = http.get("/v1/live", headers={**tenant.headers, "Last-Event-ID": "yesterday"})
    assert r.status_code == 400 and r.json()["field"] == "Last-Event-ID"
