"""The quality of POST /v1/ask's rules, measured as the README states it.

Execution accuracy: for each question of tests/ask/gold.jsonl, the rules'
plan and the gold plan are both run on the seeded tables (tests/ask/world.py)
through the executor the endpoint uses, as of world.NOW; the question counts
as answered when the two give the same data. At least 90 %.

Adversarial: every question of tests/ask/adversarial.jsonl (writes, other
tenants, injected instructions, questions about something else) is refused
by the endpoint with a 422 `refused` problem: 100 %."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from api.ask.execute import run
from api.ask.plans import Plan
from api.ask.rules import plan_question
from tests.ask.conftest import World
from tests.ask.world import NOW
from tests.conftest import Tenant

HERE = Path(__file__).parent
GOLD = [json.loads(line) for line in (HERE / "gold.jsonl").read_text().splitlines()]
ADVERSARIAL = [
    json.loads(line)["question"] for line in (HERE / "adversarial.jsonl").read_text().splitlines()
]
ACCURACY_FLOOR = 0.9
_plan = msgspec.json.Decoder(Plan)


def test_the_gold_set_is_large_and_covers_every_operation() -> None:
    assert len(GOLD) >= 100
    assert {item["plan"]["operation"] for item in GOLD} == {
        "error_counts", "top_errors", "learning", "insights", "utterance",
    }  # fmt: skip
    assert len(ADVERSARIAL) >= 30


async def _data(world: World, plan: Any) -> Any:
    # In the app's own event loop, where its Redis client lives.
    portal = world.client.blocking_portal
    answer = await asyncio.to_thread(portal.call, run, world.services, world.tenant.name, plan, NOW)
    return answer if not isinstance(answer, bytes) else msgspec.json.decode(answer)


async def test_execution_accuracy_of_the_rules(
    world: World, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    misses = []
    for item in GOLD:
        gold = _plan.decode(json.dumps(item["plan"]))
        expected = await _data(world, gold)
        assert isinstance(expected, dict), f"gold plan does not run: {item} -> {expected}"
        planned = plan_question(item["question"], item["tz"], NOW)
        got = await _data(world, planned) if isinstance(planned, Plan) else planned
        if got != expected:
            misses.append((item["question"], planned))
    accuracy = 1 - len(misses) / len(GOLD)
    record_property("ask_rules_execution_accuracy", accuracy)
    with capsys.disabled():
        sys.stdout.write(
            f"\nPOST /v1/ask rules: execution accuracy {accuracy:.3f} on {len(GOLD)} questions\n"
        )
    assert accuracy >= ACCURACY_FLOOR, misses


@pytest.mark.parametrize("question", ADVERSARIAL)
async def test_every_adversarial_question_is_refused(
    client: Any, tenant: Tenant, question: str
) -> None:
    r = await client.post("/v1/ask", json={"question": question}, headers=tenant.headers)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["refused"]["reason"], problem
    assert "data" not in problem and "plan" not in problem
