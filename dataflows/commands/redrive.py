"""Analyse the failed insights again, once the cause is fixed:

    python -m dataflows redrive [--since 2026-01-01T00:00:00Z] [--tenant T]

Reads failed_insights_by_day from `--since` (default: 7 days ago; the rows
are kept 30 days) up to the moment it started, one UTC day partition at a
time, and sends each failure down the insights flow's own path
(`Analyst.analyse`): marked `processing`, analysed, recorded, overwriting the
failed insight. An utterance that completes leaves failed_insights_by_day;
one that fails again is recorded there afresh, and its old row removed.

Idempotent: a failure row whose utterance has been analysed since (by the
flow or an earlier redrive) is only removed, never analysed again, so a
second run changes nothing the first one fixed. Failures recorded during a
run are not read by it, so it ends even when the model still fails.

It uses the LLM settings and the shared rate bucket of the flow: running
both at once shares the rate, never exceeds it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import structlog

from cql.aio import execute
from cql.clock import DAY, floor_to, to_stored_time, utc_now
from cql.insights import FAILED_INSIGHTS, FailedInsightRow
from cql.session import Db
from dataflows.writers.insight_writer import FAILED, Analyst, InsightWriter, Subject, open_analyst
from runtime.logs import configure_logging
from runtime.settings import Settings

log = structlog.get_logger("dataflows.commands.redrive")

DEFAULT_SINCE = timedelta(days=7)
# Failures read and analysed together; the Analyst bounds the LLM calls.
PAGE = 200


async def redrive(
    db: Db, settings: Settings, since: datetime, *, tenant: str | None = None
) -> Counter[str]:
    """Re-analyse the failures recorded from `since` until now (of one
    tenant, or all); how many ended completed, failed, stale (analysed
    since) or missing (the utterance is gone)."""
    start, until = to_stored_time(since), utc_now()
    writer = InsightWriter(db, settings)
    failures = _Failures(db)
    analyst = await open_analyst(writer, settings)
    counts: Counter[str] = Counter()
    try:
        async for page in failures.read(start, until):
            mine = [f for f in page if tenant is None or f.tenant == tenant]
            outcomes = await asyncio.gather(*(_redrive_one(analyst, f) for f in mine))
            counts.update(outcomes)
            log.info("redrive.progress", **counts)
    finally:
        await analyst.aclose()
    return counts


async def _redrive_one(analyst: Analyst, failure: FailedInsightRow) -> str:
    writer = analyst.writer
    current = await writer.current(failure.tenant, failure.utterance_id)
    if (
        current is None
        or current.parse_status != FAILED
        or current.analyzed_at != failure.failed_at
    ):
        # Analysed again since this failure (its row outlived a crash).
        await writer.forget_failure(failure)
        return "stale"
    utterance = await writer.utterance(failure.tenant, failure.utterance_id)
    if utterance is None:
        log.warning("redrive.utterance_missing", tenant=failure.tenant, id=failure.utterance_id)
        return "missing"
    row = await analyst.analyse(Subject.of(utterance), current)
    return FAILED if row.parse_status == FAILED else "completed"


class _Failures:
    def __init__(self, db: Db) -> None:
        self._session = db.session
        self._range = db.prepare(
            FAILED_INSIGHTS.select(
                f"{FAILED_INSIGHTS.key_where()} AND failed_at >= ? AND failed_at < ?"
            ),
            idempotent=True,
        )
        self._range.fetch_size = PAGE

    async def read(self, start: datetime, until: datetime) -> AsyncIterator[list[FailedInsightRow]]:
        """Pages of the failures in [start, until), day by day, in order."""
        day = floor_to(start, DAY)
        while day < until:
            params = (day, start, until)
            result = await execute(self._session, self._range, params)
            while True:
                yield [FAILED_INSIGHTS.from_row(row) for row in result.current_rows]
                if not result.has_more_pages:
                    break
                result = await execute(
                    self._session, self._range, params, paging_state=result.paging_state
                )
            day += DAY


def _instant(raw: str) -> datetime:
    moment = datetime.fromisoformat(raw)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{raw!r} has no UTC offset (e.g. 2026-01-01T00:00:00Z)")
    return moment.astimezone(UTC)


async def _main(settings: Settings, since: datetime, tenant: str | None) -> Counter[str]:
    db = await asyncio.to_thread(Db.open, settings.cassandra)
    try:
        return await redrive(db, settings, since, tenant=tenant)
    finally:
        await asyncio.to_thread(db.close)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dataflows redrive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--since", type=_instant, help="RFC 3339 instant: failures recorded from then on"
    )
    parser.add_argument("--tenant", help="only this tenant's failures")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log)
    since = args.since or datetime.now(UTC) - DEFAULT_SINCE
    began = time.monotonic()
    counts = asyncio.run(_main(settings, since, args.tenant))
    log.info(
        "redrive.done",
        since=since.isoformat(),
        tenant=args.tenant,
        seconds=round(time.monotonic() - began, 1),
        completed=counts["completed"],
        failed=counts[FAILED],
        stale=counts["stale"],
        missing=counts["missing"],
    )


if __name__ == "__main__":
    main()
