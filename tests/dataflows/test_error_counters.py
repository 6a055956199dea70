"""The error-counter flow: its steps, its wiring under one and two workers,
and, end to end (utterances sent to a real API process, the flow run over
the real feed into the real tables), every served window against an
independent recount from the base table."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from operator import attrgetter

import msgspec
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cql.clock import DAY, EPOCH, HOUR, MINUTE, next_month, utc_now
from cql.error_counts import (
    ERROR_POINTS,
    ErrorCountRow,
    ErrorPointFact,
    Window,
    error_windows,
    minute_counts,
)
from dataflows import error_counters
from dataflows.connectors.sinks import DayTallies, merge_into
from dataflows.writers.error_writer import Tally, recount, sum_by_pair, tally_point
from runtime.generations import generation_key
from tests import oracle
from tests.dataflow_helpers import (
    PAIRS,
    drawn_specs,
    error_facts,
    feed_item,
    learner_batches,
    one_and_two_workers_and_a_replay,
    run_to_end,
    send_drawn,
    send_random,
    served_count_rows,
    served_error_counts,
    served_error_totals,
    wipe,
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


def test_the_same_instant_in_two_zones_keeps_each_zone_s_windows():
    """error_windows caches by minute: equal instants in two zones must not
    share an answer (aware datetimes that are equal hash alike)."""
    utc = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
    kolkata = utc.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert error_windows(utc)[2].start == datetime(2024, 3, 15, tzinfo=UTC)
    assert error_windows(kolkata)[2].start == kolkata.replace(hour=0, minute=0)
    naive = datetime(2024, 3, 15, 12, 0, 7)
    assert error_windows(naive) == error_windows(naive.replace(second=59))


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
    newest = late.written_at
    assert counts[(windows[0], ("grammar", "articles"))] == Tally(2, 1, newest)
    assert counts[(windows[2], ("grammar", "articles"))] == Tally(2, 0, newest)  # day not over


def test_only_touched_windows_and_pairs_are_recounted():
    ts = datetime(2024, 3, 15, 13, 45)
    other = msgspec.structs.replace(fact(ts, ts, point=1), category="spelling")
    minute = error_windows(ts)[0]
    counts = recount([fact(ts, ts), other], {(minute, ("grammar", "articles"))}, timedelta(0))
    assert counts == {(minute, ("grammar", "articles")): Tally(1, 0, ts)}


def test_sums_by_pair_keep_only_the_asked_pairs():
    day, next_day = datetime(2024, 3, 1), datetime(2024, 3, 2)
    held = {
        (day, ("grammar", "articles")): Tally(2, 1, next_day),
        (next_day, ("grammar", "articles")): Tally(3, 0, day),
        (day, ("spelling", "x")): Tally(9, 9, next_day),
    }
    assert sum_by_pair(held, {("grammar", "articles")}) == {
        ("grammar", "articles"): Tally(5, 1, next_day)
    }
    one = {(day, ("g", "a")): Tally(4, 0, day)}
    assert sum_by_pair(one, {("g", "a")}) == {("g", "a"): Tally(4, 0, day)}


def test_a_fact_keeps_its_latest_acceptance_whatever_order_they_come_in():
    ts = datetime(2024, 3, 15, 13, 45)
    first, retried = fact(ts, ts), fact(ts, ts + timedelta(minutes=5))
    for stored, batch in (([first], [retried]), ([retried], [first]), ([], [first, retried])):
        held = {attrgetter(*ERROR_POINTS.primary_key)(f): f for f in stored}
        changed = merge_into(ERROR_POINTS, held, batch)
        assert list(held.values()) == [retried]
        before = stored[0] if stored else None
        assert changed == ([] if stored == [retried] else [(before, retried)])


_in_the_day = st.integers(0, 24 * 60 - 1).map(lambda m: datetime(2024, 3, 15) + m * MINUTE)


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(PAIRS), _in_the_day), min_size=6, max_size=6),
    st.lists(st.lists(st.tuples(st.integers(0, 5), _in_the_day), max_size=6), max_size=8),
)
def test_tallies_kept_batch_by_batch_equal_a_recount_of_the_whole_day(utterances, batches):
    """DayTallies, fed each batch's changes, always hold what a recount of
    all the day's facts gives. A point may come again, accepted at another
    time (an utterance in the feed twice): it replaces the fact it repeats,
    late or not, while its content stays (an utterance id never holds
    another utterance)."""
    late_after = timedelta(seconds=60)
    tallies = DayTallies(10, partial(tally_point, late_after=late_after))
    day, held = ("t", "u", datetime(2024, 3, 15)), {}
    for batch in batches:
        points = [
            msgspec.structs.replace(
                fact(utterances[n][1], written_at, utterance_id=f"u{n}"),
                category=utterances[n][0][0],
                subcategory=utterances[n][0][1],
            )
            for n, written_at in batch
        ]
        changes = merge_into(ERROR_POINTS, held, points)
        kept = tallies.update(day, held, changes)
        everything = recount(held.values(), set(kept), late_after)
        assert {k: v for k, v in kept.items() if v.count} == everything


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PAIRS), _in_the_day, st.integers(0, 180)), max_size=30))
def test_minute_windows_counted_from_facts_equal_the_flow_s_tallies(points):
    """What GET /errors?window=minute counts from the facts is what the
    flow's tallies (and so its live events) hold for each minute."""
    late_after = timedelta(seconds=60)
    facts = [
        msgspec.structs.replace(
            fact(ts, ts + timedelta(seconds=delay), utterance_id=f"u{n}"),
            category=category,
            subcategory=subcategory,
        )
        for n, ((category, subcategory), ts, delay) in enumerate(points)
    ]
    read = [(f.ts, f.category, f.subcategory, f.written_at) for f in facts]
    served = {
        (start, (category, subcategory)): Tally(count, late, newest)
        for start, category, subcategory, count, late, newest in minute_counts(read, late_after)
    }
    touched = {(error_windows(f.ts)[0], (f.category, f.subcategory)) for f in facts}
    tallied = recount(facts, touched, late_after)
    assert served == {(window.start, pair): tally for (window, pair), tally in tallied.items()}
    assert [key[:3] for key in minute_counts(read, late_after)] == sorted(
        (start, *pair) for start, pair in served
    )


def test_error_points_are_numbered_in_the_order_sent():
    ts = datetime(2024, 3, 15, 13, 45, 30)
    item = feed_item("t", "u", "a", ts, [("grammar", "articles"), ("grammar", "articles")])
    points = error_counters.error_points(item)
    assert [(p.row.point, p.row.day, p.as_of) for p in points] == [
        (0, datetime(2024, 3, 15), item.watermark),
        (1, datetime(2024, 3, 15), item.watermark),
    ]
    assert error_counters.error_points(feed_item("t", "u", "b", ts, [])) == []
    # What the ledger is owed for an entry is what the flow makes of it.
    assert error_counters.error_point_count(item.entry) == len(points)


def test_a_batch_holds_one_learner_and_at_most_batch_max_items(migrated):
    """Old and new points alike are batched by learner only, never by window."""
    settings = msgspec.structs.replace(
        migrated, dataflow=msgspec.structs.replace(migrated.dataflow, batch_max_items=3)
    )
    now = utc_now()
    items = [
        feed_item("t", f"u{i % 2}", f"a{i}", now - timedelta(days=i % 4), [PAIRS[0]])
        for i in range(20)
    ]
    batches = learner_batches(error_counters, items, settings, 1)
    assert all(1 <= len(batch) <= 3 for batch in batches)
    assert all(len({p.row.user_id for p in batch}) == 1 for batch in batches)
    assert sum(len(batch) for batch in batches) == 20


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
    got = Counter(
        (p.row.user_id, p.row.utterance_id, p.row.point)
        for batch in learner_batches(error_counters, items, migrated, workers)
        for p in batch
    )
    assert got == expected


# ---- end to end


ages_ms = st.one_of(
    st.integers(-20_000, 180_000),  # a little ahead of the server's clock, to minutes old
    st.integers(0, 7_200_000),  # hours old
    st.integers(0, 259_200_000),  # days old
    st.integers(0, 34_560_000_000),  # up to 400 days: other months and years
)
utterance_specs = drawn_specs(ages_ms, st.lists(st.sampled_from(PAIRS), max_size=3), st.just(1))


def newest_counted(row: ErrorCountRow, utterances: list) -> datetime:
    """When the newest utterance counted in the row was accepted."""
    steps = {"minute": MINUTE, "hour": HOUR, "day": DAY}
    start = row.window_start
    end = next_month(start) if row.window == "month" else start + steps[row.window]
    return max(
        (
            u.received_at
            for u in utterances
            if u.user_id == row.user_id
            and (row.category, row.subcategory) in map(tuple, u.errors or ())
            and start <= u.ts < end
        ),
        default=EPOCH,
    )


@pytest.mark.slow
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=utterance_specs)
def test_served_counts_equal_a_recount_from_the_base_table(specs, api, db, migrated, redis_client):
    sent = send_drawn(api, db, migrated, specs)
    settings, tenant = sent.settings, sent.tenant
    generations = {
        u: int(redis_client.get(generation_key(tenant.name, u)) or 0) for u, _ in sent.learners
    }

    run_to_end(error_counters, settings, sent.start)

    utterances = oracle.load_utterances(db, tenant.name, sent.ids)
    late_after = settings.dataflow.late_after_s
    assert served_error_counts(db, tenant.name, utterances, late_after) == oracle.error_counts(
        utterances, late_after
    )
    # as_of: the read position, or the newest utterance counted in the row
    # when later, never earlier than that one.
    lag = timedelta(seconds=settings.feed.reader_lag_s)
    for row in served_count_rows(db, tenant.name, utterances):
        newest = newest_counted(row, utterances)
        assert newest <= row.as_of <= max(utc_now() - lag, newest)
    assert served_error_totals(db, tenant.name, utterances) == oracle.error_totals(utterances)
    assert error_facts(db, tenant.name, utterances) == oracle.error_points(utterances)
    for user_id in {u.user_id for u in utterances if u.errors}:
        assert int(redis_client.get(generation_key(tenant.name, user_id))) > generations[user_id]


@pytest.mark.slow
def test_one_or_two_workers_and_a_replay_write_identical_tables(api, db, migrated):
    sent = send_random(api, db, migrated, rng_seed=11)
    tenant = sent.tenant.name
    utterances = oracle.load_utterances(db, tenant, sent.ids)

    def tables():
        return (
            served_error_counts(db, tenant, utterances, sent.settings.dataflow.late_after_s),
            served_error_totals(db, tenant, utterances),
            error_facts(db, tenant, utterances),
        )

    expected = (
        oracle.error_counts(utterances, sent.settings.dataflow.late_after_s),
        oracle.error_totals(utterances),
        oracle.error_points(utterances),
    )
    entries = one_and_two_workers_and_a_replay(
        error_counters,
        sent,
        tables,
        lambda: wipe(db, tenant, utterances),
        expected,
        ({}, {}, set()),
    )
    assert entries >= len(sent.ids) + len(sent.ids[::10])
