"""A dead API worker is replaced at once, a dead server restarted within 5 s,
and the Idempotency-Key claim of a request whose process died lapses within
its lease, while a live slow request keeps its claim (SPEC, "Idempotency").

First the claim's lease on its own (api.edge.idempotency.run against the
real Cassandra); then a supervisor killed with SIGKILL, which must leave no
server or worker behind and be counted by the next one; then the fault
test: retrying clients (the same key on
every retry, a 30 s budget per request) post utterances through the
supervised server (`python -m api serve`, two workers) for about a minute
while the test kills one worker with SIGKILL, later the whole server (its
main process and workers), and later the worker holding claimed keys of
requests in flight. Afterwards no acknowledged utterance is lost or counted
twice, every request was acknowledged within its budget (and none of them
as a duplicate: each posts its own utterances), the API answered again
within 5 s of each kill, the restarts are counted in /metrics and the
supervisor's state file, and the served error counts equal the recount
from the base table.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from api.app import server_command
from api.edge import idempotency
from api.edge.problems import RequestInFlight
from api.server.processes import children_of
from api.writes.store import Store
from cql.clock import utc_now
from cql.session import Db
from cql.utterances import IDEMPOTENCY_KEYS, IdempotencyRow
from dataflows import error_counters
from runtime.processes import free_port, launch, stop
from runtime.settings import Settings
from tests import oracle
from tests.conftest import ROOT, Tenant, new_tenant, settings_env
from tests.dataflow_helpers import (
    PAIRS,
    create_learners,
    error_facts,
    flow_settings,
    run_to_end,
    served_error_counts,
    served_error_totals,
)
from tests.dataflow_helpers import utterance as utterance_of
from tests.helpers import feed_entries, learner, utterance

log = structlog.get_logger(__name__)

# ---- the claim's lease


def _key() -> tuple[str, str]:
    return f"t-{uuid.uuid4().hex[:12]}", f"k-{uuid.uuid4().hex[:8]}"


async def _never() -> idempotency.Answer:
    raise AssertionError("a request whose key is claimed must not run")


def _run(store: Store, tenant: str, key: str, lease_s: float, work: Any) -> Any:
    return idempotency.run(
        store, tenant=tenant, key=key, digest=b"same", in_flight_timeout_s=lease_s, work=work
    )


async def test_a_live_slow_request_keeps_its_claim_past_its_lease(db: Db) -> None:
    """The holder renews its lease while it runs: retries during four
    leases' worth of work are all 409, each told to come back by when the
    lease ends, and once it is done they get its answer."""
    store, lease = Store(db, 16), 0.6
    tenant, key = _key()
    began = asyncio.Event()

    async def slow() -> idempotency.Answer:
        began.set()
        await asyncio.sleep(4 * lease)
        return 202, b'{"slow": true}'

    first = asyncio.create_task(_run(store, tenant, key, lease, slow))
    await began.wait()
    refused: list[float] = []
    while not first.done():
        with pytest.raises(RequestInFlight) as exc:
            await _run(store, tenant, key, lease, _never)
        assert exc.value.retry_after_s is not None
        refused.append(exc.value.retry_after_s)
        await asyncio.sleep(lease / 3)
    assert (await first).status_code == 202
    assert len(refused) >= 6, refused
    assert all(0 < r <= lease + 0.05 for r in refused), refused
    replay = await _run(store, tenant, key, lease, _never)
    assert replay.headers[idempotency.REPLAYED] == "true"
    assert replay.content == b'{"slow": true}'


async def test_a_dead_holders_claim_lapses_at_its_lease_and_one_retry_takes_it_over(
    db: Db,
) -> None:
    store, lease = Store(db, 16), 1.0
    tenant, key = _key()
    now = utc_now()
    dead = IdempotencyRow(
        tenant, key, b"same", uuid.uuid4(), "started", now, None, None,
        now + timedelta(seconds=lease), "elsewhere:1",
    )  # fmt: skip
    assert await store.claim_key(dead) is None
    with pytest.raises(RequestInFlight) as exc:
        await _run(store, tenant, key, lease, _never)
    wait = exc.value.retry_after_s
    assert wait is not None and 0 < wait <= lease
    await asyncio.sleep(wait + 0.05)

    calls: list[int] = []

    async def work() -> idempotency.Answer:
        calls.append(1)
        await asyncio.sleep(0.3)
        return 202, b"{}"

    answers = await asyncio.gather(
        *(_run(store, tenant, key, lease, work) for _ in range(6)), return_exceptions=True
    )
    assert len(calls) == 1, "more than one retry took the lapsed claim over"
    fresh = [a for a in answers if not isinstance(a, BaseException) and not a.headers]
    assert len(fresh) == 1 and fresh[0].status_code == 202
    assert all(
        isinstance(a, RequestInFlight) or a.headers.get(idempotency.REPLAYED) == "true"
        for a in answers
        if a is not fresh[0]
    ), answers
    row = IDEMPOTENCY_KEYS.from_row(
        db.session.execute(db.prepare(IDEMPOTENCY_KEYS.select()), (tenant, key)).one()
    )
    assert row.state == "done"
    assert row.holder == f"{socket.gethostname()}:{os.getpid()}"


async def test_a_holder_that_renews_in_time_is_never_taken_over(db: Db) -> None:
    """The take-over is a CAS on the owner and the lease as read: a holder
    that renewed after a retry read its lapsed lease keeps the claim."""
    store = Store(db, 16)
    tenant, key = _key()
    now = utc_now()
    holder = IdempotencyRow(
        tenant, key, b"same", uuid.uuid4(), "started", now - timedelta(seconds=10), None, None,
        now - timedelta(seconds=1), "slow:1",
    )  # fmt: skip
    assert await store.claim_key(holder) is None
    retry = IdempotencyRow(
        tenant, key, b"same", uuid.uuid4(), "started", now, None, None,
        now + timedelta(seconds=3), "retry:2",
    )  # fmt: skip
    seen = await store.claim_key(retry)
    assert seen is not None and seen.owner == holder.owner
    assert await store.renew_key(tenant, key, holder.owner, now + timedelta(seconds=3))
    assert not await store.take_over_key(seen, retry)
    assert not await store.renew_key(tenant, key, retry.owner, now + timedelta(seconds=3))


def _unfinish(db: Db, tenant: str, key: str) -> None:
    """The key as a request leaves it when its worker died after writing and
    before storing its answer: started, its lease run out."""
    db.session.execute(
        db.prepare(IDEMPOTENCY_KEYS.update(["state", "status_code", "response", "lease_until"])),
        ("started", None, None, utc_now() - timedelta(seconds=1), tenant, key),
    )


async def test_the_retry_that_finishes_its_own_request_says_duplicate_false(
    client, tenant: Tenant, db: Db
) -> None:
    user_id, conversation_id = await learner(client, tenant.headers)
    own = utterance(user_id, conversation_id, utterance_id=f"own-{uuid.uuid4().hex}")
    headers = tenant.headers | {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = await client.post("/v1/utterances", json=own, headers=headers)
    assert first.status_code == 202 and first.json()["duplicate"] is False
    _unfinish(db, tenant.name, headers["Idempotency-Key"])
    retry = await client.post("/v1/utterances", json=own, headers=headers)
    assert retry.status_code == 202, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    assert retry.json() == first.json()
    # Another request with the same utterance: that one is a duplicate.
    other = await client.post(
        "/v1/utterances", json=own, headers=tenant.headers | {"Idempotency-Key": "k-other"}
    )
    assert other.json()["duplicate"] is True

    # In a batch, each item is told apart by its index: a copy of an earlier
    # item of the same batch stays a duplicate.
    a, b = (
        utterance(user_id, conversation_id, utterance_id=f"own-{uuid.uuid4().hex}", text=t)
        for t in ("One.", "Two.")
    )
    batch = {"utterances": [a, b, a]}
    headers = tenant.headers | {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = await client.post("/v1/utterances/batch", json=batch, headers=headers)
    assert first.status_code == 202
    assert [r["duplicate"] for r in first.json()["results"]] == [False, False, True]
    _unfinish(db, tenant.name, headers["Idempotency-Key"])
    retry = await client.post("/v1/utterances/batch", json=batch, headers=headers)
    assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers
    assert retry.json() == first.json()


# ---- the fault test

WORKERS = 2
LOAD_S = 58.0
CLIENTS = 12
BUDGET_S = 30.0
BATCH_ITEMS = 20
BACK_WITHIN_S = 5.0
# When the kills come, in seconds from the start of the load.
KILL_WORKER_AT, KILL_SERVER_AT, KILL_HOLDER_AT = 8.0, 24.0, 40.0


class Supervised:
    """`python -m api serve` (api.app.server_command), two workers, with a
    state file and a Prometheus folder of its own."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = tmp / "api-state.json"
        metrics = tmp / "metrics"
        metrics.mkdir(exist_ok=True)
        env = {**settings_env(settings), "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        self.log_path = ROOT / ".local" / "log" / f"test-api-supervision-{self.port}.log"
        command = server_command(self.port, WORKERS, state=self.state)
        self.proc = launch(command, self.log_path, env)
        deadline = time.monotonic() + 120
        while not self.ready():
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the API was not ready in 120 s; see {self.log_path}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            answered = httpx.get(self.url + "/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
        return answered and len(self.workers()) == WORKERS

    def server(self) -> int | None:
        if self.proc.poll() is not None:
            self.stop()
            raise AssertionError(f"the supervisor exited; see {self.log_path}")
        found = children_of(self.proc.pid)
        return found[0] if found else None

    def workers(self) -> list[int]:
        server = self.server()
        return children_of(server) if server is not None else []

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def stop(self) -> None:
        stop(self.proc, grace_s=20)


@dataclass
class Attempt:
    sent: float
    answered: float
    outcome: int | str  # the status, or the transport error's name


@dataclass
class Post:
    key: str
    path: str
    body: dict[str, Any]
    started: float
    attempts: list[Attempt] = field(default_factory=list)
    answer: dict[str, Any] | None = None
    acked_at: float | None = None

    @property
    def acknowledged(self) -> list[str]:
        """The ids of the utterances the answer acknowledges."""
        assert self.answer is not None
        if self.path.endswith("batch"):
            return [r["utterance_id"] for r in self.answer["results"]]
        return [self.answer["utterance_id"]]

    def texts(self) -> list[str]:
        items = self.body["utterances"] if self.path.endswith("batch") else [self.body]
        return [item["text"] for item in items]


class Load:
    """CLIENTS threads, each posting one request after another, every one
    retried with its key until acknowledged or out of budget: after a
    transport error at once (a pause of 0.2 s), after a 409, 429 or 503 when
    Retry-After says."""

    def __init__(self, url: str, tenant: Tenant, learners: list[tuple[str, str]]) -> None:
        self.url, self.tenant, self.learners = url, tenant, learners
        self.posts: list[Post] = []
        self.in_flight: dict[str, Post] = {}
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)
        ]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(BUDGET_S + 15)

    def _new(self, rng: random.Random) -> Post:
        now = datetime.now(UTC)

        def one() -> dict[str, Any]:
            item = utterance_of(
                rng.choice(self.learners),
                now - timedelta(seconds=rng.uniform(0, 20)),
                rng.choices(PAIRS, k=rng.randint(1, 2)),
                rng.randint(0, 5),
            )
            item["text"] = f"Utterance {uuid.uuid4().hex}."
            return item

        if rng.random() < 0.3:
            body = {"utterances": [one() for _ in range(BATCH_ITEMS)]}
            key = f"sup-batch-{uuid.uuid4()}"
            return Post(key, "/v1/utterances/batch", body, time.monotonic())
        key = f"sup-{uuid.uuid4()}"
        body = one()
        if rng.random() < 0.5:
            del body["utterance_id"]  # the id is derived from the key
        return Post(key, "/v1/utterances", body, time.monotonic())

    def _client(self, index: int) -> None:
        rng = random.Random(index)
        headers = self.tenant.headers
        with httpx.Client(base_url=self.url, headers=headers) as http:
            while not self.stopping.is_set():
                post = self._new(rng)
                self.posts.append(post)
                self.in_flight[post.key] = post
                self._carry_out(http, post)
                self.in_flight.pop(post.key, None)

    def _carry_out(self, http: httpx.Client, post: Post) -> None:
        deadline = post.started + BUDGET_S
        while (left := deadline - time.monotonic()) > 0:
            sent = time.monotonic()
            try:
                r = http.post(
                    post.path,
                    json=post.body,
                    headers={"Idempotency-Key": post.key},
                    timeout=min(10.0, left),
                )
            except httpx.HTTPError as exc:
                post.attempts.append(Attempt(sent, time.monotonic(), type(exc).__name__))
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                continue
            post.attempts.append(Attempt(sent, time.monotonic(), r.status_code))
            if r.status_code == 202:
                post.answer, post.acked_at = r.json(), time.monotonic()
                return
            if r.status_code not in (409, 429, 503):
                return  # not retryable: the test fails on it
            wait = float(r.headers.get("retry-after", "1"))
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))


class Probe:
    """GET /ready every 50 ms: (sent, answered, ok) of each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, float, bool]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=1.0) as http:
            while not self.stopping.is_set():
                sent = time.monotonic()
                try:
                    ok = http.get(self.url + "/ready").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.samples.append((sent, time.monotonic(), ok))
                time.sleep(0.05)

    def back_after(self, killed: float, deadline_s: float = 60.0) -> float:
        """Seconds from `killed` until a probe sent after it was answered."""
        while time.monotonic() < killed + deadline_s:
            for sent, answered, ok in list(self.samples):
                if sent > killed and ok:
                    return answered - killed
            time.sleep(0.05)
        raise AssertionError(f"the API did not answer within {deadline_s} s of a kill")

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


@dataclass
class Kill:
    what: str
    pids: list[int]
    at: float
    back_s: float = 0.0
    replaced_s: float | None = None
    # Keys whose claims the killed processes held, mid-request.
    held: list[str] = field(default_factory=list)


def _claims(db: Db, tenant: str, keys: list[str]) -> dict[str, tuple[str, int | None]]:
    """key -> (state, holder's pid) of each key that is claimed."""
    statement = db.prepare(IDEMPOTENCY_KEYS.select(columns=["state", "holder"]), idempotent=True)
    found = {}
    for key in keys:
        row = db.session.execute(statement, (tenant, key)).one()
        if row is not None:
            state, holder = row
            found[key] = (state, int(holder.rsplit(":", 1)[1]) if holder else None)
    return found


def _held_by(db: Db, tenant: str, keys: list[str], pids: set[int]) -> list[str]:
    return [
        key
        for key, (state, pid) in _claims(db, tenant, keys).items()
        if state == "started" and pid in pids
    ]


def _wait_for_workers(api: Supervised, old: set[int], deadline_s: float = 30.0) -> float:
    """Seconds until the server again has all its workers, none of `old`'s dead ones."""
    began = time.monotonic()
    while time.monotonic() - began < deadline_s:
        now = set(api.workers())
        if len(now) == WORKERS and now - old:
            return time.monotonic() - began
        time.sleep(0.02)
    raise AssertionError(f"no worker replaced within {deadline_s} s; see {api.log_path}")


def _kill_worker(api: Supervised, db: Db, tenant: str, load: Load) -> Kill:
    workers = api.workers()
    victim = random.Random(3).choice(workers)
    flying = list(load.in_flight)
    os.kill(victim, signal.SIGKILL)
    kill = Kill("worker", [victim], time.monotonic())
    kill.held = _held_by(db, tenant, flying, {victim})
    kill.replaced_s = _wait_for_workers(api, set(workers))
    return kill


def _kill_server(api: Supervised, db: Db, tenant: str, load: Load) -> Kill:
    server = api.server()
    assert server is not None
    workers = api.workers()
    flying = list(load.in_flight)
    os.killpg(server, signal.SIGKILL)  # the main process and its workers
    kill = Kill("server", [server, *workers], time.monotonic())
    kill.held = _held_by(db, tenant, flying, set(workers))
    began = time.monotonic()
    while api.server() in (None, server):
        assert time.monotonic() - began < 10, "the supervisor started no new server"
        time.sleep(0.01)
    kill.replaced_s = time.monotonic() - kill.at
    return kill


def _kill_holder(api: Supervised, db: Db, tenant: str, load: Load) -> Kill:
    """SIGKILL to the worker holding the most claims of requests in flight
    (batches first: they hold theirs longest). Its requests may all finish
    between the look and the kill; then the next holder is killed too, and
    the kill's pids are every worker it took."""
    deadline = time.monotonic() + 20
    victims: list[int] = []
    while time.monotonic() < deadline:
        workers = set(api.workers())
        flying = sorted(load.in_flight, key=lambda k: not k.startswith("sup-batch"))
        holders = Counter(
            pid
            for state, pid in _claims(db, tenant, flying).values()
            if state == "started" and pid in workers
        )
        if holders:
            victim = holders.most_common(1)[0][0]
            os.kill(victim, signal.SIGKILL)
            victims.append(victim)
            kill = Kill("worker holding claims", list(victims), time.monotonic())
            # Those whose requests had not finished at the kill.
            kill.held = _held_by(db, tenant, flying, {victim})
            kill.replaced_s = _wait_for_workers(api, workers)
            if kill.held:
                return kill
            continue
        time.sleep(0.005)
    raise AssertionError("no worker held a claim of a request in flight for 20 s")


@pytest.mark.slow
def test_a_supervisor_killed_with_sigkill_leaves_nothing_behind_and_is_counted(
    migrated: Settings, tmp_path: Path
) -> None:
    """Its server gets SIGTERM when it dies and the workers go with the
    server; the supervisor that ops/api's loop starts next counts it."""
    api = Supervised(migrated, tmp_path)
    try:
        server = api.server()
        family = [server, *api.workers()]
        os.kill(api.proc.pid, signal.SIGKILL)
        api.proc.wait()
        deadline = time.monotonic() + 20
        while left := [pid for pid in family if pid is not None and _running(pid)]:
            assert time.monotonic() < deadline, f"left behind: {left}"
            time.sleep(0.1)
    finally:
        api.stop()
    again = Supervised(migrated, tmp_path)
    try:
        state = json.loads(again.state.read_text())
        assert state["restarts"] == {"server": 0, "worker": 0, "supervisor": 1}, state
        assert state["last_restart"]["pid"] == api.proc.pid
        sample = ("utterstream_api_restarts_total", (("process", "supervisor"),))
        assert again.metrics()[sample] == 1
    finally:
        again.stop()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_killed_workers_and_server_come_back_and_every_retried_request_completes(
    db: Db, migrated: Settings, tmp_path: Path
) -> None:
    flow = flow_settings(migrated)
    start = utc_now() - timedelta(seconds=1)
    started_at = datetime.now(UTC)
    tenant = new_tenant(db)
    api = Supervised(migrated, tmp_path)
    probe = load = None
    kills: list[Kill] = []
    try:
        with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=30) as http:
            learners = create_learners(http, 6)
        probe = Probe(api.url)
        load = Load(api.url, tenant, learners)
        began = time.monotonic()
        for at, kill in (
            (KILL_WORKER_AT, _kill_worker),
            (KILL_SERVER_AT, _kill_server),
            (KILL_HOLDER_AT, _kill_holder),
        ):
            time.sleep(max(0.0, began + at - time.monotonic()))
            kills.append(kill(api, db, tenant.name, load))
            kills[-1].back_s = probe.back_after(kills[-1].at)
        time.sleep(max(0.0, began + LOAD_S - time.monotonic()))
        load.stop()
        probe.stop()
        state = json.loads(api.state.read_text())
        metrics = api.metrics()
    finally:
        if load is not None:
            load.stop()
        if probe is not None:
            probe.stop()
        api.stop()

    posts = load.posts
    outcomes = Counter(a.outcome for p in posts for a in p.attempts)
    unacknowledged = [p for p in posts if p.acked_at is None]
    acknowledged = {
        uid: text
        for p in posts
        if p.answer is not None
        for uid, text in zip(p.acknowledged, p.texts(), strict=True)
    }
    held = {key for k in kills for key in k.held}
    by_key = {p.key: p for p in posts}

    def first_success_after(kill: Kill) -> float:
        """Seconds from the API answering again to the last success of a
        request whose claim the killed processes held (its retry sent)."""
        return max(
            (
                next(a.sent for a in by_key[key].attempts if a.outcome == 202)
                - (kill.at + kill.back_s)
                for key in kill.held
            ),
            default=0.0,
        )

    figures = {
        "requests": len(posts),
        "utterances": len(acknowledged),
        "kills": [
            {
                "what": k.what,
                "pids": k.pids,
                "answering_again_s": round(k.back_s, 3),
                "replaced_s": None if k.replaced_s is None else round(k.replaced_s, 3),
                "claims_held": len(k.held),
                "held_retry_succeeded_s_after_back": round(first_success_after(k), 3),
            }
            for k in kills
        ],
        "retries": sum(len(p.attempts) - 1 for p in posts),
        "outcomes": {str(k): v for k, v in sorted(outcomes.items(), key=str)},
        "unacknowledged": len(unacknowledged),
        "slowest_s": round(max(p.acked_at - p.started for p in posts if p.acked_at), 2),
        "restarts": state["restarts"],
        "taken_over": metrics.get(
            ("utterstream_idempotency_keys_total", (("outcome", "taken_over"),)), 0.0
        ),
    }
    log.info("supervision.figures", **figures)
    (ROOT / ".local" / "log" / "test-api-supervision-figures.json").write_text(
        json.dumps(figures, indent=2) + "\n"
    )

    # Back within 5 s of each kill; dead workers replaced, the server restarted.
    assert [k.back_s <= BACK_WITHIN_S for k in kills] == [True] * 3, figures
    assert all(k.replaced_s is not None and k.replaced_s <= BACK_WITHIN_S for k in kills), figures
    # The third kill did catch requests holding claims, and their retries
    # succeeded within 5 s of the API answering again.
    assert kills[2].held, figures
    assert all(first_success_after(k) <= BACK_WITHIN_S for k in kills), figures
    assert figures["taken_over"] >= len(kills[2].held)

    # Every request acknowledged within its budget; never a 500.
    assert not unacknowledged, [(p.key, p.attempts[-3:]) for p in unacknowledged[:5]]
    assert all(p.acked_at - p.started <= BUDGET_S for p in posts if p.acked_at)
    # (Strings are transport errors: connections cut by a kill.)
    assert {o for o in outcomes if isinstance(o, int)} <= {202, 409, 429, 503}, outcomes
    # Each request posts its own utterances: none is a duplicate, even when
    # a retry finished the request a dead worker had started.
    for p in posts:
        assert p.answer is not None
        if p.path.endswith("batch"):
            faults = [r for r in p.answer["results"] if r["status"] != 201 or r["duplicate"]]
            assert (p.answer["duplicates"], p.answer["rejected"]) == (0, 0), (p.key, faults)
            assert {r["status"] for r in p.answer["results"]} == {201}
        else:
            assert p.answer["duplicate"] is False, (p.key, p.answer)
    assert held <= {p.key for p in posts if p.acked_at}

    # Restarts counted in the state file and in /metrics.
    workers_killed = 1 + len(kills[2].pids)
    assert state["restarts"] == {"server": 1, "worker": workers_killed, "supervisor": 0}, state
    for process, count in state["restarts"].items():
        sample = ("utterstream_api_restarts_total", (("process", process),))
        assert metrics[sample] == count, metrics

    # Nothing acknowledged lost: each is stored with its text, and in the feed
    # with nothing else of this tenant.
    stored = oracle.load_utterances(db, tenant.name, acknowledged)
    assert {u.utterance_id: u.text for u in stored} == acknowledged
    fed = {e.utterance_id for e in feed_entries(db, migrated.feed, tenant.name, started_at)}
    assert fed == set(acknowledged)

    # Nothing counted twice: the served counts equal the recount.
    run_to_end(error_counters, flow, start)
    late_after = flow.dataflow.late_after_s
    assert served_error_totals(db, tenant.name, stored) == oracle.error_totals(stored)
    assert served_error_counts(db, tenant.name, stored, late_after) == oracle.error_counts(
        stored, late_after
    )
    assert error_facts(db, tenant.name, stored) == oracle.error_points(stored)
