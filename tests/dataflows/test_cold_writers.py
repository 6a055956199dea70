"""A counting writer that starts cold (a replay, a restart) reads back what
the tables hold, several partitions per request (dataflows/connectors/sinks.py
`PARTITIONS_PER_READ`): more learners of a tenant and more days of a learner
than one read takes, day rows of two years, against the real Cassandra."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta

from cql.clock import DAY, month_start, year_start
from cql.erasure import ERASED_LEARNERS, ErasedLearnerRow
from cql.error_counts import ERROR_COUNTS, ERROR_TOTALS, MONTH_ROWS_BUCKET, ErrorPointFact
from cql.session import Db
from dataflows.connectors.sinks import PARTITIONS_PER_READ, Stamped, upserts, write_all
from dataflows.writers.erasure import ErasedLearners
from dataflows.writers.error_writer import ErrorCountWriter
from runtime.settings import Settings

# From November 2025 to January 2026: three months, two years.
DAYS = [datetime(2025, 11, 28) + i * DAY for i in range(39)]
# What the second writer brings: more days than one read takes, none in
# November (its month row and December's other days' rows are read back).
LATER = [day for day in DAYS if day.month != 11][::3]
LEARNERS = [f"u{i}" for i in range(10)]
WRITTEN = datetime(2026, 1, 6)


def points(tenant: str, utterance_id: str, days: list[datetime]) -> list[Stamped[ErrorPointFact]]:
    """One grammar/tense point of each learner at noon of each day."""
    noon = timedelta(hours=12)
    facts = [
        ErrorPointFact(tenant, u, day, day + noon, utterance_id, 0, "grammar", "tense", WRITTEN)
        for u in LEARNERS
        for day in days
    ]
    return [Stamped(fact, WRITTEN) for fact in facts]


def counts(db: Db, tenant: str, user_id: str, window: str, bucket: datetime) -> dict:
    select = db.prepare(ERROR_COUNTS.select(columns=("window_start", "count")))
    return dict(db.session.execute(select, (tenant, user_id, window, bucket)))


def test_a_cold_writer_counts_on_from_what_another_wrote(db: Db, migrated: Settings) -> None:
    assert len(LATER) > PARTITIONS_PER_READ < len(LEARNERS)
    tenant = f"cold-{uuid.uuid4().hex[:8]}"
    ErrorCountWriter(db, migrated).write(points(tenant, "first", DAYS))
    ErrorCountWriter(db, migrated).write(points(tenant, "second", LATER))

    per_day = Counter(DAYS + LATER)
    per_month = Counter(month_start(day) for day in DAYS + LATER)
    total = db.prepare(ERROR_TOTALS.select(columns=("count",)))
    for user_id in LEARNERS:
        for year in {year_start(day) for day in DAYS}:
            days = counts(db, tenant, user_id, "day", year)
            assert days == {day: n for day, n in per_day.items() if year_start(day) == year}
        assert counts(db, tenant, user_id, "month", MONTH_ROWS_BUCKET) == per_month
        [(all_time,)] = db.session.execute(total, (tenant, user_id))
        assert all_time == len(DAYS) + len(LATER)


def test_erasures_of_many_learners_read_back_the_latest_of_each(db: Db, migrated: Settings) -> None:
    tenant = f"cold-{uuid.uuid4().hex[:8]}"
    erased = {user_id: WRITTEN + i * DAY for i, user_id in enumerate(LEARNERS) if i % 3 == 0}
    rows = [ErasedLearnerRow(tenant, u, at) for u, at in erased.items()]
    rows += [ErasedLearnerRow(tenant, u, at - DAY) for u, at in erased.items()]
    insert = db.prepare(ERASED_LEARNERS.insert())
    write_all(db.session, upserts(insert, ERASED_LEARNERS, rows), 8)

    loaded = ErasedLearners(db, migrated).load((tenant, u) for u in LEARNERS)
    assert loaded == {(tenant, u): erased.get(u) for u in LEARNERS}
