"""GET /v1/insights and the insight in GET /v1/utterances/{id}, against the
real Cassandra, with insights recorded by the dataflow's own writer
(dataflows/insight_writer.py). Each expected answer is a filter and sort of
the seeded insights worked out here, with no partition arithmetic."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from api.app import create_app
from api.reads.served import WATERMARK_REUSE_S
from cql.insights import INSIGHTS, InsightRow
from cql.learning import DATAFLOW_PROGRESS, ProgressRow
from cql.session import Db
from cql.utterances import UTTERANCES
from dataflows.writers.insight_writer import InsightWriter
from runtime.settings import Settings
from tests.conftest import Tenant, new_tenant
from tests.served_seed import Seeder

TOPICS = ["travel", "food", "work", "family", "school"]
# Thirty hours across a month boundary: user walks cross two month partitions.
BASE = datetime(2025, 3, 31, 6)
SPAN_H = 30
USERS = ["ana", "ben", "chloe"]


def insight(
    tenant: str, user_id: str, ts: datetime, rng: random.Random, **changes: Any
) -> InsightRow:
    fields: dict[str, Any] = {
        "tenant": tenant,
        "utterance_id": f"utt-{rng.getrandbits(40):010x}",
        "user_id": user_id,
        "ts": ts,
        # Two decimals, so filters often land exactly on stored values.
        "sentiment": round(rng.uniform(-1, 1), 2),
        "topics": rng.sample(TOPICS, rng.randint(0, 3)),
        "confidence": round(rng.random(), 2),
        "reasoning": "because",
        "model": "fake-model",
        "prompt_version": "insights-v1",
        "parse_status": rng.choice(["strict", "repaired"]),
        "attempts": 1,
        "latency_ms": 12,
        "failure_reason": None,
        "analyzed_at": datetime(2025, 4, 2),
    }
    return InsightRow(**(fields | changes))


def failed(row: InsightRow) -> InsightRow:
    return InsightRow(
        row.tenant, row.utterance_id, row.user_id, row.ts, None, None, None, None, row.model,
        row.prompt_version, "failed", 3, 900, "503 after 3 attempts", row.analyzed_at,
    )  # fmt: skip


def record(db: Db, settings: Settings, rows: list[InsightRow]) -> None:
    async def write_all() -> None:
        writer = InsightWriter(db, settings)
        await asyncio.gather(*(writer.record(row, None) for row in rows))

    asyncio.run(write_all())


def seeded_rows(
    tenant: str, rng: random.Random, n: int, start: datetime, hours: int
) -> list[InsightRow]:
    rows = []
    for _ in range(n):
        ts = start + timedelta(milliseconds=rng.randrange(hours * 3_600_000))
        rows.append(insight(tenant, rng.choice(USERS), ts, rng))
    # Ties on ts, ordered by utterance_id; and failures, which are never served.
    rows += [insight(tenant, rng.choice(USERS), rows[i].ts, rng) for i in range(0, n, 10)]
    rows += [failed(insight(tenant, rng.choice(USERS), rows[i].ts, rng)) for i in range(5, n, 10)]
    return rows


class Dataset:
    def __init__(self, tenant: Tenant, rows: list[InsightRow]) -> None:
        self.tenant = tenant
        self.rows = rows

    def expected(self, params: dict[str, Any]) -> list[str]:
        start = _instant(params["from"])
        end = _instant(params["to"])
        low = float(params.get("sentiment_min", -1))
        high = float(params.get("sentiment_max", 1))
        least = float(params.get("min_confidence", 0))
        topic = params.get("topic")
        matching = [
            row
            for row in self.rows
            if row.parse_status != "failed"
            and start <= row.ts.replace(tzinfo=UTC) < end
            and row.confidence >= least
            and low <= row.sentiment <= high
            and params.get("user_id", row.user_id) == row.user_id
            and (topic is None or " ".join(topic.lower().split()) in (row.topics or ()))
        ]
        return [row.utterance_id for row in sorted(matching, key=lambda r: (r.ts, r.utterance_id))]


def _instant(raw: str) -> datetime:
    return datetime.fromisoformat(raw)


def at(hours: float) -> str:
    return (BASE + timedelta(hours=hours)).replace(tzinfo=UTC).isoformat()


@pytest.fixture(scope="module")
def api(migrated: Settings) -> Iterator[TestClient]:
    with TestClient(app=create_app(migrated)) as client:
        yield client


@pytest.fixture(scope="module")
def dataset(db: Db, migrated: Settings) -> Dataset:
    tenant = new_tenant(db)
    rows = seeded_rows(tenant.name, random.Random(20250331), 150, BASE, SPAN_H)
    record(db, migrated, rows)
    seeder = Seeder(db, tenant.name)
    for user_id in USERS:
        seeder.learner(user_id)
    return Dataset(tenant, rows)


def get(api: TestClient, tenant: Tenant, params: dict[str, Any]) -> Any:
    return api.get("/v1/insights", params=params, headers=tenant.headers)


def walk(
    api: TestClient, tenant: Tenant, params: dict[str, Any], limits: Iterator[int]
) -> list[dict]:
    found: list[dict] = []
    token = None
    for _page in range(10_000):
        page_params = params | {"limit": next(limits)} | ({"page_token": token} if token else {})
        r = get(api, tenant, page_params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["insights"]) <= page_params["limit"]
        found += body["insights"]
        token = body["next_page_token"]
        if token is None:
            return found
    raise AssertionError("the walk did not end")


# ---- every page, every filter


offsets_h = st.integers(-4 * 60, (SPAN_H + 2) * 60).map(lambda m: m / 60)


@st.composite
def filters(draw: st.DrawFn) -> dict[str, Any]:
    """Each filter in about a third of the walks. Hypothesis favours the
    simplest values, so those are the widest: most walks match something."""
    start = draw(offsets_h)
    longest = (SPAN_H + 4) * 60
    length = (longest - draw(st.integers(0, longest - 1))) / 60
    params: dict[str, Any] = {"from": at(start), "to": at(start + length)}
    if draw(st.integers(0, 2)) == 0:
        params["min_confidence"] = draw(st.integers(0, 20)) / 20
    if draw(st.integers(0, 2)) == 0:
        low, high = sorted((-1 + draw(st.integers(0, 20)) / 10, 1 - draw(st.integers(0, 20)) / 10))
        params |= {"sentiment_min": low, "sentiment_max": high}
    if draw(st.integers(0, 3)) == 0:
        params["user_id"] = draw(st.sampled_from(USERS))
    if draw(st.integers(0, 3)) == 0:
        params["topic"] = draw(st.sampled_from([*TOPICS, "Travel", " FOOD ", "sports"]))
    return params


@pytest.mark.slow
@hypothesis_settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(params=filters(), data=st.data())
def test_walking_every_page_returns_the_filtered_set_once_in_order(
    api: TestClient, dataset: Dataset, params: dict[str, Any], data: st.DataObject
) -> None:
    note(repr(params))
    expected = dataset.expected(params)
    # Limits change from page to page; small ones only where few match, so
    # a walk stays a few dozen pages.
    smallest = max(1, len(expected) // 12)
    limits = data.draw(st.lists(st.integers(smallest, smallest * 3), min_size=1, max_size=4))
    found = walk(api, dataset.tenant, params, itertools.cycle(limits))
    assert [i["utterance_id"] for i in found] == expected
    event(f"matching: {_bucket(len(expected))}")


def _bucket(n: int) -> str:
    return "none" if n == 0 else "1-10" if n <= 10 else "11-50" if n <= 50 else "over 50"


def test_an_insight_carries_its_provenance_in_utc(api: TestClient, dataset: Dataset) -> None:
    row = next(r for r in dataset.rows if r.parse_status != "failed" and r.topics)
    ts = row.ts.replace(tzinfo=UTC)
    params = {
        "from": ts.isoformat(),
        "to": (ts + timedelta(milliseconds=1)).isoformat(),
        "user_id": row.user_id,
    }
    body = get(api, dataset.tenant, params).json()
    [found] = [i for i in body["insights"] if i["utterance_id"] == row.utterance_id]
    assert found == {
        "utterance_id": row.utterance_id,
        "user_id": row.user_id,
        "timestamp": ts.isoformat().replace("+00:00", "Z"),
        "sentiment": row.sentiment,
        "topics": sorted(row.topics or ()),
        "confidence": row.confidence,
        "reasoning": "because",
        "model": "fake-model",
        "prompt_version": "insights-v1",
        "parse_status": row.parse_status,
    }
    assert body["next_page_token"] is None


def test_an_offset_range_is_the_same_instants(api: TestClient, dataset: Dataset) -> None:
    utc = {"from": at(3), "to": at(9)}
    kolkata, santiago = timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-3))
    local = {
        "from": _instant(at(3)).astimezone(kolkata).isoformat(),
        "to": _instant(at(9)).astimezone(santiago).isoformat(),
    }
    assert local["from"].endswith("+05:30")
    ids = [i["utterance_id"] for i in walk(api, dataset.tenant, local, iter(lambda: 1000, None))]
    assert ids == dataset.expected(utc)


# ---- pages are bounded, and the walk is stable while insights arrive


def test_a_sparse_range_gives_short_pages_with_tokens_until_it_is_exhausted(
    api: TestClient, db: Db, migrated: Settings
) -> None:
    tenant = new_tenant(db)
    rng = random.Random(5)
    early = [insight(tenant.name, "ana", BASE + timedelta(minutes=m), rng) for m in (1, 2)]
    late = [
        insight(tenant.name, "ana", BASE + timedelta(hours=100, minutes=m), rng) for m in (1, 2)
    ]
    record(db, migrated, early + late)
    params = {"from": at(0), "to": at(120), "limit": 100}
    pages = []
    token = None
    while True:
        body = get(api, tenant, params | ({"page_token": token} if token else {})).json()
        pages.append([i["utterance_id"] for i in body["insights"]])
        token = body["next_page_token"]
        if token is None:
            break
    # Hours 0-47, then 48-95 (nothing), then 96-119.
    assert pages == [[r.utterance_id for r in early], [], [r.utterance_id for r in late]]


def test_insights_arriving_mid_walk_cause_no_duplicates_or_skips(
    api: TestClient, db: Db, migrated: Settings
) -> None:
    tenant = new_tenant(db)
    rng = random.Random(11)
    rows = seeded_rows(tenant.name, rng, 60, BASE, 6)
    record(db, migrated, rows)
    dataset = Dataset(tenant, rows)
    params = {"from": at(0), "to": at(6)}
    original = dataset.expected(params)

    found: list[dict] = []
    token = None
    for _ in range(3):
        body = get(
            api, tenant, params | {"limit": 7} | ({"page_token": token} if token else {})
        ).json()
        found += body["insights"]
        token = body["next_page_token"]
    assert len(found) == 21
    cursor = _instant(found[-1]["timestamp"]).replace(tzinfo=None)
    # New insights behind the position, at it and ahead of it.
    arrivals = [
        insight(tenant.name, "ana", cursor + timedelta(milliseconds=offset), rng)
        for offset in (-3_600_000, -1, 0, 0, 1, 60_000, 3 * 3_600_000)
    ]
    record(db, migrated, arrivals)
    while token is not None:
        body = get(api, tenant, params | {"limit": 7, "page_token": token}).json()
        found += body["insights"]
        token = body["next_page_token"]

    ids = [i["utterance_id"] for i in found]
    assert len(ids) == len(set(ids))
    keys = [(_instant(i["timestamp"]), i["utterance_id"]) for i in found]
    assert keys == sorted(keys)
    assert set(original) <= set(ids)
    # Those ahead of the position when they arrived are returned, the others not.
    position = keys[20]
    ahead = {
        r.utterance_id
        for r in arrivals
        if (r.ts.replace(tzinfo=UTC), r.utterance_id) > position
        and r.ts < BASE + timedelta(hours=6)
    }
    assert set(ids) - set(original) == ahead


# ---- tenants and bad parameters


def test_another_tenant_sees_none_of_them(api: TestClient, db: Db, dataset: Dataset) -> None:
    other = new_tenant(db)
    body = get(api, other, {"from": at(0), "to": at(SPAN_H), "limit": 1000}).json()
    assert (body["insights"], body["next_page_token"]) == ([], None)
    assert dataset.expected({"from": at(0), "to": at(SPAN_H)})


GOOD = {"from": "2025-03-31T00:00:00Z", "to": "2025-04-01T00:00:00+02:00"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"from": None}, "from"),
        ({"from": "2025-03-31T00:00:00"}, "from"),
        ({"to": "tomorrow"}, "to"),
        ({"to": "2025-03-31T00:00:00Z"}, "to"),  # equal to `from`
        ({"to": "2025-05-02T00:00:00Z"}, "to"),  # 32 days
        ({"min_confidence": "1.5"}, "min_confidence"),
        ({"min_confidence": "nan"}, "min_confidence"),
        ({"sentiment_min": "-1.01"}, "sentiment_min"),
        ({"sentiment_max": "high"}, "sentiment_max"),
        ({"sentiment_min": "0.5", "sentiment_max": "0.4"}, "sentiment_min"),
        ({"user_id": "no spaces allowed"}, "user_id"),
        ({"topic": "   "}, "topic"),
        ({"topic": "x" * 41}, "topic"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"pagetoken": "x"}, "pagetoken"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    api: TestClient, dataset: Dataset, changes: dict[str, Any], field: str
) -> None:
    params = {k: v for k, v in (GOOD | changes).items() if v is not None}
    r = get(api, dataset.tenant, params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == field


def test_a_token_is_refused_with_other_filters_and_accepted_with_another_limit(
    api: TestClient, dataset: Dataset
) -> None:
    params = {"from": at(0), "to": at(SPAN_H), "limit": 3}
    token = get(api, dataset.tenant, params).json()["next_page_token"]
    assert token
    other = get(api, dataset.tenant, params | {"min_confidence": 0.5, "page_token": token})
    assert other.status_code == 400 and other.json()["field"] == "page_token"
    assert "other filters" in other.json()["detail"]
    more = get(api, dataset.tenant, params | {"limit": 5, "page_token": token})
    assert more.status_code == 200
    expected = dataset.expected(params)
    assert [i["utterance_id"] for i in more.json()["insights"]] == expected[3:8]


# ---- GET /v1/utterances/{id}


def posted(api: TestClient, tenant: Tenant) -> tuple[str, str]:
    """A new utterance of learner ana, posted through the API: its id and path."""
    user = api.post(
        "/v1/users",
        json={"user_id": "ana", "email": "ana@example.com", "name": "Ana"},
        headers=tenant.headers,
    )
    assert user.status_code in (201, 409), user.text
    conversation = api.post("/v1/conversations", json={"user_id": "ana"}, headers=tenant.headers)
    utterance_id = f"utt-{uuid.uuid4().hex}"
    accepted = api.post(
        "/v1/utterances",
        json={
            "utterance_id": utterance_id,
            "conversation_id": conversation.json()["conversation_id"],
            "user_id": "ana",
            "text": "I loved the beach.",
            "timestamp": "2025-03-31T10:00:00Z",
        },
        headers=tenant.headers,
    )
    assert accepted.status_code == 202, accepted.text
    return utterance_id, f"/v1/utterances/{utterance_id}"


def analysed(db: Db, settings: Settings, tenant: Tenant, utterance_id: str) -> InsightRow:
    """Record an insight of the utterance the way the insights flow does."""
    row = insight(tenant.name, "ana", datetime(2025, 3, 31, 10), random.Random(1))
    row = InsightRow(**{**_fields(row), "utterance_id": utterance_id})
    record(db, settings, [row])
    return row


def test_an_utterance_shows_its_insight_with_provenance_or_why_it_failed(
    api: TestClient, db: Db, migrated: Settings, tenant: Tenant
) -> None:
    utterance_id, path = posted(api, tenant)
    before = api.get(path, headers=tenant.headers).json()
    assert (before["status"], before["insight"]) == ("pending", None)

    row = analysed(db, migrated, tenant, utterance_id)
    done = api.get(path, headers=tenant.headers).json()
    assert done["status"] == "completed" and done["status_reason"] is None
    assert done["insight"] == {
        "sentiment": row.sentiment,
        "topics": row.topics,
        "confidence": row.confidence,
        "reasoning": "because",
        "model": "fake-model",
        "prompt_version": "insights-v1",
        "parse_status": row.parse_status,
        "attempts": 1,
        "latency_ms": 12,
        "failure_reason": None,
        "analyzed_at": "2025-04-02T00:00:00Z",
    }

    record(db, migrated, [failed(row)])
    gone = api.get(path, headers=tenant.headers).json()
    assert gone["status"] == "failed" and gone["status_reason"] == "503 after 3 attempts"
    assert gone["insight"]["parse_status"] == "failed"
    assert gone["insight"]["failure_reason"] == "503 after 3 attempts"
    assert gone["insight"]["sentiment"] is None and gone["insight"]["attempts"] == 3


def test_an_utterance_and_its_insight_are_one_row(
    api: TestClient, db: Db, migrated: Settings, tenant: Tenant
) -> None:
    utterance_id, path = posted(api, tenant)
    row = analysed(db, migrated, tenant, utterance_id)
    expected = api.get(path, headers=tenant.headers).json()
    assert expected["insight"]["model"] == row.model
    # The record may go (it is not what GET reads) and a client's retried
    # insert of the utterance may come: neither takes the insight away.
    db.session.execute(db.prepare(INSIGHTS.delete()), (tenant.name, utterance_id))
    stored = UTTERANCES.from_row(
        db.session.execute(db.prepare(UTTERANCES.select()), (tenant.name, utterance_id)).one()
    )
    db.session.execute(db.prepare(UTTERANCES.insert()), UTTERANCES.values(stored))
    assert api.get(path, headers=tenant.headers).json() == expected


@pytest.mark.parametrize("held", [None, '{"written": "by another version"}'])
def test_an_insight_its_row_does_not_hold_readably_is_read_from_its_record(
    api: TestClient, db: Db, migrated: Settings, tenant: Tenant, held: str | None
) -> None:
    utterance_id, path = posted(api, tenant)
    row = analysed(db, migrated, tenant, utterance_id)
    db.session.execute(
        db.prepare(UTTERANCES.update(["insight"])), (held, tenant.name, utterance_id)
    )
    shown = api.get(path, headers=tenant.headers).json()
    assert shown["status"] == "completed"
    assert shown["insight"]["model"] == row.model
    assert shown["insight"]["confidence"] == row.confidence


def _fields(row: InsightRow) -> dict[str, Any]:
    return {f: getattr(row, f) for f in row.__struct_fields__}


# ---- dates, as_of and learners as on every read


def test_dates_are_days_in_tz(api: TestClient, dataset: Dataset) -> None:
    params = {"from": "2025-03-31", "to": "2025-04-01", "tz": "Asia/Kolkata", "limit": 1000}
    ids = [i["utterance_id"] for i in walk(api, dataset.tenant, params, iter(lambda: 1000, None))]
    expected = dataset.expected(
        {"from": "2025-03-31T00:00:00+05:30", "to": "2025-04-01T00:00:00+05:30"}
    )
    assert expected and ids == expected
    bad_zone = get(api, dataset.tenant, params | {"tz": "Asia/Calcutta "})
    assert bad_zone.status_code == 400 and bad_zone.json()["field"] == "tz"


def test_as_of_is_the_insights_flow_progress(api: TestClient, db: Db, dataset: Dataset) -> None:
    served = api.app.state.services.served
    flow, served.insights_flow = served.insights_flow, f"test-insights-{uuid.uuid4().hex[:8]}"
    try:
        params = {"from": at(0), "to": at(1)}
        assert get(api, dataset.tenant, params).json()["as_of"] is None
        statement = db.prepare(DATAFLOW_PROGRESS.insert())
        for shard, position in ((0, datetime(2026, 5, 1, 12)), (1, datetime(2026, 5, 1, 11))):
            row = ProgressRow(served.insights_flow, shard, position, position)
            db.session.execute(statement, DATAFLOW_PROGRESS.values(row))
        time.sleep(WATERMARK_REUSE_S)  # the worker's last read is reused until then
        assert get(api, dataset.tenant, params).json()["as_of"] == "2026-05-01T11:00:00Z"
    finally:
        served.insights_flow = flow


def test_an_unknown_learner_is_404(api: TestClient, dataset: Dataset) -> None:
    r = get(api, dataset.tenant, {"from": at(0), "to": at(1), "user_id": "nobody"})
    assert r.status_code == 404, r.text
    assert r.json()["field"] == "user_id"
    assert get(api, dataset.tenant, {"from": at(0), "to": at(1), "user_id": "ana"}).is_success
