"""How the counting flows' writes reach Cassandra (dataflows/connectors/sinks.py
`batched`, `write_all`): every upsert once, in unlogged batches within
Cassandra's warning limits, and what is written reads back, against the
real Cassandra."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta

from cassandra.query import BatchStatement, BatchType, BoundStatement

from cql.error_counts import ERROR_COUNTS, ERROR_TOTALS, ErrorCountRow, ErrorTotalRow
from cql.session import Db
from dataflows.connectors import sinks
from dataflows.connectors.sinks import batched, upserts, write_all

NOW = datetime(2026, 11, 30, 12)
KINDS = (("minute", NOW), ("hour", NOW - timedelta(hours=1)), ("day", NOW - timedelta(days=2)))


def counts(tenant: str, learners: int, rows_each: int) -> list[ErrorCountRow]:
    """`rows_each` rows in each of a learner's three window partitions."""
    return [
        count_row(tenant, f"u{u}", kind, bucket, minute=i, count=u + i + 1)
        for u in range(learners)
        for kind, bucket in KINDS
        for i in range(rows_each)
    ]


def count_row(
    tenant: str, user_id: str, kind: str, bucket: datetime, minute: int, count: int
) -> ErrorCountRow:
    start = NOW + timedelta(minutes=minute)
    return ErrorCountRow(tenant, user_id, kind, bucket, start, "grammar", "tense", count, 0, NOW)


def totals(tenant: str, learners: int) -> list[ErrorTotalRow]:
    return [ErrorTotalRow(tenant, f"u{u}", "grammar", "tense", u + 7, NOW) for u in range(learners)]


def sent(requests: list) -> list[tuple[bytes, tuple]]:
    """Each row a list of requests writes: (statement id, values)."""
    rows = []
    for request, params in requests:
        assert params is None
        if isinstance(request, BoundStatement):
            rows.append((request.prepared_statement.query_id, tuple(request.values)))
        else:
            rows += [
                (query_id, tuple(values))
                for _p, query_id, values in request._statements_and_parameters
            ]
    return rows


def partitions_of(request) -> int:
    if isinstance(request, BoundStatement):
        return 1
    return len({(q, tuple(v[:4])) for _p, q, v in request._statements_and_parameters})


def test_every_upsert_is_sent_once_in_batches_within_the_limits(db: Db) -> None:
    count = db.prepare(ERROR_COUNTS.insert(), idempotent=True)
    total = db.prepare(ERROR_TOTALS.insert(), idempotent=True)
    # 40 learners x 3 window partitions of 2 rows, one partition of 60 rows
    # (more than a batch takes), and 41 total partitions of one row.
    statements = (
        upserts(count, ERROR_COUNTS, counts("t", 40, 2))
        + upserts(count, ERROR_COUNTS, counts("big", 1, 60)[:60])
        + upserts(total, ERROR_TOTALS, totals("t", 41))
    )
    requests = batched(db.session, statements)

    expected = Counter((s.prepared_statement.query_id, tuple(s.values)) for s in statements)
    assert Counter(sent(requests)) == expected
    for request, _params in requests:
        if isinstance(request, BatchStatement):
            assert request.batch_type == BatchType.UNLOGGED
            assert request.is_idempotent
            assert 2 <= len(request) <= sinks._ROWS_PER_BATCH
            assert partitions_of(request) <= sinks._PARTITIONS_PER_BATCH
    # Far fewer requests than partitions (40 x 3 + 1 + 41 = 162).
    assert len(requests) <= 164 // 5
    # A partition that fits one batch is never split between two.
    seen: Counter = Counter()
    for request, _params in requests:
        if isinstance(request, BatchStatement):
            seen.update({(q, tuple(v[:4])) for _p, q, v in request._statements_and_parameters})
    split = [p for p, n in seen.items() if n > 1]
    assert all(p[1][0] == b"big" for p in split), split


def test_what_write_all_writes_reads_back(db: Db) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    rows = counts(tenant, 12, 3)
    sums = totals(tenant, 12)
    write_all(
        db.session,
        upserts(db.prepare(ERROR_COUNTS.insert(), idempotent=True), ERROR_COUNTS, rows)
        + upserts(db.prepare(ERROR_TOTALS.insert(), idempotent=True), ERROR_TOTALS, sums),
        4,
    )
    read_counts = db.prepare(ERROR_COUNTS.select(ERROR_COUNTS.key_where()))
    read_totals = db.prepare(ERROR_TOTALS.select(ERROR_TOTALS.key_where()))
    got = [
        ERROR_COUNTS.from_row(row)
        for u in range(12)
        for kind, bucket in KINDS
        for row in db.session.execute(read_counts, (tenant, f"u{u}", kind, bucket))
    ]
    got_totals = [
        ERROR_TOTALS.from_row(row)
        for u in range(12)
        for row in db.session.execute(read_totals, (tenant, f"u{u}"))
    ]
    assert sorted(got, key=repr) == sorted(rows, key=repr)
    assert sorted(got_totals, key=repr) == sorted(sums, key=repr)
