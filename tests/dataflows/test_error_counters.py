"""The error-counter flow: its steps, its wiring under one and two workers,
and, end to end (utterances sent to a real API process, the flow run over
the real feed into the real tables), every served window against an
independent recount from the base table."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from cassandra.util import uuid_from_time
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cql.change_feed import FeedEntry, bucket_of
from cql.clock import MINUTE, utc_now
from cql.error_counts import ERROR_POINTS, ErrorPointFact, Window, error_windows
from dataflows import error_counters
from dataflows.commands import replay
from dataflows.connectors.feed_source import FeedItem
from dataflows.connectors.sinks import merge_facts
from dataflows.windows import event_clock, window_hold
from dataflows.writers.error_writer import Tally, recount, sum_by_pair
from runtime.generations import generation_key
from tests import oracle
from tests.conftest import new_tenant
from tests.dataflow_helpers import (
    PAIRS,
    PatientApiProcess,
    create_learners,
    error_facts,
    flow_settings,
    now_utc,
    post_all,
    random_utterances,
    run_to_end,
    served_as_of,
    served_error_counts,
    served_error_totals,
    utterance,
    wipe,
    write_again_as_retry,
)

# ---- pure steps


def test_an_event_counts_in_its_minute_hour_and_day_each_in_its_partition():
    ts = datetime(2024, 3, 15, 13, 45, 30, 123000)
    assert error_windows(ts) == (
        Window(
            "minute",
            datetime(2024, 3, 15),
            datetime(2024, 3, 15, 13, 45),
            datetime(2024, 3, 15, 13, 46),
        ),
        Window("hour", datetime(2024, 3, 1), datetime(2024, 3, 15, 13), datetime(2024, 3, 15, 14)),
        Window("day", datetime(2024, 1, 1), datetime(2024, 3, 15), datetime(2024, 3, 16)),
    )


def fact(
    ts: datetime, written_at: datetime, point: int = 0, utterance_id: str = "a"
) -> ErrorPointFact:
    day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    return ErrorPointFact("t", "u", day, ts, utterance_id, point, "grammar", "articles", written_at)


def test_a_point_is_late_when_written_more_than_late_after_past_its_window_end():
    ts = datetime(2024, 3, 15, 13, 45, 30)
    minute_end = datetime(2024, 3, 15, 13, 46)
    on_time = fact(ts, minute_end + timedelta(seconds=60), utterance_id="a")
    late = fact(ts, minute_end + timedelta(seconds=60, milliseconds=1), utterance_id="b")
    windows = error_windows(ts)
    touched = {(w, ("grammar", "articles")) for w in windows}
    counts = recount([on_time, late], touched, timedelta(seconds=60))
    assert counts[(windows[0], ("grammar", "articles"))] == Tally(2, 1)
    assert counts[(windows[2], ("grammar", "articles"))] == Tally(2, 0)  # the day is not over


def test_only_touched_windows_and_pairs_are_recounted():
    ts = datetime(2024, 3, 15, 13, 45)
    other = msgspec.structs.replace(fact(ts, ts, point=1), category="spelling")
    minute = error_windows(ts)[0]
    counts = recount([fact(ts, ts), other], {(minute, ("grammar", "articles"))}, timedelta(0))
    assert counts == {(minute, ("grammar", "articles")): Tally(1, 0)}


def test_sums_by_pair_keep_only_the_asked_pairs():
    rows = [("grammar", "articles", 2, 1), ("grammar", "articles", 3, 0), ("spelling", "x", 9, 9)]
    assert sum_by_pair(rows, {("grammar", "articles")}) == {("grammar", "articles"): Tally(5, 1)}
    assert sum_by_pair([("g", "a", 4)], {("g", "a")}) == {("g", "a"): Tally(4, 0)}


def test_a_fact_keeps_its_latest_acceptance_whatever_order_they_come_in():
    ts = datetime(2024, 3, 15, 13, 45)
    first, retried = fact(ts, ts), fact(ts, ts + timedelta(minutes=5))
    for stored, batch in (([first], [retried]), ([retried], [first]), ([], [first, retried])):
        facts, changed = merge_facts(ERROR_POINTS, stored, batch)
        assert facts == [retried]
        assert changed == ([] if stored == [retried] else [retried])


def feed_item(tenant: str, user_id: str, utterance_id: str, ts: datetime, errors) -> FeedItem:
    now = utc_now()
    entry = FeedEntry(
        0,
        bucket_of(now, 60),
        uuid_from_time(now),
        tenant,
        utterance_id,
        user_id,
        "c",
        "x",
        ts,
        errors,
        0,
    )
    return FeedItem(entry, now)


def test_error_points_are_numbered_in_the_order_sent():
    ts = datetime(2024, 3, 15, 13, 45, 30)
    item = feed_item("t", "u", "a", ts, [("grammar", "articles"), ("grammar", "articles")])
    points = error_counters.error_points(item)
    assert [(p.row.point, p.row.day, p.as_of) for p in points] == [
        (0, datetime(2024, 3, 15), item.watermark),
        (1, datetime(2024, 3, 15), item.watermark),
    ]
    assert error_counters.error_points(feed_item("t", "u", "b", ts, [])) == []


def test_windows_of_old_events_are_rechecked_rather_than_busy_polled():
    clock = event_clock(10.0, lambda x: x)
    now = datetime.now(UTC)
    assert clock.to_system_utc(now - timedelta(hours=3)) >= now + timedelta(milliseconds=900)
    assert clock.to_system_utc(now + timedelta(seconds=30)) == now + timedelta(seconds=40)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_point_reaches_the_sink_once_in_learner_batches(migrated, workers):
    """On-time and late points alike, under one and two workers."""
    now = utc_now()
    items = []
    expected = Counter()
    rng = random.Random(7)
    for i in range(200):
        user_id = f"u{i % 7}"
        ts = now - timedelta(seconds=rng.choice([rng.uniform(0, 90), rng.uniform(0, 86400)]))
        errors = rng.choices(PAIRS, k=rng.randint(0, 3))
        items.append(feed_item("t", user_id, f"a{i}", ts, errors))
        expected.update((user_id, f"a{i}", p) for p in range(len(errors)))
    out: list = []
    flow = error_counters.get_flow(
        source=TestingSource(items), sink=TestingSink(out), settings=migrated
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    got = Counter()
    for key, batch in out:
        assert {f"t\x1f{p.row.user_id}" for p in batch} == {key}
        got.update((p.row.user_id, p.row.utterance_id, p.row.point) for p in batch)
    assert got == expected


# ---- end to end


@pytest.fixture(scope="module")
def api(migrated):
    proc = PatientApiProcess(migrated)
    yield proc
    proc.stop()


ages_ms = st.one_of(
    st.integers(-20_000, 180_000),  # a little ahead of the server's clock, to minutes old
    st.integers(0, 7_200_000),  # hours old
    st.integers(0, 259_200_000),  # days old
    st.integers(0, 34_560_000_000),  # up to 400 days: other months and years
)
utterance_specs = st.lists(
    st.tuples(
        st.integers(0, 2),
        ages_ms,
        st.lists(st.sampled_from(PAIRS), max_size=3),
        st.sampled_from(["once", "posted_twice", "retried"]),
    ),
    min_size=1,
    max_size=40,
)


@pytest.mark.slow
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=utterance_specs)
def test_served_counts_equal_a_recount_from_the_base_table(specs, api, db, migrated, redis_client):
    settings = flow_settings(migrated)
    tenant = new_tenant(db)
    start = utc_now() - timedelta(seconds=1)
    with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=30) as http:
        learners = create_learners(http, 3)
        now = now_utc()
        items = [
            utterance(learners[who], now - timedelta(milliseconds=age), errors, 1)
            for who, age, errors, _ in specs
        ]
        post_all(http, items)  # in the order drawn: timestamps out of order
        post_all(
            http,
            [item for item, spec in zip(items, specs, strict=True) if spec[3] == "posted_twice"],
        )
    ids = [item["utterance_id"] for item in items]
    write_again_as_retry(
        db, settings, tenant.name, [i for i, s in zip(ids, specs, strict=True) if s[3] == "retried"]
    )
    generations = {
        u: int(redis_client.get(generation_key(tenant.name, u)) or 0) for u, _ in learners
    }

    run_to_end(error_counters, settings, start)

    utterances = oracle.load_utterances(db, tenant.name, ids)
    late_after = settings.dataflow.late_after_s
    assert served_error_counts(db, tenant.name, utterances) == oracle.error_counts(
        utterances, late_after
    )
    # as_of: the read position less the flow's hold, never ahead of it.
    hold = window_hold(MINUTE, settings.dataflow)
    assert all(as_of <= utc_now() - hold for as_of in served_as_of(db, tenant.name, utterances))
    assert served_error_totals(db, tenant.name, utterances) == oracle.error_totals(utterances)
    assert error_facts(db, tenant.name, utterances) == oracle.error_points(utterances)
    for user_id in {u.user_id for u in utterances if u.errors}:
        assert int(redis_client.get(generation_key(tenant.name, user_id))) > generations[user_id]


@pytest.mark.slow
def test_one_or_two_workers_and_a_replay_write_identical_tables(api, db, migrated):
    settings = flow_settings(migrated)
    tenant = new_tenant(db)
    start = utc_now() - timedelta(seconds=1)
    with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=30) as http:
        learners = create_learners(http, 6)
        items = random_utterances(random.Random(11), learners, 400, now_utc())
        post_all(http, items)
    ids = [item["utterance_id"] for item in items]
    write_again_as_retry(db, settings, tenant.name, ids[::10])
    utterances = oracle.load_utterances(db, tenant.name, ids)

    def tables():
        return (
            served_error_counts(db, tenant.name, utterances),
            served_error_totals(db, tenant.name, utterances),
            error_facts(db, tenant.name, utterances),
        )

    run_to_end(error_counters, settings, start, workers=1)
    one_worker = tables()
    assert one_worker == (
        oracle.error_counts(utterances, settings.dataflow.late_after_s),
        oracle.error_totals(utterances),
        oracle.error_points(utterances),
    )
    wipe(db, tenant.name, utterances)
    assert tables() == ({}, {}, set())
    run_to_end(error_counters, settings, start, workers=2)
    assert tables() == one_worker

    entries = replay.replay(error_counters.FLOW, settings, start=start, workers=2)
    assert entries >= len(items) + len(ids[::10])
    assert tables() == one_worker
