"""POST /v1/ask through the app, without a model: the answer's parts, the
GET request it names returning the same data, dry runs, tenancy,
clarifications, refusals, bad bodies and the rate limit."""

from __future__ import annotations

from typing import Any

import pytest

from cql.session import Db
from tests.ask.conftest import World
from tests.conftest import Tenant, new_tenant

ASK = "/v1/ask"


async def ask(world: World, question: str, tenant: Tenant | None = None, **body: Any) -> Any:
    tenant = tenant or world.tenant
    return await world.client.post(ASK, json={"question": question, **body}, headers=tenant.headers)


def problem_of(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return r.json()


async def test_a_dry_run_answers_the_plan_its_explanation_and_url_without_data(
    world: World,
) -> None:
    r = await ask(world, "top 3 errors of learner-002 since 2026-11-09", dry_run=True)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["plan"] == {
        "operation": "top_errors", "user_id": "learner-002", "limit": 3,
        "since": "2026-11-09", "tz": "UTC",
    }  # fmt: skip
    assert answer["url"] == "/v1/users/learner-002/errors/top?limit=3&since=2026-11-09"
    assert answer["answered_by"] == "rules"
    assert answer["data"] is None
    assert "3 most frequent errors" in answer["explanation"]
    assert "learner-002" in answer["explanation"]


@pytest.mark.parametrize(
    "question",
    [
        "errors per day of learner-002 from 2026-11-01 to 2026-11-10",
        "grammar errors per hour of learner-001 on 2026-11-18 in Asia/Kolkata",
        "top 3 errors of learner-001",
        "words practised per day by learner-003 from 2026-11-10 to 2026-11-19 in Asia/Kolkata",
        "negative insights of learner-002 between 2026-11-10 and 2026-11-19",
        "show utterance utt-001",
    ],
)
async def test_the_data_is_what_the_named_get_request_answers(world: World, question: str) -> None:
    r = await ask(world, question, tz="Europe/Paris")
    assert r.status_code == 200, r.text
    answer = r.json()
    direct = await world.client.get(answer["url"], headers=world.tenant.headers)
    assert direct.status_code == 200, direct.text
    assert answer["data"] == direct.json()


async def test_another_tenants_learner_is_never_read(world: World, db: Db) -> None:
    other = new_tenant(db)
    for question in ("top 3 errors of learner-002", "insights of learner-002 this week"):
        problem = problem_of(await ask(world, question, tenant=other), 422)
        assert problem["clarify"]["missing"] == ["user_id"]
        assert "data" not in problem
    utterance = problem_of(await ask(world, "show utterance utt-001", tenant=other), 422)
    assert utterance["clarify"]["missing"] == ["utterance_id"]


async def test_a_question_without_its_learner_asks_which(world: World) -> None:
    problem = problem_of(await ask(world, "words practised per day this month"), 422)
    assert problem["clarify"]["missing"] == ["user_id"]
    unknown = problem_of(await ask(world, "top errors of learner-999"), 422)
    assert unknown["clarify"]["missing"] == ["user_id"]
    assert "learner-999" in unknown["clarify"]["reason"]


async def test_a_plan_outside_the_get_limits_says_which_parameter(world: World) -> None:
    problem = problem_of(await ask(world, "errors per minute of learner-002 this year"), 422)
    assert problem["clarify"]["missing"] == ["to"]
    assert "7 days" in problem["clarify"]["reason"]


async def test_a_question_about_something_else_is_refused(world: World) -> None:
    problem = problem_of(await ask(world, "what is the capital of France?"), 422)
    assert "served reads" in problem["refused"]["reason"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({"question": "x" * 501}, "question"),
        ({"question": "top errors of learner-002", "tz": "Mars/Olympus"}, "tz"),
        ({"question": "top errors of learner-002", "dry_run": "yes"}, "dry_run"),
        ({"question": "top errors of learner-002", "tenant": "other"}, "tenant"),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_field(
    client: Any, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    r = await client.post(ASK, json=body, headers=tenant.headers)
    problem = problem_of(r, 400)
    assert problem["field"] == field


async def test_asking_is_rate_limited_like_any_request(client: Any, db: Db) -> None:
    slow = new_tenant(db, rate=0.01, burst=2)
    statuses = [
        (await client.post(ASK, json={"question": "hello"}, headers=slow.headers)).status_code
        for _ in range(3)
    ]
    assert statuses == [422, 422, 429]


async def test_a_repeat_with_the_same_idempotency_key_replays_the_answer(world: World) -> None:
    body = {"question": "top 2 errors of learner-001"}
    headers = {**world.tenant.headers, "Idempotency-Key": "ask-once"}
    first = await world.client.post(ASK, json=body, headers=headers)
    again = await world.client.post(ASK, json=body, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
