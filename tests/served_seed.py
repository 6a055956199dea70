"""Rows of the served tables written straight into Cassandra for the GET
endpoint tests, through the Table definitions of cql/error_counts.py, cql/learning.py: the
dataflows that normally write them have tests of their own, so these pin the
API's reading of the tables' contract. Partition keys are worked out here
by hand, not with the API's code."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cql.error_counts import ERROR_COUNTS, ERROR_TOTALS, ErrorCountRow, ErrorTotalRow
from cql.learners import USERS, UserRow
from cql.learning import DATAFLOW_PROGRESS, LEARNING_BUCKETS, LearningBucketRow, ProgressRow
from cql.session import Db

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
AS_OF = datetime(2026, 11, 20, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def error_partition(window: str, start: datetime) -> datetime:
    """minute rows by UTC day, hour rows by UTC month, day rows by UTC year,
    month rows in one span from 1970 (cql/schema/005)."""
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
