"""Bad input gets a 4xx problem document naming the field, and nothing
malformed reaches Cassandra or the change feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.shapes import BatchIn
from tests.helpers import feed_entries, learner, utterance

PROBLEM = "application/problem+json"


def _cases(user_id: str, conversation_id: str) -> list[tuple[str, object, int, str | None]]:
    ok = utterance(user_id, conversation_id)
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    return [
        ("no offset", ok | {"timestamp": "2026-01-01T10:00:00"}, 400, "timestamp"),
        ("not a time", ok | {"timestamp": "yesterday"}, 400, "timestamp"),
        ("negative words", ok | {"words_learned": -1}, 400, "words_learned"),
        ("words as text", ok | {"words_learned": "3"}, 400, "words_learned"),
        ("unknown field", ok | {"sentiment": 1}, 400, "sentiment"),
        ("missing text", {k: v for k, v in ok.items() if k != "text"}, 400, "text"),
        ("empty text", ok | {"text": ""}, 400, "text"),
        ("whitespace-only text", ok | {"text": " \n\t\u3000"}, 400, "text"),
        ("before 1970", ok | {"timestamp": "1960-01-01T00:00:00Z"}, 400, "timestamp"),
        ("year one", ok | {"timestamp": "0001-01-01T00:00:00Z"}, 400, "timestamp"),
        (
            "year one with an offset",
            ok | {"timestamp": "0001-01-01T00:00:00+05:00"},
            400,
            "timestamp",
        ),
        ("last instant", ok | {"timestamp": "9999-12-31T23:59:59-05:00"}, 400, "timestamp"),
        ("1969 in UTC", ok | {"timestamp": "1970-01-01T00:30:00+01:00"}, 400, "timestamp"),
        ("huge text", ok | {"text": "a" * 10_001}, 400, "text"),
        (
            "error point without subcategory",
            ok | {"errors": [{"category": "grammar"}]},
            400,
            "errors[0].subcategory",
        ),
        ("error point as string", ok | {"errors": ["grammar"]}, 400, "errors[0]"),
        (
            "error point unknown field",
            ok | {"errors": [{"category": "a", "subcategory": "b", "x": 1}]},
            400,
            "errors[0].x",
        ),
        (
            "blank category",
            ok | {"errors": [{"category": " ", "subcategory": "b"}]},
            400,
            "errors[0].category",
        ),
        (
            "too many error points",
            ok | {"errors": [{"category": "a", "subcategory": "b"}] * 101},
            400,
            "errors",
        ),
        ("bad utterance id", ok | {"utterance_id": "has spaces"}, 400, "utterance_id"),
        ("array body", [ok], 400, None),
        ("far future", ok | {"timestamp": future}, 400, "timestamp"),
        ("unknown conversation", ok | {"conversation_id": "nope"}, 404, "conversation_id"),
        ("someone else's conversation", ok | {"user_id": "someone-else"}, 422, "user_id"),
    ]


async def test_each_malformed_utterance_is_refused_and_writes_nothing(
    client, tenant, db, settings
) -> None:
    started = datetime.now(UTC)
    user_id, conversation_id = await learner(client, tenant.headers)
    for name, body, status, field in _cases(user_id, conversation_id):
        r = await client.post("/v1/utterances", json=body, headers=tenant.headers)
        assert r.status_code == status, (name, r.text)
        assert r.headers["content-type"].startswith(PROBLEM), name
        problem = r.json()
        assert problem["status"] == status and problem["detail"], name
        assert problem.get("field") == field, (name, problem)
        assert "regex" not in problem["detail"] and "^" not in problem["detail"], (name, problem)
    assert feed_entries(db, settings.feed, tenant.name, started) == []


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"conversation_id": ', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"", "application/json"),
    ],
)
async def test_malformed_json_is_400(client, tenant, raw: bytes, content_type: str) -> None:
    r = await client.post(
        "/v1/utterances", content=raw, headers=tenant.headers | {"content-type": content_type}
    )
    assert r.status_code == 400
    assert r.headers["content-type"].startswith(PROBLEM)


async def test_oversized_body_is_413(client, tenant, settings) -> None:
    raw = b'{"text": "' + b"a" * (settings.api.max_body_bytes + 1) + b'"}'
    r = await client.post(
        "/v1/utterances", content=raw, headers=tenant.headers | {"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert str(settings.api.max_body_bytes) in r.json()["detail"]


async def test_oversized_batch_is_400_naming_the_field(client, tenant, settings) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    items = [utterance(user_id, conversation_id, text="x")] * (settings.api.max_batch_items + 1)
    r = await client.post(
        "/v1/utterances/batch", json={"utterances": items}, headers=tenant.headers
    )
    assert r.status_code == 400
    assert r.json()["field"] == "utterances"
    assert f"at most {settings.api.max_batch_items} items" in r.json()["detail"]


async def test_the_batch_limit_is_the_setting(migrated, redis_client, tenant) -> None:
    api = msgspec.structs.replace(migrated.api, max_batch_items=2)
    app = create_app(msgspec.structs.replace(migrated, api=api))
    async with AsyncTestClient(app=app) as client:
        user_id, conversation_id = await learner(client, tenant.headers)
        items = [utterance(user_id, conversation_id, text=f"Item {i}.") for i in range(3)]
        two = await client.post(
            "/v1/utterances/batch", json={"utterances": items[:2]}, headers=tenant.headers
        )
        three = await client.post(
            "/v1/utterances/batch", json={"utterances": items}, headers=tenant.headers
        )
    assert two.status_code == 202, two.text
    assert three.status_code == 400
    assert three.headers["content-type"].startswith(PROBLEM)
    assert three.json()["field"] == "utterances"
    assert "at most 2 items, not 3" in three.json()["detail"]


def test_the_body_shape_does_not_cap_a_batch_the_setting_allows() -> None:
    # A larger api.max_batch_items must not be cut short by decoding.
    item = utterance("u", "c")
    raw = msgspec.json.encode({"utterances": [item] * 1001})
    assert len(msgspec.json.decode(raw, type=BatchIn, strict=True).utterances) == 1001


async def test_batch_reports_each_item(client, tenant) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    same = utterance(user_id, conversation_id, utterance_id="b-1")
    items = [
        same,
        utterance(user_id, "no-such-conversation"),
        same,
        same | {"text": "Not the same."},
    ]
    r = await client.post(
        "/v1/utterances/batch", json={"utterances": items}, headers=tenant.headers
    )
    assert r.status_code == 202, r.text
    result = r.json()
    statuses = [i["status"] for i in result["results"]]
    # Items sharing an utterance id run in batch order: the first copy stores
    # it, the second finds it stored, the clashing body is refused.
    assert statuses == [201, 404, 200, 409]
    assert result["results"][3]["error"].endswith("/conflict")
    assert result["rejected"] == 2


async def test_batch_first_copy_of_an_id_wins(client, tenant) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    first = utterance(user_id, conversation_id, utterance_id="b-2", text="First.")
    other = first | {"text": "Second."}
    items = [first, other, first, other, first]
    r = await client.post(
        "/v1/utterances/batch", json={"utterances": items}, headers=tenant.headers
    )
    assert [i["status"] for i in r.json()["results"]] == [201, 409, 200, 409, 200]
    stored = await client.get(f"/v1/utterances/{first['utterance_id']}", headers=tenant.headers)
    assert stored.json()["text"] == "First."


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 401), ("Basic abc", 401), ("Bearer nope", 401), ("Bearer us_unknown_key", 401)],
)
async def test_missing_or_unknown_key_is_401(client, header: str | None, status: int) -> None:
    headers = {"Authorization": header} if header else {}
    r = await client.post("/v1/utterances", json={}, headers=headers)
    assert r.status_code == status
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_idempotency_key_too_long_is_400(client, tenant) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    r = await client.post(
        "/v1/utterances",
        json=utterance(user_id, conversation_id),
        headers=tenant.headers | {"Idempotency-Key": "k" * 256},
    )
    assert r.status_code == 400
    assert r.json()["field"] == "Idempotency-Key"


async def test_the_earliest_readable_instant_is_accepted(client, tenant) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    for timestamp in ("1970-01-01T00:00:00Z", "1970-01-01T01:00:00+01:00"):
        body = utterance(user_id, conversation_id, timestamp=timestamp)
        r = await client.post("/v1/utterances", json=body, headers=tenant.headers)
        assert r.status_code == 202, (timestamp, r.text)


async def test_a_timestamp_out_of_range_names_the_range(client, tenant) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance(user_id, conversation_id, timestamp="1960-01-01T00:00:00Z")
    r = await client.post("/v1/utterances", json=body, headers=tenant.headers)
    assert r.status_code == 400
    assert r.json()["field"] == "timestamp"
    assert "between 1970-01-01T00:00:00Z and a day past" in r.json()["detail"]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("user_id", "has space", "letters, digits"),
        ("utterance_id", "x ", "letters, digits"),
        ("category", "grammar ", "not starting or ending with a space"),
    ],
)
async def test_pattern_refusals_say_what_is_allowed(client, tenant, field, value, words) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance(user_id, conversation_id)
    if field == "category":
        body["errors"] = [{"category": value, "subcategory": "x"}]
        field = "errors[0].category"
    else:
        body[field] = value
    r = await client.post("/v1/utterances", json=body, headers=tenant.headers)
    assert r.status_code == 400
    assert r.json()["field"] == field
    assert words in r.json()["detail"] and "regex" not in r.json()["detail"]


async def test_a_bad_email_says_what_an_email_is(client, tenant) -> None:
    r = await client.post(
        "/v1/users", json={"email": "ana at example.com", "name": "Ana"}, headers=tenant.headers
    )
    assert r.status_code == 400
    assert r.json()["field"] == "email"
    assert "email address such as" in r.json()["detail"]


async def test_an_unencoded_plus_in_a_query_gets_a_hint(client, tenant) -> None:
    user_id, _ = await learner(client, tenant.headers)
    r = await client.get(
        f"/v1/users/{user_id}/errors?window=hour&from=2026-01-01T00:00:00+05:30"
        "&to=2026-01-01T05:00:00%2B05:30",
        headers=tenant.headers,
    )
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "from"
    assert "%2B" in r.json()["detail"]


async def test_an_empty_body_is_a_bad_request_saying_so(client, tenant) -> None:
    r = await client.post(
        "/v1/utterances", content=b"", headers=tenant.headers | {"content-type": "application/json"}
    )
    assert r.status_code == 400
    problem = r.json()
    assert problem["type"].endswith("/bad-request")
    assert "empty" in problem["detail"] and "'data'" not in problem["detail"]


async def test_an_empty_exercises_body_means_the_defaults(client, tenant) -> None:
    user_id, _ = await learner(client, tenant.headers)
    path = f"/v1/users/{user_id}/exercises"
    empty = await client.post(path, content=b"", headers=tenant.headers)
    braces = await client.post(path, json={}, headers=tenant.headers)
    assert empty.status_code == braces.status_code, (empty.text, braces.text)
    assert empty.json() == braces.json()


async def test_a_batch_refuses_each_bad_item_alone(client, tenant, db, settings) -> None:
    started = datetime.now(UTC)
    user_id, conversation_id = await learner(client, tenant.headers)
    items = [
        utterance(user_id, conversation_id, text="Good one."),
        utterance(user_id, conversation_id, timestamp="2026-01-01T10:00:00"),
        "not an utterance",
        utterance(user_id, conversation_id, text="   "),
        utterance(user_id, conversation_id, timestamp="1960-01-01T00:00:00Z"),
        utterance(user_id, conversation_id, text="Good two."),
    ]
    r = await client.post(
        "/v1/utterances/batch", json={"utterances": items}, headers=tenant.headers
    )
    assert r.status_code == 202, r.text
    result = r.json()
    assert [i["status"] for i in result["results"]] == [201, 400, 400, 400, 400, 201]
    assert [i.get("field") for i in result["results"]] == [
        None,
        "timestamp",
        None,
        "text",
        "timestamp",
        None,
    ]
    for refused in result["results"][1:5]:
        assert refused["detail"] and refused["error"].endswith("/bad-request")
    assert (result["accepted"], result["rejected"]) == (2, 4)
    assert len(feed_entries(db, settings.feed, tenant.name, started)) == 2


@pytest.mark.parametrize(
    "body",
    [{"utterances": []}, {"utterances": "x"}, {"items": []}, [], {"utterances": [], "x": 1}],
)
async def test_a_body_that_is_not_a_batch_fails_whole(client, tenant, body) -> None:
    r = await client.post("/v1/utterances/batch", json=body, headers=tenant.headers)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith(PROBLEM)
