"""The learning flow: its steps, its wiring under one and two workers, and,
end to end, every served quarter-hour bucket against an independent recount
from the base table; plus the oracle's own time-zone periods."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from cassandra.util import uuid_from_time
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cql.change_feed import FeedEntry, bucket_of
from cql.clock import utc_now
from cql.learning import LearningFact
from cql.utterances import UtteranceRow
from dataflows import learning
from dataflows.connectors.feed_source import FeedItem
from dataflows.writers.learning_writer import Bucket, recount_buckets
from tests import dataflow_helpers as df
from tests import oracle

# ---- pure steps


def fact(ts: datetime, words: int, written_at: datetime, utterance_id: str) -> LearningFact:
    return LearningFact(
        "t",
        "u",
        ts.replace(hour=0, minute=0, second=0, microsecond=0),
        ts,
        utterance_id,
        words,
        written_at,
    )


def test_buckets_are_utc_quarter_hours_and_late_is_past_their_end():
    end = datetime(2024, 3, 15, 13, 45)
    facts = [
        fact(datetime(2024, 3, 15, 13, 30), 3, end + timedelta(seconds=60), "a"),
        fact(datetime(2024, 3, 15, 13, 44, 59, 999000), 4, end + timedelta(seconds=61), "b"),
        fact(datetime(2024, 3, 15, 13, 45), 5, end, "c"),
    ]
    buckets = recount_buckets(facts, {datetime(2024, 3, 15, 13, 30)}, timedelta(seconds=60))
    assert buckets == {datetime(2024, 3, 15, 13, 30): Bucket(2, 7, 1)}


def test_an_utterance_becomes_one_learning_fact_even_without_words():
    now = utc_now()
    ts = datetime(2024, 3, 15, 13, 44, 59)
    entry = FeedEntry(
        0, bucket_of(now, 60), uuid_from_time(now), "t", "a", "u", "c", "x", ts, [], 0
    )
    event = learning.learning_event(FeedItem(entry, now))
    assert event.row == LearningFact("t", "u", datetime(2024, 3, 15), ts, "a", 0, now)
    assert event.as_of == now


@pytest.mark.parametrize("workers", [1, 2])
def test_every_utterance_reaches_the_sink_once_in_learner_batches(migrated, workers):
    now = utc_now()
    rng = random.Random(3)
    items = []
    for i in range(200):
        ts = now - timedelta(seconds=rng.choice([rng.uniform(0, 900), rng.uniform(0, 86400)]))
        items.append(df.feed_item("t", f"u{i % 5}", f"a{i}", ts, [], words=i))
    batches = df.learner_batches(learning, items, migrated, workers)
    got = Counter(e.row.utterance_id for batch in batches for e in batch)
    assert got == Counter(f"a{i}" for i in range(200))


# ---- the oracle's periods, which the API's tests reuse


def row(ts: datetime, words: int) -> UtteranceRow:
    return UtteranceRow("t", "a", "u", "c", "x", ts, [], words, ts, "pending", None, ts)


def test_oracle_periods_follow_local_days_weeks_and_months():
    # 18:45 UTC is already the next day in Kolkata (+05:30) and Kathmandu (+05:45).
    late_evening = row(datetime(2024, 3, 31, 18, 45), 2)
    assert oracle.learning_periods([late_evening], "day", "Asia/Kolkata") == {
        ("u", date(2024, 4, 1)): (1, 2)
    }
    assert oracle.learning_periods([late_evening], "day", "Asia/Kathmandu") == {
        ("u", date(2024, 4, 1)): (1, 2)
    }
    assert oracle.learning_periods([late_evening], "month", "UTC") == {
        ("u", date(2024, 3, 1)): (1, 2)
    }
    assert oracle.learning_periods([late_evening], "week", "Asia/Kolkata") == {
        ("u", date(2024, 4, 1)): (1, 2)
    }
    # St. John's is -02:30 in summer (from 10 March 2024), -03:30 before.
    before, after = row(datetime(2024, 3, 10, 2, 0), 1), row(datetime(2024, 3, 11, 2, 0), 1)
    periods = oracle.learning_periods([before, after], "day", "America/St_Johns")
    assert periods == {("u", date(2024, 3, 9)): (1, 1), ("u", date(2024, 3, 10)): (1, 1)}
    assert oracle.local_midnight(date(2024, 3, 11), "America/St_Johns").utcoffset() == timedelta(
        hours=-2.5
    )


# ---- end to end


ages_ms = st.one_of(
    st.integers(-20_000, 1_800_000),  # ahead of the server's clock, to half an hour
    st.integers(0, 259_200_000),  # days old
    st.integers(0, 34_560_000_000),  # up to 400 days: other months and years
)
utterance_specs = df.drawn_specs(ages_ms, st.just([]), st.integers(0, 30))


@pytest.mark.slow
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=utterance_specs)
def test_served_buckets_equal_a_recount_from_the_base_table(specs, api, db, migrated):
    sent = df.send_drawn(api, db, migrated, specs)

    df.run_to_end(learning, sent.settings, sent.start)

    utterances = oracle.load_utterances(db, sent.tenant.name, sent.ids)
    expected = oracle.quarter_hours(utterances, sent.settings.dataflow.late_after_s)
    assert df.served_quarter_hours(db, sent.tenant.name, utterances) == expected


@pytest.mark.slow
def test_one_or_two_workers_and_a_replay_write_identical_buckets(api, db, migrated):
    sent = df.send_random(api, db, migrated, rng_seed=5)
    tenant = sent.tenant.name
    utterances = oracle.load_utterances(db, tenant, sent.ids)
    expected = oracle.quarter_hours(utterances, sent.settings.dataflow.late_after_s)

    df.one_and_two_workers_and_a_replay(
        learning,
        sent,
        lambda: df.served_quarter_hours(db, tenant, utterances),
        lambda: df.wipe(db, tenant, utterances),
        expected,
        empty={},
    )
