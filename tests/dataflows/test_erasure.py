"""Erasing a learner end to end, with the real API process and the flows
run over the change feed: after the DELETE each flow deletes what it
derived for the learner, nothing of it comes back when the flows read the
whole feed again or a replay rebuilds their tables, another learner's
numbers still equal the oracle's recount, and the id created again counts
from zero."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import httpx
import pytest
from bytewax.testing import run_main

from cql.clock import utc_now
from cql.insights import INSIGHTS
from cql.utterances import UTTERANCES
from dataflows import error_counters, insights, learning
from dataflows.commands import replay
from dataflows.connectors.feed_source import FeedSource
from tests import dataflow_helpers as df
from tests import oracle
from tests.conftest import new_tenant
from tests.dataflows.test_insights_flow import in_process_settings


def served(db, tenant: str, utterances: list, late_after_s: float) -> tuple:
    return (
        df.served_error_counts(db, tenant, utterances, late_after_s),
        df.served_error_totals(db, tenant, utterances),
        df.error_facts(db, tenant, utterances),
        df.served_quarter_hours(db, tenant, utterances),
    )


def recounted(utterances: list, late_after_s: float) -> tuple:
    return (
        oracle.error_counts(utterances, late_after_s),
        oracle.error_totals(utterances),
        oracle.error_points(utterances),
        oracle.quarter_hours(utterances, late_after_s),
    )


def insight_rows(db, tenant: str, ids: list[str]) -> dict[str, list]:
    found = {}
    for table in (INSIGHTS, UTTERANCES):
        statement = db.prepare(table.select())
        found[table.name] = [row for i in ids for row in db.session.execute(statement, (tenant, i))]
    return found


def run_insights(settings, start) -> None:
    source = FeedSource(
        f"test-erasure-{uuid.uuid4().hex[:8]}", settings, start=start, stop_at=utc_now()
    )
    run_main(insights.get_flow(source=source, settings=settings))


@pytest.mark.slow
def test_an_erased_learner_leaves_every_served_table_and_stays_out(api, db, migrated):
    tenant = new_tenant(db)
    settings = in_process_settings(df.flow_settings(migrated), base_url="", model="")
    late_after = settings.dataflow.late_after_s
    start = utc_now() - timedelta(seconds=1)
    with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=30) as http:
        learners = df.create_learners(http, 3)
        items = df.random_utterances(random.Random(7), learners, 90, df.now_utc())
        df.post_all(http, items)
        ids = [item["utterance_id"] for item in items]
        everything = oracle.load_utterances(db, tenant.name, ids)
        erased = learners[0][0]
        mine = [u for u in everything if u.user_id == erased]
        rest = [u for u in everything if u.user_id != erased]
        assert mine and rest

        def run_flows() -> None:
            for flow in (error_counters, learning):
                df.run_to_end(flow, settings, start)
            run_insights(settings, start)

        run_flows()
        assert served(db, tenant.name, mine, late_after) == recounted(mine, late_after)
        assert len(
            insight_rows(db, tenant.name, [u.utterance_id for u in mine])["insights_by_utterance"]
        ) == len(mine)

        r = http.delete(f"/v1/users/{erased}")
        assert r.status_code == 200, r.text
        # The flows read the whole feed again: the learner's old entries
        # and then the erase entries.
        run_flows()
        nothing = ({}, {}, set(), {})
        assert served(db, tenant.name, mine, late_after) == nothing
        assert served(db, tenant.name, rest, late_after) == recounted(rest, late_after)
        mine_ids = [u.utterance_id for u in mine]
        assert insight_rows(db, tenant.name, mine_ids) == {
            "insights_by_utterance": [], "utterances_by_id": []
        }  # fmt: skip

        # A replay rebuilds the tables from the feed: still nothing of it.
        for flow in (error_counters, learning):
            replay.replay(flow.FLOW, settings, start=start, workers=2)
        assert served(db, tenant.name, mine, late_after) == nothing
        assert served(db, tenant.name, rest, late_after) == recounted(rest, late_after)

        # The id created again starts from zero.
        learners_again = [(erased, _recreate(http, erased))]
        fresh = df.random_utterances(random.Random(8), learners_again, 5, df.now_utc())
        df.post_all(http, fresh)
    run_flows()
    new = oracle.load_utterances(db, tenant.name, [i["utterance_id"] for i in fresh])
    assert served(db, tenant.name, mine + new, late_after) == recounted(new, late_after)


def _recreate(http: httpx.Client, user_id: str) -> str:
    r = http.post("/v1/users", json={"user_id": user_id, "email": "x@example.com", "name": "X"})
    assert r.status_code == 201, r.text
    r = http.post("/v1/conversations", json={"user_id": user_id})
    assert r.status_code == 201, r.text
    return r.json()["conversation_id"]
