"""What the error endpoints show of what was written, against the real
Cassandra: labels are case-insensitive from the POST on, and a window's
as_of is never earlier than the newest utterance counted in it, whatever
watermark the error-counter flow's batch carried."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from cql.clock import to_stored_time
from cql.error_counts import ErrorPointFact
from dataflows.connectors.sinks import Stamped
from dataflows.writers.error_writer import ErrorCountWriter
from tests.conftest import Tenant
from tests.helpers import Served, learner, utterance
from tests.served_seed import Seeder, own_flows, utc

# ---- labels


async def test_labels_are_stored_in_lower_case_and_a_resend_in_another_case_is_the_same(
    client, tenant: Tenant
) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    utterance_id = f"utt-{uuid.uuid4().hex[:8]}"
    sent = utterance(
        user_id,
        conversation_id,
        utterance_id=utterance_id,
        errors=[{"category": "GRAMMAR", "subcategory": "Past Tense"}],
    )
    r = await client.post("/v1/utterances", json=sent, headers=tenant.headers)
    assert r.status_code == 202, r.text
    stored = (await client.get(f"/v1/utterances/{utterance_id}", headers=tenant.headers)).json()
    assert stored["errors"] == [{"category": "grammar", "subcategory": "past tense"}]
    again = sent | {"errors": [{"category": "grammar", "subcategory": "PAST TENSE"}]}
    r = await client.post("/v1/utterances", json=again, headers=tenant.headers)
    assert r.status_code in (200, 202), r.text
    assert r.json()["duplicate"] is True


async def test_batch_items_are_lower_cased_too(client, tenant: Tenant) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    utterance_id = f"utt-{uuid.uuid4().hex[:8]}"
    item = utterance(
        user_id,
        conversation_id,
        utterance_id=utterance_id,
        errors=[{"category": "Vocabulary", "subcategory": "Word Choice"}],
    )
    r = await client.post(
        "/v1/utterances/batch", json={"utterances": [item]}, headers=tenant.headers
    )
    assert r.status_code in (200, 202, 207), r.text
    stored = (await client.get(f"/v1/utterances/{utterance_id}", headers=tenant.headers)).json()
    assert stored["errors"] == [{"category": "vocabulary", "subcategory": "word choice"}]


# ---- a window's as_of


async def test_a_window_is_never_older_than_its_newest_utterance(
    client, db, migrated, tenant: Tenant
) -> None:
    """The report: window as_of 08:42:49 for an utterance received at
    08:44:05. A batch's watermark lags the entries it carries (by a sweep
    and the flow's hold, by up to a poll's span while catching up), so the
    writer must not stamp the rows with it alone."""
    own_flows(client, db, position=None)
    user_id = Seeder(db, tenant.name).learner()
    ts = utc(2026, 11, 2, 8, 43, 30)
    received = to_stored_time(utc(2026, 11, 2, 8, 44, 5))
    stale = to_stored_time(utc(2026, 11, 2, 8, 42, 49))
    fact = ErrorPointFact(
        tenant.name,
        user_id,
        datetime(2026, 11, 2),
        to_stored_time(ts),
        "utt-late",
        0,
        "grammar",
        "articles",
        received,
    )
    ErrorCountWriter(db, migrated).write([Stamped(fact, stale)])
    errors = Served(client, tenant, "errors")
    for window in ("minute", "hour", "day", "month"):
        body = await errors.ok(user_id, window=window, from_="2026-11-02", to="2026-11-03")
        [served] = body["windows"]
        assert served["counts"] == [{"category": "grammar", "subcategory": "articles", "count": 1}]
        as_of = datetime.fromisoformat(served["as_of"])
        assert as_of >= received.replace(tzinfo=UTC), (window, served["as_of"])
    # A later batch, by a writer that reads the rows back from Cassandra,
    # with an earlier utterance and the same stale watermark: the day and the
    # month stay no older than the newest utterance counted.
    earlier = received - timedelta(seconds=30)
    second = ErrorPointFact(
        tenant.name,
        user_id,
        datetime(2026, 11, 2),
        to_stored_time(ts - timedelta(hours=2)),
        "utt-earlier",
        0,
        "grammar",
        "articles",
        earlier,
    )
    ErrorCountWriter(db, migrated).write([Stamped(second, stale)])
    for window in ("day", "month"):
        body = await errors.ok(user_id, window=window, from_="2026-11-02", to="2026-11-03")
        [served] = body["windows"]
        assert served["counts"][0]["count"] == 2
        assert datetime.fromisoformat(served["as_of"]) >= received.replace(tzinfo=UTC)
