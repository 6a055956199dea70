"""The API's reads of the served tables (cql/error_counts.py, cql/learning.py), for the GET
endpoints: each statement prepared once at start-up, each read one bounded
slice of one partition, with a row limit so no request can stream a
partition. Callers issue the few reads of a request concurrently.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from cassandra.query import PreparedStatement

from api.edge.problems import Unprocessable
from cql.aio import fetch_all
from cql.clock import from_stored_time, to_stored_time
from cql.error_counts import (
    ERROR_COUNTS,
    ERROR_POINTS,
    ERROR_TOTALS,
    FACT_COLUMNS,
    FACTS_FROM_TO,
    WINDOWS_FROM_TO,
    minute_counts,
)
from cql.learning import (
    DATAFLOW_PROGRESS,
    ERROR_FLOW,
    INSIGHTS_FLOW,
    LEARNING_BUCKETS,
    LEARNING_FLOW,
)
from cql.session import Db

# The names the dataflows record their progress under in dataflow_progress.

# (window_start, category, subcategory, count, late_events, as_of)
ErrorCountTuple = tuple[datetime, str, str, int, int, datetime]
# (category, subcategory, count)
ErrorTotalTuple = tuple[str, str, int]
# (bucket_start, entry_count, words, late_events)
LearningTuple = tuple[datetime, int, int, int]

# A partition of hour rows (one UTC month) holds 744 windows times the
# learner's (category, subcategory) pairs, one of facts (one UTC day) a row
# per error point: this is far above any real learner's month or day.
MAX_ERROR_ROWS = 20_000
MAX_TOTALS = 10_000
# A UTC month of quarter hours, per month partition read.
MAX_LEARNING_ROWS = 31 * 96
MAX_SHARDS = 1_024
# How long a worker answers with the watermark it read last. Any watermark
# read before the rows is a true `as_of` (it only grows), so reusing it is
# exact; it saves every GET a sequential read, and `as_of` trails by this
# much more at most.
WATERMARK_REUSE_S = 0.1


class ServedReads:
    def __init__(self, db: Db, late_after: timedelta) -> None:
        self._session = db.session
        self._late_after = late_after
        # Attributes, so a test can point them at flow names of its own.
        self.error_flow = ERROR_FLOW
        self.learning_flow = LEARNING_FLOW
        self.insights_flow = INSIGHTS_FLOW
        p = db.prepare
        self._error_counts = p(
            ERROR_COUNTS.select(
                WINDOWS_FROM_TO,
                columns=(
                    "window_start",
                    "category",
                    "subcategory",
                    "count",
                    "late_events",
                    "as_of",
                ),
            ),
            idempotent=True,
        )
        self._facts = p(ERROR_POINTS.select(FACTS_FROM_TO, columns=FACT_COLUMNS), idempotent=True)
        self._error_totals = p(
            ERROR_TOTALS.select(columns=("category", "subcategory", "count")), idempotent=True
        )
        self._learning = p(
            LEARNING_BUCKETS.select(
                # One request for all the months a range touches (at most 17,
                # api/resources/learning.py): a week across a month's end
                # costs the driver and Cassandra one request, not two.
                "tenant = ? AND user_id = ? AND month IN ? AND bucket_start >= ? AND bucket_start < ?",
                columns=("bucket_start", "entry_count", "words", "late_events"),
            ),
            idempotent=True,
        )
        self._progress = p(DATAFLOW_PROGRESS.select(columns=("position",)), idempotent=True)
        # flow -> (monotonic time the read began, the read)
        self._watermarks: dict[str, tuple[float, asyncio.Future[datetime | None]]] = {}

    async def error_counts(
        self,
        tenant: str,
        user_id: str,
        window: str,
        bucket: datetime,
        start: datetime,
        end: datetime,
        as_of: datetime | None = None,
    ) -> list[ErrorCountTuple]:
        """The `window` rows of one partition (`bucket`) whose window starts
        in [start, end), sorted by start. Minute windows, which are not
        stored, are counted from the facts of the UTC day `bucket`; each
        vouches for the flow's watermark `as_of` (read before them), or for
        its newest point when that is later."""
        if window != "minute":
            params = (tenant, user_id, window, bucket, start, end)
            return await self._fetch(self._error_counts, params, MAX_ERROR_ROWS)
        facts = await self._fetch(
            self._facts, (tenant, user_id, bucket, start, end), MAX_ERROR_ROWS
        )
        counts = minute_counts(facts, self._late_after)
        if as_of is None:
            return counts
        floor = to_stored_time(as_of)
        return [(*row[:5], max(row[5], floor)) for row in counts]

    async def error_totals(self, tenant: str, user_id: str) -> list[ErrorTotalTuple]:
        return await self._fetch(self._error_totals, (tenant, user_id), MAX_TOTALS, field=None)

    async def learning(
        self, tenant: str, user_id: str, months: list[datetime], start: datetime, end: datetime
    ) -> list[LearningTuple]:
        """The quarter-hour buckets in [start, end) of the UTC month
        partitions `months`, in no particular order."""
        return await self._fetch(
            self._learning,
            (tenant, user_id, months, start, end),
            MAX_LEARNING_ROWS * len(months),
        )

    async def watermark(self, flow: str) -> datetime | None:
        """How far `flow` has read the change feed on every shard (the
        slowest shard's position); None before it has recorded any. Read
        at most once per WATERMARK_REUSE_S by this worker: requests meanwhile
        share the read, one in flight included."""
        began, read = self._watermarks.get(flow, (float("-inf"), None))
        now = time.monotonic()
        if read is None or now - began > WATERMARK_REUSE_S or not _reusable(read):
            read = asyncio.ensure_future(self._read_watermark(flow))
            self._watermarks[flow] = (now, read)
        return await asyncio.shield(read)

    async def _read_watermark(self, flow: str) -> datetime | None:
        rows = await self._fetch(self._progress, (flow,), MAX_SHARDS, field=None)
        positions = [position for (position,) in rows if position is not None]
        return from_stored_time(min(positions)) if positions else None

    async def _fetch(
        self, statement: PreparedStatement, params: tuple, limit: int, field: str | None = "to"
    ) -> list:
        # Bound first, so a ValueError below can only be fetch_all's row limit.
        bound = statement.bind(params)
        try:
            return await fetch_all(self._session, bound, limit=limit)
        except ValueError:
            raise Unprocessable(
                f"More than {limit} stored rows match in one partition"
                + ("; ask for a shorter range." if field else "."),
                field=field,
            ) from None


def _reusable(read: asyncio.Future) -> bool:
    """A read that failed is not reused (the next request reads again), nor
    one of another event loop (a test's app may outlive its first loop)."""
    if read.get_loop() is not asyncio.get_running_loop():
        return False
    return not read.done() or (not read.cancelled() and read.exception() is None)
