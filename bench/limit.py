"""Section 1, "limit": what Cassandra itself takes of our own statements,
driven straight through cassandra-driver at its best: prepared statements,
async callbacks keeping a fixed window in flight, one driver per process,
several processes (the Python driver is CPU-bound long before Cassandra is).

Statements, each as the API binds it (cql/utterances.py, cql/change_feed.py):
- `insert`: plain INSERT of an utterances_by_id row;
- `lwt`: INSERT ... IF NOT EXISTS of an utterance_claims row (always applies:
  fresh ids), the claim every utterance with an explicit id costs;
- `logged_batch`: the utterance row and its change-feed entry in one logged
  batch, the write every accepted utterance ends with.

The API cannot beat these figures on the same machine; section 2 is read
as a ratio to them.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from typing import Any

from bench.common import drive, summarize

STATEMENTS = ("insert", "lwt", "logged_batch")


def _worker(
    settings: Any,
    index: int,
    processes: int,
    points: list[tuple[str, int]],
    warmup_s: float,
    duration_s: float,
    tag: str,
    barrier: Any,
    out: Any,
) -> None:
    """One driver process: connects and prepares once, then runs every
    (statement, total concurrency) point in turn, starting each together
    with the other processes."""
    from cassandra.query import BatchStatement, BatchType

    from cql.change_feed import CHANGE_FEED, FeedEntry, new_position
    from cql.clock import utc_now
    from cql.session import Db
    from cql.utterances import UTTERANCE_CLAIMS, UTTERANCES, UtteranceClaimRow, UtteranceRow

    db = Db.open(settings.cassandra)
    insert = db.prepare(UTTERANCES.insert(), idempotent=True)
    claim = db.prepare(UTTERANCE_CLAIMS.insert(if_not_exists=True))
    feed_insert = db.prepare(CHANGE_FEED.insert(), idempotent=True)
    digest = hashlib.sha256(b"bench").digest()
    tenant = "bench-limit"
    errors = [("grammar", "past tense")]

    def requests(statement: str, prefix: str):
        def next_request(n: int) -> tuple[Any, Any]:
            uid = f"{prefix}-{n}"
            now = utc_now()
            if statement == "lwt":
                return claim, UTTERANCE_CLAIMS.values(UtteranceClaimRow(tenant, uid, digest, now))
            row = UtteranceRow(
                tenant, uid, "u1", "c1", "bench", now, errors, 3, now, "pending", None, now
            )
            if statement == "insert":
                return insert, UTTERANCES.values(row)
            shard, bucket, feed_id = new_position(tenant, uid, settings.feed, now)
            entry = FeedEntry(
                shard, bucket, feed_id, tenant, uid, "u1", "c1", "bench", now, errors, 3
            )
            batch = BatchStatement(batch_type=BatchType.LOGGED)
            batch.add(insert, UTTERANCES.values(row))
            batch.add(feed_insert, CHANGE_FEED.values(entry))
            return batch, None

        return next_request

    try:
        for statement, concurrency in points:
            window = concurrency // processes + (index < concurrency % processes)
            barrier.wait()
            prefix = f"{tag}-{statement}-{concurrency}-{index}"
            if window == 0:
                out.put({"ok": 0, "errors": 0, "error_kinds": {}, "latencies": []})
                continue
            out.put(drive(db.session, requests(statement, prefix), window, warmup_s, duration_s))
    finally:
        db.close()


def run(
    settings: Any,
    sweep: list[int],
    processes: int,
    warmup_s: float,
    duration_s: float,
    tag: str,
    log: Any = print,
    statements: tuple[str, ...] = STATEMENTS,
) -> list[dict[str, Any]]:
    """ops/s and latency of each statement at each total concurrency of
    `sweep`, the requests in flight split over `processes` driver processes."""
    ctx = mp.get_context("spawn")
    processes = max(1, min(processes, min(sweep)))
    points = [(statement, c) for statement in statements for c in sweep]
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(settings, i, processes, points, warmup_s, duration_s, tag, barrier, out),
            daemon=True,
        )
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    results = []
    try:
        for statement, concurrency in points:
            parts = [out.get(timeout=warmup_s + duration_s + 120) for _ in procs]
            point = _merge(statement, concurrency, processes, duration_s, parts)
            log(
                f"limit {statement:>12} c={concurrency:<4} {point['ops_per_s']:>9.1f} ops/s "
                f"p50 {point['latency_ms']['p50']} ms p99 {point['latency_ms']['p99']} ms "
                f"errors {point['errors']}"
            )
            results.append(point)
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
    return results


def _merge(
    statement: str, concurrency: int, processes: int, duration_s: float, parts: list[dict]
) -> dict[str, Any]:
    latencies = [x for part in parts for x in part["latencies"]]
    ok = sum(p["ok"] for p in parts)
    kinds: dict[str, int] = {}
    for part in parts:
        for k, v in part["error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    return {
        "statement": statement,
        "concurrency": concurrency,
        "processes": processes,
        "duration_s": duration_s,
        "ops": ok,
        "errors": sum(p["errors"] for p in parts),
        "error_kinds": kinds,
        "ops_per_s": round(ok / duration_s, 1),
        "latency_ms": summarize(latencies),
    }
