"""One tenant's served tables, seeded for the questions of POST /v1/ask:
three learners with a year of error counts (minute, hour, day and month
windows and totals, each summed from the same events, so every window
agrees), quarter-hour learning buckets, insights, and three utterances.
Events cluster in the fortnight before NOW, where relative questions
("yesterday", "last week") look. Everything is answered as of NOW, a fixed
instant, so the relative dates of the gold set stay what they were."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from cql.insights import InsightRow
from cql.learning import DATAFLOW_PROGRESS, ProgressRow
from cql.session import Db
from dataflows.writers.insight_writer import InsightWriter
from runtime.settings import Settings
from tests.conftest import Tenant
from tests.served_seed import Seeder

# A Friday: "this week" began on Monday 2026-11-16.
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
LEARNERS = ("learner-001", "learner-002", "learner-003")
PAIRS = (
    ("grammar", "past tense"),
    ("grammar", "articles"),
    ("grammar", "prepositions"),
    ("vocabulary", "word choice"),
    ("vocabulary", "false friends"),
    ("pronunciation", "vowels"),
)
TOPICS = ("travel", "food", "work", "family", "music")
UTTERANCES = ("utt-001", "utt-002", "utt-003")
EVENTS_PER_LEARNER = 160


def _moment(rng: random.Random) -> datetime:
    """Most events in the last 15 days, the rest over the year before."""
    days = rng.uniform(0, 15) if rng.random() < 0.7 else rng.uniform(15, 360)
    return (NOW - timedelta(days=days)).replace(second=0, microsecond=0)


def _windows(moment: datetime) -> dict[str, datetime]:
    day = moment.replace(hour=0, minute=0)
    return {
        "minute": moment,
        "hour": moment.replace(minute=0),
        "day": day,
        "month": day.replace(day=1),
    }


async def seed_world(db: Db, settings: Settings, tenant: Tenant, client: Any) -> None:
    seeder = Seeder(db, tenant.name)
    rng = random.Random(20261120)
    insights: list[InsightRow] = []
    for learner in LEARNERS:
        seeder.learner(learner)
        counts: Counter[tuple[str, datetime, str, str]] = Counter()
        buckets: Counter[datetime] = Counter()
        words: Counter[datetime] = Counter()
        for n in range(EVENTS_PER_LEARNER):
            moment = _moment(rng)
            pair = rng.choice(PAIRS)
            for window, start in _windows(moment).items():
                counts[window, start, *pair] += 1
            quarter = moment.replace(minute=moment.minute - moment.minute % 15)
            buckets[quarter] += 1
            words[quarter] += rng.randint(0, 6)
            if NOW - moment < timedelta(days=30):
                insights.append(_insight(tenant.name, learner, moment, n, rng))
        for (window, start, category, subcategory), count in counts.items():
            seeder.error_count(learner, window, start, category, subcategory, count)
        totals: Counter[tuple[str, str]] = Counter()
        for (window, _start, category, subcategory), count in counts.items():
            if window == "month":
                totals[category, subcategory] += count
        for (category, subcategory), count in totals.items():
            seeder.error_total(learner, category, subcategory, count)
        for quarter, entries in buckets.items():
            seeder.learning_bucket(learner, quarter, entries, words[quarter])
    writer = InsightWriter(db, settings)
    for row in insights:
        await writer.record(row, None)
    await _utterances(client, tenant)


def _insight(tenant: str, learner: str, moment: datetime, n: int, rng: random.Random) -> InsightRow:
    return InsightRow(
        tenant=tenant,
        utterance_id=f"{learner}-utt-{n:03d}",
        user_id=learner,
        ts=moment.replace(tzinfo=None),
        sentiment=round(rng.uniform(-1, 1), 2),
        topics=rng.sample(TOPICS, rng.randint(1, 2)),
        confidence=round(rng.uniform(0.3, 1), 2),
        reasoning="seeded",
        model="fake-model",
        prompt_version="insights-v1",
        parse_status="strict",
        attempts=1,
        latency_ms=10,
        failure_reason=None,
        analyzed_at=NOW.replace(tzinfo=None),
    )


async def _utterances(client: Any, tenant: Tenant) -> None:
    r = await client.post(
        "/v1/conversations", json={"user_id": LEARNERS[1]}, headers=tenant.headers
    )
    assert r.status_code == 201, r.text
    conversation = r.json()["conversation_id"]
    for i, utterance_id in enumerate(UTTERANCES):
        body = {
            "utterance_id": utterance_id,
            "conversation_id": conversation,
            "user_id": LEARNERS[1],
            "text": f"Yesterday I goed to the market number {i}.",
            "timestamp": (NOW - timedelta(hours=i + 1)).isoformat(),
            "errors": [{"category": "grammar", "subcategory": "past tense"}],
            "words_learned": i,
        }
        r = await client.post("/v1/utterances", json=body, headers=tenant.headers)
        assert r.status_code == 202, r.text


def own_watermarks(client: Any, db: Db) -> None:
    """Point the app at flow names of this test's own, each with its
    watermark at NOW, so no running dataflow moves `as_of` between two reads."""
    served = client.app.state.services.served
    statement = db.prepare(DATAFLOW_PROGRESS.insert())
    suffix = f"{random.getrandbits(32):08x}"
    for kind in ("error_flow", "learning_flow", "insights_flow"):
        name = f"test-ask-{kind}-{suffix}"
        setattr(served, kind, name)
        db.session.execute(statement, DATAFLOW_PROGRESS.values(ProgressRow(name, 0, NOW, NOW)))
