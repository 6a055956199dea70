"""Dataflow benchmark: throughput against a reference, and freshness.

    uv run python -m bench.flows [--quick] [--events N] [--workers W]
                                         [--rate R] [--seconds S]

Throughput: N utterances are written into the feed (keyspace
utterstream_bench) through the API's own Store, timestamps from a few
seconds to three days old, in no order; then the passthrough flow (the same
feed source into a sink that only counts) and the error-counter flow each
replay exactly that stretch of the feed, one after the other in this
process, with W workers. Reported: entries/s of each and their ratio, and
the process's peak RSS after each.

Freshness: a real API process and the error-counter flow as operators run
it (`python -m bytewax.run ... -r`, default settings: 10 s window wait, 5 s
reader lag) while utterances are POSTed one by one at R per second for S
seconds. For each acknowledged POST: the seconds until its minute window's
row in error_counts_by_user counts it (polled every 0.5 s). An on-time event
waits for its minute to end, then the window wait and the reader lag: that
is the design, not overhead. The flow's RSS and its open window state (from
its recovery folder) are sampled as it runs.

Prints one JSON object on stdout (logs go to stderr), with keys
`dataflow` and `freshness`; ops/bench runs this and reports both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog

from api.writes.store import Store
from bench.common import (
    ApiServer,
    bench_settings,
    create_key,
    make_learners,
    stop_process,
    summarize,
)
from cql.change_feed import FeedEntry, new_position
from cql.clock import to_stored_time, utc_now
from cql.error_counts import ERROR_COUNTS
from cql.migrate import migrate
from cql.session import Db
from cql.utterances import UtteranceRow
from dataflows import error_counters, passthrough
from dataflows.commands import replay
from dataflows.commands.status import open_window_keys
from runtime.logs import configure_logging
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
log = structlog.get_logger("bench.dataflow")

PAIRS = [("grammar", "past tense"), ("grammar", "articles"), ("vocabulary", "word choice")]


# ---- throughput


def fill_feed(settings: Settings, tenant: str, events: int, learners: int) -> float:
    """Write `events` utterances and their feed entries as the API does;
    returns the seconds it took."""
    rng = random.Random(1)

    async def write_all() -> None:
        db = Db.open(settings.cassandra)
        store = Store(db, settings.cassandra.max_in_flight)
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
                shard, bucket, feed_id = new_position(tenant, utterance_id, settings.feed, now)
                entry = FeedEntry(
                    shard, bucket, feed_id, tenant, utterance_id, user_id, "c", "bench", ts,
                    errors, row.words_learned,
                )  # fmt: skip
                await store.write_utterance(row, entry)

        try:
            await asyncio.gather(*(one(i) for i in range(events)))
        finally:
            db.close()

    began = time.monotonic()
    asyncio.run(write_all())
    return time.monotonic() - began


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def throughput(settings: Settings, events: int, learners: int, workers: int) -> dict[str, Any]:
    tenant = f"bench-df-{os.getpid()}"
    start = utc_now() - timedelta(seconds=1)
    fill_s = fill_feed(settings, tenant, events, learners)
    log.info("feed_filled", events=events, seconds=round(fill_s, 1))
    # Wait until the whole fill is older than the reader lag: both replays
    # then read the same stretch, every entry of it.
    time.sleep(settings.feed.reader_lag_s + 1)
    until = utc_now() - timedelta(seconds=settings.feed.reader_lag_s)
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    # The reference runs before and after, and its faster run counts: the
    # first run of all pays for a cold page cache, the ratio stays honest.
    for name in (passthrough.FLOW, error_counters.FLOW, passthrough.FLOW):
        began = time.monotonic()
        entries = replay.replay(name, settings, start=start, until=until, workers=workers)
        seconds = time.monotonic() - began
        runs[name].append(
            {
                "entries": entries,
                "seconds": round(seconds, 2),
                "entries_per_s": round(entries / seconds, 1),
                "peak_rss_mib_after": peak_rss_mib(),
            }
        )
        log.info("replayed", flow=name, **runs[name][-1])
    results = {name: max(found, key=lambda r: r["entries_per_s"]) for name, found in runs.items()}
    ratio = (
        results[error_counters.FLOW]["entries_per_s"] / results[passthrough.FLOW]["entries_per_s"]
    )
    return {
        "events_written": events,
        "fill_events_per_s": round(events / fill_s, 1),
        "learners": learners,
        "workers": workers,
        "feed_range": [start.isoformat(), until.isoformat()],
        **results,
        "passthrough_runs": runs[passthrough.FLOW],
        "error_counters_vs_passthrough": round(ratio, 3),
    }


# ---- freshness


class FlowProcess:
    """The error-counter flow as ops/dataflow runs it, on a fresh recovery folder."""

    def __init__(self, settings: Settings, recovery: Path) -> None:
        env = {
            **os.environ,
            "UTTERSTREAM_CASSANDRA_KEYSPACE": settings.cassandra.keyspace,
            "UTTERSTREAM_DATAFLOW_START_AT": (utc_now() - timedelta(seconds=1)).isoformat()
            + "+00:00",
        }
        self.log_path = ROOT / ".local" / "log" / f"bench-dataflow-{os.getpid()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "dataflows.error_counters:get_flow()",
             "-w", "2", "-r", str(recovery), "-s", "10", "-b", "0"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return round(kb / 1024, 1)

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


class Visibility:
    """Acknowledged events per (learner, minute, pair), and when the served
    minute row first counted each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: dict[tuple[str, datetime, tuple[str, str]], list[float]] = defaultdict(list)
        self.seen: dict[tuple[str, datetime, tuple[str, str]], list[float]] = defaultdict(list)

    def ack(self, user_id: str, ts: datetime, pair: tuple[str, str], at: float) -> None:
        minute = to_stored_time(ts).replace(second=0, microsecond=0)
        with self.lock:
            self.acked[(user_id, minute, pair)].append(at)

    def observe(self, key: tuple[str, datetime, tuple[str, str]], count: int, at: float) -> None:
        with self.lock:
            seen = self.seen[key]
            # A count of n: the first n acknowledged events are visible.
            seen.extend([at] * (min(count, len(self.acked[key])) - len(seen)))

    def delays(self) -> tuple[list[float], int]:
        with self.lock:
            delays = [
                s - a
                for key, acks in self.acked.items()
                for a, s in zip(sorted(acks), self.seen[key], strict=False)  # unseen: pending
            ]
            pending = sum(len(acks) for acks in self.acked.values()) - len(delays)
        return delays, pending


def poll_counts(
    db: Db, tenant: str, learners: list[str], seen: Visibility, stop: threading.Event
) -> None:
    statement = db.prepare(
        ERROR_COUNTS.select(columns=("window_start", "category", "subcategory", "count")),
        idempotent=True,
    )
    while not stop.is_set():
        at = time.monotonic()
        day = utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
        for bucket in {day, day - timedelta(days=1)}:
            futures = [
                (user_id, db.session.execute_async(statement, (tenant, user_id, "minute", bucket)))
                for user_id in learners
            ]
            for user_id, future in futures:
                for start, category, subcategory, count in future.result():
                    seen.observe((user_id, start, (category, subcategory)), count, at)
        stop.wait(0.5)


async def post_steadily(
    url: str,
    key: str,
    learners: list[tuple[str, str]],
    rate: float,
    seconds: float,
    seen: Visibility,
) -> int:
    rng = random.Random(2)
    headers = {"Authorization": f"Bearer {key}"}
    sent = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def one() -> None:
            user_id, conversation_id = rng.choice(learners)
            pair = rng.choice(PAIRS[:2])
            ts = datetime.now(UTC)
            body = {
                "conversation_id": conversation_id, "user_id": user_id, "text": "bench",
                "timestamp": ts.isoformat(), "words_learned": 1,
                "errors": [{"category": pair[0], "subcategory": pair[1]}],
            }  # fmt: skip
            r = await client.post("/v1/utterances", json=body)
            if r.status_code == 202:
                seen.ack(user_id, ts, pair, time.monotonic())

        began = time.monotonic()
        tasks = []
        while (elapsed := time.monotonic() - began) < seconds:
            tasks.append(asyncio.create_task(one()))
            sent += 1
            await asyncio.sleep(max(0.0, sent / rate - elapsed))
        await asyncio.gather(*tasks)
    return sent


def freshness(settings: Settings, rate: float, seconds: float, learners_n: int) -> dict[str, Any]:
    tenant = f"bench-fresh-{os.getpid()}"
    key = create_key(settings, tenant)
    api = ApiServer(settings, workers=2)
    recovery = Path(tempfile.mkdtemp(prefix="bench-dataflow-"))
    from bytewax.recovery import init_db_dir

    init_db_dir(recovery, 2)
    flow = FlowProcess(settings, recovery)
    db = Db.open(settings.cassandra)
    seen = Visibility()
    stop = threading.Event()
    samples: list[dict[str, Any]] = []
    poller: threading.Thread | None = None
    try:
        learners = make_learners(api.url, key, learners_n, tenant)
        poller = threading.Thread(
            target=poll_counts, args=(db, tenant, [u for u, _ in learners], seen, stop)
        )
        poller.start()
        time.sleep(10)  # the flow's start-up (imports, connections, first poll)
        began = time.monotonic()

        def sample() -> None:
            samples.append({
                "at_s": round(time.monotonic() - began, 1),
                "flow_rss_mib": flow.rss_mib(),
                "open_window_keys": open_window_keys(recovery, "batch_by_minute"),
            })  # fmt: skip

        sampler_stop = threading.Event()

        def sampler() -> None:
            while not sampler_stop.wait(10):
                sample()

        sampling = threading.Thread(target=sampler)
        sampling.start()
        sent = asyncio.run(post_steadily(api.url, key, learners, rate, seconds, seen))
        # The last minute closes up to a minute later, plus wait and lag.
        deadline = (
            time.monotonic()
            + 60
            + settings.dataflow.window_wait_s
            + settings.feed.reader_lag_s
            + 30
        )
        while seen.delays()[1] and time.monotonic() < deadline:
            time.sleep(1)
        # Every window has closed; the next snapshot shows what state is left.
        time.sleep(11)
        sample()
        sampler_stop.set()
        sampling.join()
    finally:
        stop.set()
        if poller is not None:
            poller.join()
        flow.stop()
        api.stop()
        db.close()
        shutil.rmtree(recovery, ignore_errors=True)
    delays, pending = seen.delays()
    summary = summarize([d * 1000 for d in delays])
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "posted": sent,
        "acknowledged": len(delays) + pending,
        "never_visible": pending,
        "learners": learners_n,
        "seconds_to_visible": {
            k: None if v is None else round(v / 1000, 2) for k, v in summary.items()
        },
        "settings": {
            "window_wait_s": settings.dataflow.window_wait_s,
            "reader_lag_s": settings.feed.reader_lag_s,
            "poll_interval_s": settings.dataflow.poll_interval_s,
            "window": "1 minute (event time)",
        },
        "flow_samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flows", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller and shorter: for CI")
    parser.add_argument("--events", type=int)
    parser.add_argument("--learners", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    configure_logging()
    events = args.events or (10_000 if args.quick else 50_000)
    rate = args.rate or (10.0 if args.quick else 20.0)
    seconds = args.seconds or (45.0 if args.quick else 150.0)
    settings = bench_settings()
    migrate(settings.cassandra)
    result = {
        "dataflow": throughput(settings, events, args.learners, args.workers),
        "freshness": freshness(settings, rate, seconds, learners_n=20),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
