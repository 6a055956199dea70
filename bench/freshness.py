"""Freshness of every served table, against the live system: how long after
its 202 an utterance is in what the GET endpoints answer.

What runs, as operators run it, in the bench keyspace: an API (granian, two
workers) and the three flows, each `python -m dataflows run FLOW --recovery
DIR` on a fresh recovery folder, starting at the present, and started again
5 s after it exits, as ops/dataflow does (each restart is reported).
Utterances are POSTed one by one (Idempotency-Key and utterance_id, as
section 2's single POSTs) at a steady rate over a few dozen learners, at
most POSTS_IN_FLIGHT at once (when the system is slower than that, the rate
is not kept, and the report says how long POSTs waited); a share of them are
late: timestamps one to four days old, as from a client that was offline.

Every acknowledged POST is tallied per served key: for each learner, the
minute, hour and day window and the error pair it adds to, its pair's
all-time total and total since a date, its local day, ISO week and month in
Asia/Kolkata. Only this run writes for these learners, so when a POST is
acknowledged as the n-th in one of its keys, the served number of that key
includes it once it is at least n. Every n-th POST of each kind (about one a
second of each) is read back through the real GET endpoints, every 100 ms
until the answer includes it; the time from the 202 to the answer that
first does is its freshness in that table, and a sample not seen within
30 s counts as never seen. GET /v1/utterances/{id} is timed twice: until it
answers with a status (the API writes it before the 202), and until that
status is `completed` (the insights flow's work).

Each answer that carries `as_of` is also checked against its meaning: when
`as_of` is later than a sample's 202, every utterance acknowledged before it
in that key must be counted; an answer where one is not is an as_of
violation. Twice a second, the as_of of GET /errors and /learning is compared
with the present (its lag). Around it: each flow's CPU, as % of one core, at
idle and under the load, and where the machine's CPU went meanwhile.

The load's rate is the API's alone (section 2 of ops/bench, without the
flows). Then, on the same running system, `kept_load` measures the rate
the whole system keeps (POSTS_IN_FLIGHT clients posting back to back, the
flows beside them; nothing is read back meanwhile, only as_of sampled) and
the same freshness at half of that, reads included, for other learners:
whether the targets hold once the machine is not asked for more than it
has.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import structlog
import uvloop

from bench import cpu
from bench.common import LOG_DIR, ApiServer, ClientPools, create_key, make_learners, summarize
from cql.clock import DAY, HOUR, MINUTE, floor_to, utc_now
from cql.learning import FLOWS
from cql.session import Db
from dataflows.commands.status import COUNTING, held_keys, progress
from dataflows.connectors.feed_source import IDLE_AFTER
from dataflows.connectors.progress import forget_progress
from runtime.processes import launch, stop
from runtime.settings import Settings

log = structlog.get_logger("bench.freshness")

TZ = "Asia/Kolkata"
PAIRS = [("grammar", "past tense"), ("grammar", "articles"), ("vocabulary", "word choice")]
LATE_SHARE = 0.25
LATE_DAYS = (1.0, 4.0)
# GET /errors/top?since=: this many UTC days before today; late samples
# older than that are not in it, and are not timed there.
SINCE_DAYS_AGO = 2
POLL_EVERY_S = 0.1
GIVE_UP_S = 30.0
SAMPLES_PER_S = 1.0  # sampled POSTs per second, of each kind
# Requests in flight, POSTs and GETs: each has as many connections and no
# more, in small pools (bench.common.ClientPools). httpcore's pool costs CPU
# in proportion to its connections for every request, and to the requests
# queued in it times its connections: enough, with a few dozen, to starve
# this process's event loop (and skew every figure) once a slow spell fills
# it. Waiting for a slot costs nothing.
POSTS_IN_FLIGHT = 24
# A POST answered 503, 429 or 409 (or not at all) is sent again with its
# Idempotency-Key after Retry-After, as a client does, this many times in
# all: an utterance stored but not acknowledged would count unseen.
POST_ATTEMPTS = 5
RETRIED = ("503", "429", "409")
GETS_IN_FLIGHT = 16
TARGET = {"p50_s": 1.0, "p99_s": 2.0, "as_of_lag_s": 2.0}
# The load the whole system keeps (`kept_load`): POSTS_IN_FLIGHT clients
# post back to back for PROBE_S with the flows running; then, once the
# flows have caught up (as_of within TARGET, at most SETTLE_MAX_S), the
# same freshness measurement at half the rate they were acknowledged at.
PROBE_S = 30.0
SETTLE_MAX_S = 120.0
MIN_RATE = 1.0  # POSTs/s: a half-rate load below this measures nothing

# The served tables, in report order: what each one reads.
TABLES = {
    "errors_minute": "GET /v1/users/{id}/errors?window=minute",
    "errors_hour": "GET /v1/users/{id}/errors?window=hour",
    "errors_day": "GET /v1/users/{id}/errors?window=day",
    "top_all_time": "GET /v1/users/{id}/errors/top",
    "top_since": "GET /v1/users/{id}/errors/top?since=DATE",
    "learning_day": f"GET /v1/users/{{id}}/learning?granularity=day&tz={TZ}",
    "learning_week": f"GET /v1/users/{{id}}/learning?granularity=week&tz={TZ}",
    "learning_month": f"GET /v1/users/{{id}}/learning?granularity=month&tz={TZ}",
    "utterance": "GET /v1/utterances/{id} (status present)",
    "utterance_completed": "GET /v1/utterances/{id} (status completed)",
}
KINDS = ("current", "late")

Request = tuple[str, tuple[tuple[str, str], ...]]  # path, query parameters


# ---- what a POST adds to, and how an answer shows it


@dataclass
class Posted:
    utterance_id: str
    user_id: str
    pair: tuple[str, str]
    ts: datetime  # aware UTC, millisecond precision
    kind: str


def served_keys(p: Posted, since: date) -> dict[str, tuple[Any, Request]]:
    """Per served table the POST shows in: the key it adds one to (None: not
    a count), and the read that answers for that key."""
    u = p.user_id
    reads: dict[str, tuple[Any, Request]] = {}
    for window, step in (("minute", MINUTE), ("hour", HOUR), ("day", DAY)):
        start = floor_to(p.ts, step)
        params = (
            ("window", window),
            ("from", start.isoformat()),
            ("to", (start + step).isoformat()),
        )
        reads[f"errors_{window}"] = ((u, start, p.pair), (f"/v1/users/{u}/errors", params))
    top = f"/v1/users/{u}/errors/top"
    reads["top_all_time"] = ((u, p.pair), (top, (("limit", "100"),)))
    if p.ts.date() >= since:
        reads["top_since"] = ((u, p.pair), (top, (("limit", "100"), ("since", since.isoformat()))))
    local = p.ts.astimezone(ZoneInfo(TZ)).date()
    monday = local - timedelta(days=local.weekday())
    first = local.replace(day=1)
    periods = {
        "day": (local, local + timedelta(days=1)),
        "week": (monday, monday + timedelta(days=7)),
        "month": (first, (first + timedelta(days=32)).replace(day=1)),
    }
    for granularity, (start, end) in periods.items():
        params = (
            ("granularity", granularity), ("tz", TZ),
            ("from", start.isoformat()), ("to", end.isoformat()),
        )  # fmt: skip
        reads[f"learning_{granularity}"] = ((u, start), (f"/v1/users/{u}/learning", params))
    utterance = (f"/v1/utterances/{p.utterance_id}", ())
    reads["utterance"] = (None, utterance)
    reads["utterance_completed"] = (None, utterance)
    return reads


def shown(table: str, body: dict[str, Any], pair: tuple[str, str]) -> int:
    """What an answer counts for the sample's key: its pair's count, the
    period's entries, or 1 when the utterance is there (or completed)."""
    if table.startswith("errors_"):
        return sum(
            c["count"]
            for w in body["windows"]
            for c in w["counts"]
            if (c["category"], c["subcategory"]) == pair
        )
    if table.startswith("top_"):
        return sum(e["count"] for e in body["errors"] if (e["category"], e["subcategory"]) == pair)
    if table.startswith("learning_"):
        return sum(p["entries"] for p in body["periods"])
    if table == "utterance":
        return int(body.get("status") is not None)
    return int(body.get("status") == "completed")


@dataclass(eq=False)
class Check:
    """One sampled POST in one table, until an answer includes it."""

    table: str
    kind: str
    request: Request
    pair: tuple[str, str]
    needed: int  # the answer includes the POST once it shows at least this
    acked_at: float  # monotonic, at the 202
    acked_wall: datetime  # aware UTC, at the 202
    seen_after_s: float | None = None
    # Answers whose as_of was after the 202 that did not include it, and by
    # how much their as_of was ahead of what they counted, at most.
    as_of_violations: int = 0
    as_of_ahead_s: float = 0.0


# ---- reading until seen


@dataclass
class Poller:
    """Reads every pending check's answer each POLL_EVERY_S: one GET per
    distinct request, whatever number of checks wait on it, and none for a
    request whose previous GET has not answered yet (so a slow answer delays
    only its own checks)."""

    clients: ClientPools  # GETS_IN_FLIGHT connections
    pending: dict[Request, list[Check]] = field(default_factory=dict)
    done: list[Check] = field(default_factory=list)
    reads: int = 0
    read_failures: Counter[str] = field(default_factory=Counter)

    def add(self, checks: list[Check]) -> None:
        for check in checks:
            self.pending.setdefault(check.request, []).append(check)

    async def run(self, posting_over: asyncio.Event) -> None:
        in_flight: set[Request] = set()
        reading: set[asyncio.Task[None]] = set()
        while not (posting_over.is_set() and not self.pending):
            began = time.monotonic()
            self._give_up(began)
            for request in self.pending.keys() - in_flight:
                in_flight.add(request)
                task = asyncio.create_task(self._read(request, in_flight))
                reading.add(task)
                task.add_done_callback(reading.discard)
            await asyncio.sleep(max(0.0, began + POLL_EVERY_S - time.monotonic()))
        await asyncio.gather(*reading)

    def _give_up(self, now: float) -> None:
        for request, checks in list(self.pending.items()):
            waiting = [c for c in checks if now - c.acked_at <= GIVE_UP_S]
            if len(waiting) < len(checks):
                self.done += [c for c in checks if now - c.acked_at > GIVE_UP_S]  # never seen
                self._keep(request, waiting)

    def _keep(self, request: Request, checks: list[Check]) -> None:
        if checks:
            self.pending[request] = checks
        else:
            self.pending.pop(request, None)

    async def _read(self, request: Request, in_flight: set[Request]) -> None:
        try:
            body, at = await self._get(request)
        finally:
            in_flight.discard(request)
        if body is None:
            return
        as_of = body.get("as_of")
        as_of = datetime.fromisoformat(as_of) if isinstance(as_of, str) else None
        waiting = []
        for check in self.pending.get(request, []):
            if shown(check.table, body, check.pair) >= check.needed:
                check.seen_after_s = at - check.acked_at
                self.done.append(check)
                continue
            if as_of is not None and as_of > check.acked_wall:
                check.as_of_violations += 1
                ahead = (as_of - check.acked_wall).total_seconds()
                check.as_of_ahead_s = max(check.as_of_ahead_s, ahead)
            waiting.append(check)
        self._keep(request, waiting)

    async def _get(self, request: Request) -> tuple[dict[str, Any] | None, float]:
        path, params = request
        self.reads += 1
        try:
            async with self.clients.slot() as client:
                r = await client.get(path, params=params)
        except httpx.HTTPError as exc:
            self.read_failures[type(exc).__name__] += 1
            return None, time.monotonic()
        at = time.monotonic()
        if r.status_code != 200:
            self.read_failures[str(r.status_code)] += 1
            return None, at
        return r.json(), at

    def checks(self) -> list[Check]:
        return self.done + [c for checks in self.pending.values() for c in checks]


def table_summary(checks: list[Check]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for table in TABLES:
        for kind in KINDS:
            found = [c for c in checks if c.table == table and c.kind == kind]
            if not found:
                continue
            seen = [c.seen_after_s for c in found if c.seen_after_s is not None]
            s = summarize(seen)
            out.setdefault(table, {})[kind] = {
                "n": len(found),
                "p50": s["p50"],
                "p99": s["p99"],
                "max": s["max"],
                "never_seen": len(found) - len(seen),
                "as_of_violated": sum(1 for c in found if c.as_of_violations),
                "as_of_violating_answers": sum(c.as_of_violations for c in found),
                "as_of_ahead_max_s": round(max(c.as_of_ahead_s for c in found), 3),
            }
    return out


# ---- the load


class Load:
    """POSTs at a steady rate, tallies every acknowledged one per served key,
    hands a sample to the poller, and samples as_of meanwhile. Without a
    rate: POSTS_IN_FLIGHT clients post back to back, and no POST is read back."""

    def __init__(
        self,
        url: str,
        key: str,
        tenant: str,
        learners: list[tuple[str, str]],
        rate: float | None,
        seconds: float,
    ) -> None:
        self.url, self.key, self.tenant = url, key, tenant
        self.learners = learners
        self.rate, self.seconds = rate, seconds
        self.since = datetime.now(UTC).date() - timedelta(days=SINCE_DAYS_AGO)
        self.rng = random.Random(3)
        self.tally: Counter[tuple[str, Any]] = Counter()
        # Sample every n-th POST of each kind: about SAMPLES_PER_S of each.
        share = {"current": 1 - LATE_SHARE, "late": LATE_SHARE}
        self.sample_every = {
            k: max(1, round(rate * share[k] / SAMPLES_PER_S)) if rate is not None else 0
            for k in KINDS
        }
        self.acked = Counter[str]()
        self.statuses = Counter[str]()
        self.post_ms: list[float] = []
        self.as_of_lag: dict[str, list[float]] = {"error_counters": [], "learning": []}
        # Seconds into the load each pair of lags was sampled at (when its
        # reads began): a maximum at the start is the idle flows' as_of.
        self.as_of_at: dict[str, list[float]] = {"error_counters": [], "learning": []}
        self.loop_lag_ms: list[float] = []
        self.sent = 0
        self.post_waited_ms: list[float] = []  # for a slot: the offered rate not kept
        self.lost = 0  # POSTs never acknowledged
        self.answered_s = 0.0  # from the first POST to the last answer

    async def run(self, around_posting: Callable[[bool], None]) -> Poller:
        async with (
            ClientPools(self.url, self.key, POSTS_IN_FLIGHT, timeout=30) as posts,
            ClientPools(self.url, self.key, GETS_IN_FLIGHT, timeout=10) as gets,
            # The as_of samples: one read at a time, never behind the checks.
            httpx.AsyncClient(
                base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=10
            ) as sampler,
        ):
            poller = Poller(gets)
            posting_over = asyncio.Event()
            polling = asyncio.create_task(poller.run(posting_over))
            sampling = asyncio.create_task(self._sample_as_of(sampler, posting_over))
            probing = asyncio.create_task(self._probe_loop(posting_over))
            around_posting(True)
            try:
                if self.rate is not None:
                    await self._post_steadily(posts, poller)
                else:
                    await self._post_flat_out(posts, poller)
            finally:
                around_posting(False)
                posting_over.set()
            await asyncio.gather(polling, sampling, probing)
        return poller

    async def _post_steadily(self, posts: ClientPools, poller: Poller) -> None:
        began = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        sent = 0
        while (elapsed := time.monotonic() - began) < self.seconds:
            task = asyncio.create_task(self._post(posts, poller, sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            self.sent = sent
            await asyncio.sleep(max(0.0, sent / self.rate - elapsed))
        await asyncio.gather(*tasks)
        self.answered_s = time.monotonic() - began

    async def _post_flat_out(self, posts: ClientPools, poller: Poller) -> None:
        began = time.monotonic()

        async def client() -> None:
            while time.monotonic() - began < self.seconds:
                self.sent += 1
                await self._post(posts, poller, self.sent - 1)

        await asyncio.gather(*(client() for _ in range(POSTS_IN_FLIGHT)))
        self.answered_s = time.monotonic() - began

    async def _post(self, posts: ClientPools, poller: Poller, i: int) -> None:
        rng = self.rng
        kind = "late" if rng.random() < LATE_SHARE else "current"
        user_id, conversation_id = rng.choice(self.learners)
        pair = rng.choice(PAIRS)
        age = timedelta(days=rng.uniform(*LATE_DAYS)) if kind == "late" else timedelta(0)
        words = rng.randint(1, 9)
        utterance_id = f"{self.tenant}-{i}"
        due = time.monotonic()
        ts = datetime.now(UTC)  # set when first sent
        for attempt in range(POST_ATTEMPTS):
            async with posts.slot() as client:
                sent = time.monotonic()
                if attempt == 0:
                    self.post_waited_ms.append((sent - due) * 1000)
                    ts = datetime.now(UTC) - age
                    ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)
                body = {
                    "utterance_id": utterance_id, "conversation_id": conversation_id,
                    "user_id": user_id, "text": "Yesterday I goed to the market.",
                    "timestamp": ts.isoformat(), "words_learned": words,
                    "errors": [{"category": pair[0], "subcategory": pair[1]}],
                }  # fmt: skip
                try:
                    r = await client.post(
                        "/v1/utterances", json=body, headers={"Idempotency-Key": utterance_id}
                    )
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
            self.statuses[status] += 1
            if status not in RETRIED and not status.endswith(("Error", "Timeout")):
                break
            # As a client does: the same request again, with the same key.
            await asyncio.sleep(float(r.headers.get("Retry-After", 1)) if status in RETRIED else 1)
        at, wall = time.monotonic(), datetime.now(UTC)
        if status != "202":
            self.lost += 1
            return
        self.post_ms.append((at - sent) * 1000)
        self.acked[kind] += 1
        every = self.sample_every[kind]
        sampled = every > 0 and self.acked[kind] % every == 0
        checks = []
        for table, (key, request) in served_keys(
            Posted(utterance_id, user_id, pair, ts, kind), self.since
        ).items():
            needed = 1
            if key is not None:
                self.tally[table, key] += 1
                needed = self.tally[table, key]
            if sampled:
                checks.append(Check(table, kind, request, pair, needed, at, wall))
        poller.add(checks)

    async def _sample_as_of(self, client: httpx.AsyncClient, over: asyncio.Event) -> None:
        """Twice a second: now - as_of of the error counts and learning
        answers (ranges that include now, so never from the answer cache)."""
        began = time.monotonic()
        while not over.is_set():
            at = round(time.monotonic() - began, 1)
            for flow, lag in (await as_of_lags(client, self.learners[0][0])).items():
                if lag is not None:
                    self.as_of_lag[flow].append(lag)
                    self.as_of_at[flow].append(at)
            await asyncio.sleep(0.5)

    def figures(self, poller: Poller) -> dict[str, Any]:
        """What the report shows of a load and its reads."""
        checks = poller.checks()
        return {
            "rate_per_s": self.rate,
            "seconds": self.seconds,
            "learners": len(self.learners),
            "posted": self.sent,
            "acknowledged": dict(self.acked),
            "post_statuses": dict(self.statuses),  # every attempt's answer
            "post_unacknowledged": self.lost,
            "post_latency_ms": summarize(self.post_ms),
            "post_waited_for_slot_ms": summarize(self.post_waited_ms),
            "posts_answered_within_s": round(self.answered_s, 1),
            "sample_every": self.sample_every,
            "sampled": {
                k: sum(1 for c in checks if c.kind == k and c.table == "utterance") for k in KINDS
            },
            "reads": poller.reads,
            "read_failures": dict(poller.read_failures),
            "tables": table_summary(checks),
            "as_of_lag_s": {
                flow: {"n": len(lags), **summarize(lags), "max_at_s": self._max_at(flow)}
                for flow, lags in self.as_of_lag.items()
            },
        }

    def _max_at(self, flow: str) -> float | None:
        """When, in seconds into the load, the largest lag was sampled."""
        lags = self.as_of_lag[flow]
        return self.as_of_at[flow][lags.index(max(lags))] if lags else None

    async def _probe_loop(self, over: asyncio.Event) -> None:
        """How late this process's event loop wakes: what the client itself
        adds to every figure."""
        while not over.is_set():
            began = time.monotonic()
            await asyncio.sleep(0.1)
            self.loop_lag_ms.append((time.monotonic() - began - 0.1) * 1000)


async def as_of_lags(client: httpx.AsyncClient, user_id: str) -> dict[str, float | None]:
    """now - as_of of the error counts and learning answers, in seconds
    (ranges that include now, so never from the answer cache); None where
    the read failed."""
    now = datetime.now(UTC)
    minute = floor_to(now, MINUTE)
    today = now.date()
    reads = {
        "error_counters": (
            f"/v1/users/{user_id}/errors",
            {"window": "minute", "from": (minute - MINUTE).isoformat(),
             "to": (minute + 2 * MINUTE).isoformat()},
        ),
        "learning": (
            f"/v1/users/{user_id}/learning",
            {"granularity": "day", "from": today.isoformat(),
             "to": (today + timedelta(days=1)).isoformat()},
        ),
    }  # fmt: skip
    lags: dict[str, float | None] = {}
    for flow, (path, params) in reads.items():
        try:
            r = await client.get(path, params=params)
            as_of = r.json().get("as_of") if r.status_code == 200 else None
        except httpx.HTTPError:
            as_of = None
        lags[flow] = (
            (datetime.now(UTC) - datetime.fromisoformat(as_of)).total_seconds() if as_of else None
        )
    return lags


# ---- the live system


class Flows:
    """The three flows as ops/dataflow runs them: `python -m dataflows run
    FLOW --recovery DIR`, each on a fresh recovery folder, starting to read
    the feed at the present, and started again 5 s after it exits (on a
    Cassandra or Redis error), resuming from its last snapshot. Each restart
    is recorded; a flow's CPU is that of every process it ran as."""

    RESTART_AFTER_S = 5.0

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.started = utc_now()
        self._began = time.monotonic()
        self._env = {
            **os.environ,
            "UTTERSTREAM_CASSANDRA_KEYSPACE": settings.cassandra.keyspace,
            "UTTERSTREAM_DATAFLOW_START_AT": (self.started - timedelta(seconds=1)).isoformat()
            + "+00:00",
        }
        db = Db.open(settings.cassandra)
        try:
            for flow in FLOWS:
                forget_progress(db, flow)
        finally:
            db.close()
        self.recovery = {flow: workdir / flow for flow in FLOWS}
        self.logs = {flow: LOG_DIR / f"bench-{flow}-{os.getpid()}.log" for flow in FLOWS}
        self.restarts: dict[str, list[dict[str, Any]]] = {flow: [] for flow in FLOWS}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._down_since: dict[str, float] = {}
        # CPU seconds of a flow's ended processes, and its live one's lately
        # (the process alone: scanning for children twice a second costs this
        # process more than a dying flow's last half second is worth).
        self._banked = dict.fromkeys(FLOWS, 0.0)
        self._last_cpu = dict.fromkeys(FLOWS, 0.0)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        try:
            for flow in FLOWS:
                self._launch(flow)
        except BaseException:
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="flows", daemon=True)
        self._supervisor.start()

    def _launch(self, flow: str) -> None:
        command = [sys.executable, "-m", "dataflows", "run", flow]
        command += ["--recovery", str(self.recovery[flow])]
        self._procs[flow] = launch(command, self.logs[flow], self._env, append=True)

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for flow, proc in self._procs.items():
                    now = time.monotonic()
                    if proc.poll() is None:
                        self._last_cpu[flow] = cpu.own_cpu_s(proc.pid)
                    elif flow not in self._down_since:
                        self._banked[flow] += self._last_cpu[flow]
                        self._last_cpu[flow] = 0.0
                        self._down_since[flow] = now
                        at_s = self.age_s()
                        self.restarts[flow].append({"at_s": at_s, "exit": proc.returncode})
                        log.warning("flow_exited", flow=flow, exit=proc.returncode, at_s=at_s)
                    elif now - self._down_since[flow] >= self.RESTART_AFTER_S:
                        del self._down_since[flow]
                        self._launch(flow)

    def age_s(self) -> float:
        """Seconds since the flows were started (what restarts are timed by)."""
        return round(time.monotonic() - self._began, 1)

    def cpu_s(self) -> dict[str, float]:
        with self._lock:
            return {
                flow: self._banked[flow]
                + (cpu.tree_cpu_s(proc.pid) if proc.poll() is None else self._last_cpu[flow])
                for flow, proc in self._procs.items()
            }

    def rss_mib(self) -> dict[str, float]:
        with self._lock:
            return {flow: cpu.tree_rss_mib(proc.pid) for flow, proc in self._procs.items()}

    def wait_swept(self, db: Db, shards: int, deadline_s: float = 120) -> float:
        """Until every shard of every flow has recorded a sweep since the
        start; returns the seconds it took."""
        began = time.monotonic()
        while time.monotonic() - began < deadline_s:
            rows = [r for r in progress(db, list(FLOWS)) if r.updated_at >= self.started]
            if len(rows) >= shards * len(FLOWS):
                return time.monotonic() - began
            time.sleep(0.5)
        raise RuntimeError(
            f"the flows did not sweep the feed within {deadline_s}s; see {self.logs}"
        )

    def held(self) -> dict[str, int]:
        """Learners whose items wait in each counting flow's collect step, at
        its latest snapshot."""
        return {flow: held_keys(self.recovery[flow]) for flow in COUNTING}

    def stop(self) -> None:
        self._stopping.set()
        if hasattr(self, "_supervisor"):
            self._supervisor.join()
        for proc in self._procs.values():
            stop(proc, grace_s=15)


def kept_load(
    settings: Settings, api: ApiServer, seconds: float, learners_n: int
) -> dict[str, Any]:
    """The rate the whole system keeps (API and flows on one machine), and
    freshness at half of it: of its own tenant and learners, so the tallies
    of each load stay its own. A failure here is reported, and leaves the
    figures measured before it."""
    try:
        return _kept_load(settings, api, seconds, learners_n)
    except Exception as exc:  # a bench section reports a failure, it does not stop
        log.exception("kept_load_failed")
        return {"error": repr(exc)}


def _kept_load(
    settings: Settings, api: ApiServer, seconds: float, learners_n: int
) -> dict[str, Any]:
    tenant = f"bench-kept-{os.getpid()}"
    key = create_key(settings, tenant)
    # Both sets made first: the probe leaves the API busy for a while.
    probe_learners = make_learners(api.url, key, learners_n, f"{tenant}-probe")
    learners = make_learners(api.url, key, learners_n, tenant)
    probe = Load(api.url, key, f"{tenant}-probe", probe_learners, None, PROBE_S)
    uvloop.run(probe.run(lambda starting: None))
    acknowledged = sum(probe.acked.values())
    kept_per_s = acknowledged / probe.answered_s
    if kept_per_s < 2 * MIN_RATE:
        raise RuntimeError(f"the probe had {acknowledged} POSTs acknowledged in {PROBE_S:g} s")
    settled_s = uvloop.run(_caught_up(api.url, key, learners[0][0]))
    load = Load(api.url, key, tenant, learners, round(kept_per_s / 2, 1), seconds)
    machine = cpu.Share(api.worker_pids())
    meters = ExitStack()

    def around_posting(starting: bool) -> None:
        if starting:
            meters.enter_context(machine)
        else:
            meters.close()

    poller = uvloop.run(load.run(around_posting))
    return {
        "probe": {
            "in_flight": POSTS_IN_FLIGHT,
            "seconds": round(probe.answered_s, 1),
            "acknowledged": acknowledged,
            "per_s": round(kept_per_s, 1),
            "post_statuses": dict(probe.statuses),
            "post_latency_ms": summarize(probe.post_ms),
        },
        "caught_up_after_s": settled_s,
        **load.figures(poller),
        "machine_cpu": machine.result,
    }


async def _caught_up(url: str, key: str, user_id: str) -> float | None:
    """Seconds until both flows' as_of is within TARGET of the present
    (None: not within SETTLE_MAX_S)."""
    began = time.monotonic()
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        while (waited := time.monotonic() - began) < SETTLE_MAX_S:
            lags = (await as_of_lags(client, user_id)).values()
            if all(lag is not None and lag <= TARGET["as_of_lag_s"] for lag in lags):
                return round(waited, 1)
            await asyncio.sleep(0.5)
    return None


def run(
    settings: Settings, rate: float, seconds: float, idle_s: float, learners_n: int
) -> dict[str, Any]:
    tenant = f"bench-fresh-{os.getpid()}"
    key = create_key(settings, tenant)
    workdir = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    api = ApiServer(settings, workers=2)
    db = Db.open(settings.cassandra)
    flows: Flows | None = None
    try:
        flows = Flows(settings, workdir)
        learners = make_learners(api.url, key, learners_n, tenant)
        swept_s = flows.wait_swept(db, settings.feed.shards)
        log.info("flows_ready", seconds=round(swept_s, 1))
        # Idle is what a shard is after IDLE_AFTER without entries, not its
        # first seconds (the learners' set-up, the start's cadence).
        settle_s = IDLE_AFTER.total_seconds() + 1
        time.sleep(settle_s)
        with (
            cpu.CoreShare(flows.cpu_s, flows.rss_mib) as idle,
            cpu.Share(api.worker_pids()) as machine_idle,
        ):
            time.sleep(idle_s)
        log.info("idle_cpu", **{f: v["cpu_percent_of_core"] for f, v in idle.result.items()})

        load = Load(api.url, key, tenant, learners, rate, seconds)
        loaded = cpu.CoreShare(flows.cpu_s, flows.rss_mib)
        machine = cpu.Share(api.worker_pids())
        client = cpu.OwnShare()
        meters = ExitStack()
        held_at_end: dict[str, int] = {}
        load_window: list[float] = []

        def around_posting(starting: bool) -> None:
            """The CPU meters cover the POSTs only, not the reads after."""
            nonlocal held_at_end
            load_window.append(flows.age_s())
            if starting:
                for meter in (loaded, machine, client):
                    meters.enter_context(meter)
            else:
                meters.close()
                held_at_end = flows.held()

        # uvloop, as the API runs: the client's own CPU and lag stay small.
        poller = uvloop.run(load.run(around_posting))
        load_ended = time.monotonic()
        # A snapshot taken after the last write shows what state is left.
        time.sleep(max(0.0, load_ended + 11 - time.monotonic()))
        held_after = flows.held()
        kept = kept_load(settings, api, seconds, learners_n)
    finally:
        if flows is not None:
            flows.stop()
        api.stop()
        db.close()
        shutil.rmtree(workdir, ignore_errors=True)
    flow_cpu = {
        "idle": {"seconds": round(idle.seconds, 1), "after_s": settle_s, "flows": idle.result},
        "load": {"seconds": round(loaded.seconds, 1), "flows": loaded.result},
    }
    d = settings.dataflow
    return {
        **load.figures(poller),
        "late_share": LATE_SHARE,
        "late_days": list(LATE_DAYS),
        "tz": TZ,
        "since": load.since.isoformat(),
        "in_flight_max": {"posts": POSTS_IN_FLIGHT, "gets": GETS_IN_FLIGHT},
        "poll_every_s": POLL_EVERY_S,
        "give_up_s": GIVE_UP_S,
        "target": TARGET,
        "flow_cpu": flow_cpu,
        "machine_cpu": {"idle": machine_idle.result, "load": machine.result},
        "client_cpu_percent_of_core": client.result,
        "held_learners": {"end_of_load": held_at_end, "after_11_s": held_after},
        "client_loop_lag_ms": summarize(load.loop_lag_ms),
        "flows_ready_s": round(swept_s, 1),
        "flow_restarts": flows.restarts,
        "load_window_s": load_window,  # seconds since the flows started
        "kept": kept,
        "settings": {
            "reader_lag_s": settings.feed.reader_lag_s,
            "doorbell": True,  # polls one reader lag after a ring (live/doorbell.py)
            "poll_interval_s": d.poll_interval_s,
            "sweep_interval_s": d.sweep_interval_s,
            "current_flush_s": d.current_flush_s,
            "flush_interval_s": d.flush_interval_s,
            "batch_max_items": d.batch_max_items,
            "feed_overlap_s": d.feed_overlap_s,
            "workers": d.workers,
        },
    }
