"""Rows of the served tables written straight into Cassandra for the GET
endpoint tests, through the Table definitions of cql/error_counts.py, cql/learning.py: the
dataflows that normally write them have tests of their own, so these pin the
API's reading of the tables' contract. Partition keys are worked out here
by hand, not with the API's code."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cql.error_counts import (
    ERROR_COUNTS,
    ERROR_POINTS,
    ERROR_TOTALS,
    ErrorCountRow,
    ErrorPointFact,
    ErrorTotalRow,
)
from cql.learners import USERS, UserRow
from cql.learning import DATAFLOW_PROGRESS, LEARNING_BUCKETS, LearningBucketRow, ProgressRow
from cql.session import Db

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
AS_OF = datetime(2026, 11, 20, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def error_partition(window: str, start: datetime) -> datetime:
    """hour rows by UTC month, day rows by UTC year, month rows in one span
    from 1970 (cql/schema/005); facts, which minute windows are counted
    from, by UTC day."""
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "minute": midnight,
        "hour": midnight.replace(day=1),
        "day": midnight.replace(day=1, month=1),
        "month": EPOCH,
    }[window]


class Seeder:
    """Writes one tenant's rows."""

    def __init__(self, db: Db, tenant: str) -> None:
        self.db = db
        self.tenant = tenant
        self._user = db.prepare(USERS.insert())
        self._count = db.prepare(ERROR_COUNTS.insert())
        self._fact = db.prepare(ERROR_POINTS.insert())
        self._no_facts = db.prepare(
            f"DELETE FROM {ERROR_POINTS.name} WHERE {ERROR_POINTS.key_where()}"
            " AND ts = ? AND utterance_id = ?"
        )
        self._total = db.prepare(ERROR_TOTALS.insert())
        self._bucket = db.prepare(LEARNING_BUCKETS.insert())
        self._progress = db.prepare(DATAFLOW_PROGRESS.insert())

    def learner(self, user_id: str | None = None) -> str:
        user_id = user_id or f"u-{uuid.uuid4().hex[:8]}"
        row = UserRow(self.tenant, user_id, f"{user_id}@example.com", "Ana", utc(2026, 1, 1))
        self._run(self._user, USERS.values(row))
        return user_id

    def error_count(
        self,
        user_id: str,
        window: str,
        start: datetime,
        category: str,
        subcategory: str,
        count: int,
        *,
        late_events: int = 0,
        as_of: datetime = AS_OF,
    ) -> None:
        """A stored window; a minute window as its facts, which the API
        counts (the last `late_events` accepted a day after the window,
        late by any setting; `as_of` then comes from the watermark)."""
        if window == "minute":
            self._minute_facts(user_id, start, category, subcategory, count, late_events)
            return
        row = ErrorCountRow(
            self.tenant,
            user_id,
            window,
            error_partition(window, start),
            start,
            category,
            subcategory,
            count,
            late_events,
            as_of,
        )
        self._run(self._count, ERROR_COUNTS.values(row))

    def _minute_facts(
        self, user_id: str, start: datetime, category: str, subcategory: str, count: int, late: int
    ) -> None:
        day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        # One utterance per window and pair, so seeding it again replaces it.
        utterance_id = f"{category}/{subcategory}"
        self._run(self._no_facts, (self.tenant, user_id, day, start, utterance_id))
        for point in range(count):
            accepted = start + (timedelta(days=1) if point >= count - late else timedelta())
            fact = ErrorPointFact(
                self.tenant,
                user_id,
                day,
                start,
                utterance_id,
                point,
                category,
                subcategory,
                accepted,
            )
            self._run(self._fact, ERROR_POINTS.values(fact))

    def error_total(self, user_id: str, category: str, subcategory: str, count: int) -> None:
        row = ErrorTotalRow(self.tenant, user_id, category, subcategory, count, AS_OF)
        self._run(self._total, ERROR_TOTALS.values(row))

    def learning_bucket(
        self, user_id: str, start: datetime, entries: int, words: int, *, late_events: int = 0
    ) -> None:
        assert start.minute % 15 == 0 and start.second == 0, "buckets are quarter hours"
        month = start.astimezone(UTC).replace(day=1, hour=0, minute=0)
        row = LearningBucketRow(
            self.tenant, user_id, month, start, entries, words, late_events, AS_OF
        )
        self._run(self._bucket, LEARNING_BUCKETS.values(row))

    def _run(self, statement: Any, values: tuple) -> None:
        self.db.session.execute(statement, values)


def own_flows(client: Any, db: Db, *, position: datetime | None) -> None:
    """Point this test's app at dataflow names of its own, so its watermark
    is the one the test writes (`position` on two shards, the slowest one
    counting), whatever the real dataflows record meanwhile."""
    served = client.app.state.services.served
    suffix = uuid.uuid4().hex[:8]
    served.error_flow = f"test-errors-{suffix}"
    served.learning_flow = f"test-learning-{suffix}"
    if position is None:
        return
    statement = db.prepare(DATAFLOW_PROGRESS.insert())
    for flow in (served.error_flow, served.learning_flow):
        for shard, ahead in ((0, 3600), (1, 0)):
            moment = position + timedelta(seconds=ahead)
            db.session.execute(
                statement, DATAFLOW_PROGRESS.values(ProgressRow(flow, shard, moment, moment))
            )
