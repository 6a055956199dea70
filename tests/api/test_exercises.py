"""POST /v1/users/{id}/exercises: targets are the learner's top errors from
the served tables; offline templates without a model; a model that fails
gives 503 with a clear detail, never 500."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from api.app import create_app
from cql.error_counts import ERROR_TOTALS, ErrorTotalRow
from runtime.settings import LlmSettings, Settings
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.helpers import learner


def _seed_totals(db, tenant: str, user_id: str, totals: dict[tuple[str, str], int]) -> None:
    insert = db.prepare(ERROR_TOTALS.insert())
    now = datetime.now(UTC).replace(tzinfo=None)
    for (category, subcategory), count in totals.items():
        db.session.execute(
            insert,
            ERROR_TOTALS.values(ErrorTotalRow(tenant, user_id, category, subcategory, count, now)),
        )


TOTALS = {
    ("grammar", "past tense"): 9,
    ("vocabulary", "word choice"): 5,
    ("grammar", "articles"): 7,
    ("spelling", "x"): 1,
}


async def test_offline_exercises_target_the_top_errors(client, tenant, db) -> None:
    user_id, _ = await learner(client, tenant.headers)
    _seed_totals(db, tenant.name, user_id, TOTALS)
    r = await client.post(
        f"/v1/users/{user_id}/exercises", json={"count": 3}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    body = r.json()
    expected = sorted(TOTALS.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert [(t["category"], t["subcategory"], t["count"]) for t in body["targets"]] == [
        (c, s, n) for (c, s), n in expected
    ]
    assert [(e["category"], e["subcategory"]) for e in body["exercises"]] == [
        (c, s) for (c, s), _ in expected
    ]
    assert all(e["items"] and e["instructions"] for e in body["exercises"])
    assert body["model"].startswith("offline")


async def test_learner_without_errors_gets_no_exercises(client, tenant) -> None:
    user_id, _ = await learner(client, tenant.headers)
    r = await client.post(f"/v1/users/{user_id}/exercises", json={}, headers=tenant.headers)
    assert r.status_code == 200
    assert r.json()["exercises"] == [] and r.json()["targets"] == []


async def test_unknown_learner_is_404_and_bad_count_is_400(client, tenant) -> None:
    assert (
        await client.post("/v1/users/nobody/exercises", json={}, headers=tenant.headers)
    ).status_code == 404
    user_id, _ = await learner(client, tenant.headers)
    bad = await client.post(
        f"/v1/users/{user_id}/exercises", json={"count": 0}, headers=tenant.headers
    )
    assert bad.status_code == 400 and bad.json()["field"] == "count"


@pytest.fixture
def fake_llm():
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


async def _app_client(migrated: Settings, fake):
    from litestar.testing import AsyncTestClient

    llm = LlmSettings(
        base_url=fake.base_url, model="fake-model", timeout_s=2, max_attempts=2, rate_per_s=50
    )
    settings = msgspec.structs.replace(migrated, llm=llm)
    return AsyncTestClient(app=create_app(settings))


async def test_model_failure_is_503_with_detail(migrated, tenant, db, fake_llm) -> None:
    fake_llm.script(*["server_error"] * 4)
    async with await _app_client(migrated, fake_llm) as client:
        user_id, _ = await learner(client, tenant.headers)
        _seed_totals(db, tenant.name, user_id, TOTALS)
        r = await client.post(f"/v1/users/{user_id}/exercises", json={}, headers=tenant.headers)
    assert r.status_code == 503
    assert "model" in r.json()["detail"] and r.headers["Retry-After"]


async def test_model_exercises_are_kept_for_the_asked_targets(
    migrated, tenant, db, fake_llm
) -> None:
    reply = {
        "exercises": [
            {
                "category": "grammar",
                "subcategory": "past tense",
                "instructions": "Use the past.",
                "items": [{"prompt": "I (go) home.", "answer": "went"}],
            },
            {
                "category": "made",
                "subcategory": "up",
                "instructions": "Not asked.",
                "items": [{"prompt": "x", "answer": "y"}],
            },
        ]
    }
    fake_llm.script(Behaviour("valid", content=json.dumps(reply)))
    async with await _app_client(migrated, fake_llm) as client:
        user_id, _ = await learner(client, tenant.headers)
        _seed_totals(db, tenant.name, user_id, {("grammar", "past tense"): 3})
        r = await client.post(
            f"/v1/users/{user_id}/exercises",
            json={"count": 1},
            headers=tenant.headers | {"Idempotency-Key": str(uuid.uuid4())},
        )
    assert r.status_code == 200, r.text
    assert [(e["category"], e["subcategory"]) for e in r.json()["exercises"]] == [
        ("grammar", "past tense")
    ]
    assert r.json()["model"] == "fake-model"
