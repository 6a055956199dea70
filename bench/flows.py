"""Dataflow benchmark: the flows' throughput against two references, and
the freshness of every served table with the whole system running.

    uv run python -m bench.flows [--quick] [--events N] [--workers W]
                                 [--rate R] [--seconds S] [--idle S]

Throughput: N utterances are written into the feed (keyspace
utterstream_bench) through the API's own Store, timestamps from a few
seconds to three days old, in no order. Then each flow replays exactly that
stretch of the feed in this process, with W workers, one after the other:
the passthrough (dataflows/passthrough.py: the feed source into a sink that
only counts), the reference (bench/reference.py: the feed source into one
Cassandra row per entry, written as the writers write), error_counters and
learning, then in the reverse order, then in the first order again; each
flow's fastest run counts. Each run starts once Cassandra has finished its
flushes and compactions (waiting at most QUIET_MOST_S).
Reported: entries/s of each, the ratios error_counters / reference and
learning / reference (target at least 0.5), and each against the
passthrough.

Freshness (bench/freshness.py): an API and the three flows as operators run
them, utterances POSTed at R per second for S seconds (current ones and
some days old), and a sample of them read back through every served GET
endpoint until each answer includes it; as_of's lag behind the present;
the flows' CPU at idle (for --idle seconds before the load) and under it;
then the rate the whole system keeps, and the same for S seconds at half it.

--quick is a smoke run of a few minutes: fewer events, a shorter load; its
figures are not for ratios or targets. Prints one JSON object on stdout
(logs go to stderr), with keys `dataflow` and `freshness`; ops/bench runs
this and reports both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

import structlog

from api.writes.store import Store
from bench import freshness, reference
from bench.common import bench_settings
from cql.clock import to_stored_time, utc_now
from cql.migrate import migrate
from cql.session import Db
from cql.utterances import UtteranceRow
from dataflows import error_counters, learning, passthrough
from dataflows.commands import replay
from runtime import pauses
from runtime.logs import configure_logging
from runtime.settings import Settings

log = structlog.get_logger("bench.dataflow")

PAIRS = freshness.PAIRS
TARGET_RATIO = 0.5
# replay.replay runs a flow by name from this table; the reference is the
# bench's own, so it joins the table here.
replay.FLOWS.setdefault(reference.FLOW, reference)
# The order of the replays: every flow three times, mirrored (the first run
# of all pays for a cold page cache, and a machine that drifts during the
# section favours none), and each flow's fastest run counts: on a shared
# machine, noise only ever slows a run down.
_ONCE = (passthrough.FLOW, reference.FLOW, error_counters.FLOW, learning.FLOW)
ORDER = _ONCE + _ONCE[::-1] + _ONCE
# Cassandra's background work (flushes, compactions) that a run would
# otherwise share the machine with: left over from the sections before, or
# from the run before, whose rows it flushes and compacts.
_BACKGROUND = ("CompactionExecutor", "MemtableFlushWriter", "MemtablePostFlush")
_QUIET_QUERY = "SELECT name, active_tasks, pending_tasks FROM system_views.thread_pools"
# How long a run waits for that work to finish (then it runs anyway, and
# the wait it did is reported).
QUIET_MOST_S = 180.0


# ---- throughput


def fill_feed(settings: Settings, tenant: str, events: int, learners: int) -> float:
    """Write `events` utterances and their feed entries as the API does;
    returns the seconds it took."""
    rng = random.Random(1)

    async def write_all() -> None:
        db = Db.open(settings.cassandra)
        store = Store(db, settings.cassandra.max_in_flight, feed=settings.feed)
        slots = asyncio.Semaphore(settings.cassandra.max_in_flight)

        async def one(i: int) -> None:
            async with slots:
                now = utc_now()
                age = rng.choice([rng.uniform(0, 3600), rng.uniform(0, 3 * 86400)])
                user_id = f"{tenant}-u{rng.randrange(learners)}"
                errors = rng.choices(PAIRS, k=rng.randint(0, 3))
                utterance_id = f"{tenant}-{i}"
                ts = to_stored_time(now - timedelta(seconds=age))
                row = UtteranceRow(
                    tenant, utterance_id, user_id, "c", "bench", ts, errors, rng.randint(0, 9),
                    now, "pending", None, now,
                )  # fmt: skip
                await store.write_utterance(row)

        try:
            await asyncio.gather(*(one(i) for i in range(events)))
        finally:
            db.close()

    began = time.monotonic()
    asyncio.run(write_all())
    return time.monotonic() - began


def wait_until_quiet(settings: Settings, most_s: float = QUIET_MOST_S) -> float:
    """Wait until Cassandra has no flush or compaction running or pending,
    seen twice a second apart, or `most_s` has passed; returns the seconds
    waited."""
    db = Db.open(settings.cassandra)
    began = time.monotonic()
    quiet_once = False
    try:
        while time.monotonic() - began < most_s:
            rows = db.session.execute(_QUIET_QUERY)
            busy = sum(active + pending for name, active, pending in rows if name in _BACKGROUND)
            if busy == 0 and quiet_once:
                break
            quiet_once = busy == 0
            time.sleep(1)
    finally:
        db.close()
    return round(time.monotonic() - began, 1)


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def throughput(settings: Settings, events: int, learners: int, workers: int) -> dict[str, Any]:
    tenant = f"bench-df-{os.getpid()}"
    start = utc_now() - timedelta(seconds=1)
    fill_s = fill_feed(settings, tenant, events, learners)
    log.info("feed_filled", events=events, seconds=round(fill_s, 1))
    # Wait until the whole fill (acknowledged, so visible) is older than the
    # reader lag: every replay then reads the same stretch, every entry of it.
    time.sleep(settings.feed.reader_lag_s + 1)
    until = utc_now() - timedelta(seconds=settings.feed.reader_lag_s)
    runs: list[dict[str, Any]] = []
    for name in ORDER:
        waited_s = wait_until_quiet(settings)
        began = time.monotonic()
        entries = replay.replay(name, settings, start=start, until=until, workers=workers)
        seconds = time.monotonic() - began
        runs.append({
            "flow": name,
            "entries": entries,
            "seconds": round(seconds, 2),
            "entries_per_s": round(entries / seconds, 1),
            "quiet_after_s": waited_s,
            "peak_rss_mib_after": peak_rss_mib(),
        })  # fmt: skip
        log.info("replayed", **runs[-1])
    by_flow: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_flow[r["flow"]].append(r)
    best = {name: max(found, key=lambda r: r["entries_per_s"]) for name, found in by_flow.items()}
    rate = {name: r["entries_per_s"] for name, r in best.items()}
    ratios = {
        f"{flow}_vs_{base}": round(rate[flow] / rate[base], 3)
        for base in (reference.FLOW, passthrough.FLOW)
        for flow in (error_counters.FLOW, learning.FLOW, reference.FLOW)
        if flow != base
    }
    return {
        "events_written": events,
        "fill_events_per_s": round(events / fill_s, 1),
        "learners": learners,
        "workers": workers,
        "feed_range": [start.isoformat(), until.isoformat()],
        "flows": best,
        "runs": runs,
        "ratios": ratios,
        "target_ratio": TARGET_RATIO,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.flows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller and shorter: a smoke run")
    parser.add_argument(
        "--events", type=int, help="feed entries replayed (default 50000; quick 10000)"
    )
    parser.add_argument("--learners", type=int, default=500, help="learners of the replayed feed")
    parser.add_argument("--workers", type=int, default=2, help="Bytewax workers of the replays")
    parser.add_argument(
        "--rate", type=float, help="POSTs/s of the freshness load (default 100; quick 50)"
    )
    parser.add_argument(
        "--seconds", type=float, help="seconds of freshness load (default 180; quick 45)"
    )
    parser.add_argument(
        "--idle", type=float, help="seconds of idle flows measured (default 30; quick 10)"
    )
    parser.add_argument(
        "--fresh-learners", type=int, default=40, help="learners of the freshness load"
    )
    args = parser.parse_args()
    configure_logging(Settings.from_env().log)
    events = args.events or (10_000 if args.quick else 50_000)
    rate = args.rate or (50.0 if args.quick else 100.0)
    seconds = args.seconds or (45.0 if args.quick else 180.0)
    idle = args.idle if args.idle is not None else (10.0 if args.quick else 30.0)
    settings = bench_settings()
    migrate(settings.cassandra)
    # Every replay runs in this process, the references too, with the
    # collector a flow process has (runtime/pauses.py).
    pauses.spaced()
    result = {
        "mode": "quick" if args.quick else "full",
        # Ratios and targets are read from a full run only.
        "for_ratios": not args.quick,
        "dataflow": throughput(settings, events, args.learners, args.workers),
        "freshness": freshness.run(settings, rate, seconds, idle, args.fresh_learners),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
