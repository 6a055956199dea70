"""Losing Cassandra nodes and a dataflow process under load, on a 3-node
cluster (README, "Running on a cluster").

The test runs a cluster of its own: `ops/cluster start --nodes 3 --first 2`
(127.0.0.2-4 beside the shared node on 127.0.0.1, its state and data under
.local/cluster-test, kept between runs so later ones start faster), a
keyspace replicated 3 times, an API process, and the error-counter flow as
a group of two Bytewax processes (`ops/dataflow start error_counters
--processes 2`). Retrying clients post utterances throughout, each with
its own Idempotency-Key sent again on every retry until a 202, while:

1. one node is killed with SIGKILL, kept down, and restarted: no 500, and
   requests keep being acknowledged (quorum holds with 2 of 3);
2. two nodes are down at once: every answer is a 503 with Retry-After
   (quorum lost), and the clients' retries succeed by themselves once the
   nodes are back;
3. one process of the flow's group is killed: the supervisor restarts the
   whole group, which resumes from its recovery folder.

Afterwards every acknowledged utterance is read back at LOCAL_QUORUM (none
lost) and, once the flow has caught up, the served counts equal the recount
(tests/oracle.py). The served tables hold absolute values, so one equality
at the end covers every fault before it.

CI runs the short drill (7 to 10 minutes with the cluster's start; phases
of 15-30 s); ops/bench's `cluster` section runs the full one
(UTTERSTREAM_CLUSTER_DRILL=full, about 10 minutes: a node down 60 s, 30 s
of load before and after each fault, and first the same clients for 30 s
on the single shared node, for comparison). The figures of a run go to
UTTERSTREAM_CLUSTER_FIGURES (default .local/log/cluster-drill.json).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import pytest
import structlog

from cql.migrate import migrate
from cql.session import Db
from cql.utterances import UTTERANCES
from runtime.settings import CassandraSettings, Settings
from tests import oracle
from tests.conftest import ROOT, Tenant, new_tenant, settings_env
from tests.dataflow_helpers import (
    PAIRS,
    PatientApiProcess,
    create_learners,
    now_utc,
    served_error_counts,
    served_error_totals,
    utterance,
)

pytestmark = pytest.mark.slow
log = structlog.get_logger(__name__)

LOCAL = ROOT / ".local" / "cluster-test"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
KEYSPACE = "utterstream_cluster"
FULL = os.environ.get("UTTERSTREAM_CLUSTER_DRILL") == "full"
STEADY_S = 30 if FULL else 15  # load before and after each fault
NODE_DOWN_S = 60 if FULL else 30
QUORUM_LOST_S = 30 if FULL else 15
CLIENTS = 4
# Long enough for the API to answer when a coordinator waits on replicas
# that died a moment ago (write, then SERIAL read timeouts) instead of
# being cut off by the client.
CLIENT_TIMEOUT_S = 20.0
RECOVERY_DEADLINE_S = 60
# pytest-timeout counts the cluster's start (the module fixture) too. The
# full drill spends about 8 minutes in its phases, more when a restarted
# node takes 2 minutes to rejoin, after 2 to 3 minutes of cluster start-up:
# at 600 s, pytest-timeout stopped it as it read back the acknowledged
# utterances (ops/bench, 2026-12-01). The short one passed 600 s in CI the
# same day; here it took 8 to 10 minutes (restarted nodes serving after 74
# to 157 s).
DRILL_TIMEOUT_S = 1800 if FULL else 1200
FIGURES = Path(
    os.environ.get("UTTERSTREAM_CLUSTER_FIGURES", ROOT / ".local/log/cluster-drill.json")
)


class Cluster:
    """ops/cluster with its state under LOCAL, nodes numbered 1-3 (127.0.0.2-4)."""

    env = {**os.environ, "UTTERSTREAM_LOCAL": str(LOCAL)}
    start_s: float | None = None  # how long `start` took, for the figures

    def ops(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            [str(ROOT / "ops" / "cluster"), *args],
            env=self.env,
            check=check,
            timeout=600,
            stdout=subprocess.DEVNULL,
        )

    def restart(self, *nodes: int) -> float:
        """Start the nodes again, side by side (their tokens are settled);
        seconds until all serve CQL."""
        started = time.monotonic()
        with ThreadPoolExecutor(len(nodes)) as pool:
            for done in [pool.submit(self.ops, "restart", str(n)) for n in nodes]:
                done.result()
        return time.monotonic() - started


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        began = time.monotonic()
        c.ops("start", "--nodes", "3", "--first", "2", "--heap", "640M")
        c.start_s = round(time.monotonic() - began, 1)
        yield c
    finally:
        c.ops("stop", check=False)  # SIGTERM, then SIGKILL: never a node left behind


@pytest.fixture(scope="module")
def drill_settings(cluster: Cluster, migrated: Settings) -> Settings:
    cassandra = CassandraSettings(
        hosts=HOSTS, keyspace=KEYSPACE, replication="NetworkTopologyStrategy:datacenter1=3"
    )
    settings = msgspec.structs.replace(migrated, cassandra=cassandra)
    migrate(settings.cassandra)
    return settings


@pytest.fixture(scope="module")
def drill_db(drill_settings: Settings) -> Iterator[Db]:
    db = Db.open(drill_settings.cassandra)
    yield db
    db.close()


def child_env(settings: Settings) -> dict[str, str]:
    return {
        **settings_env(settings),
        "CASSANDRA_HOSTS": ",".join(HOSTS),
        "UTTERSTREAM_CASSANDRA_REPLICATION": settings.cassandra.replication,
    }


class FlowGroup:
    """`ops/dataflow start error_counters --processes 2` with its state under LOCAL."""

    def __init__(self, settings: Settings) -> None:
        shutil.rmtree(LOCAL / "recovery" / "error_counters", ignore_errors=True)
        self.env = {
            **child_env(settings),
            "UTTERSTREAM_LOCAL": str(LOCAL),
            "UTTERSTREAM_DATAFLOW_START_AT": now_utc().isoformat(),
            "UTTERSTREAM_DATAFLOW_POLL_INTERVAL_S": "0.2",
        }
        self._ops("start", "error_counters", "--processes", "2")

    def _ops(self, *args: str) -> None:
        subprocess.run(
            [str(ROOT / "ops" / "dataflow"), *args], env=self.env, check=True, timeout=60
        )

    def members(self) -> list[int]:
        """The pids of the group's Bytewax processes now running."""
        loop = int((LOCAL / "run" / "dataflow-error_counters.pid").read_text())
        return [pid for runner in _children(loop) for pid in _children(runner) if _is_bytewax(pid)]

    def stop(self) -> None:
        self._ops("stop", "error_counters")


def _is_bytewax(pid: int) -> bool:
    try:
        return b"bytewax.run" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return False


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


# ---- retrying clients, every attempt recorded


@dataclass
class Attempt:
    sent: float
    status: int | str  # an HTTP status, or the transport error's name
    seconds: float
    retry_after: str | None = None


@dataclass
class Posters:
    """CLIENTS clients, each posting one utterance at a time and retrying it
    with the same Idempotency-Key and body until a 202, until stopped."""

    url: str
    tenant: Tenant
    learners: list[tuple[str, str]]
    attempts: list[Attempt] = field(default_factory=list)
    acknowledged: dict[str, float] = field(default_factory=dict)  # utterance_id -> when
    _stop: threading.Event = field(default_factory=threading.Event)
    _abort: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)
        ]
        for t in self._threads:
            t.start()

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        # A connection per request: see tests/system/test_outages.py.
        with httpx.Client(
            base_url=self.url,
            timeout=CLIENT_TIMEOUT_S,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as http:
            while not self._stop.is_set():
                errors = rng.choices(PAIRS, k=rng.randint(1, 3))
                body = utterance(rng.choice(self.learners), now_utc(), errors, 1)
                self._until_acknowledged(http, f"drill-{uuid.uuid4()}", body)

    def _until_acknowledged(self, http: httpx.Client, key: str, body: dict) -> None:
        headers = self.tenant.headers | {"Idempotency-Key": key}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not self._abort.is_set():
            sent = time.monotonic()
            try:
                r = http.post("/v1/utterances", json=body, headers=headers)
                status, retry_after = r.status_code, r.headers.get("retry-after")
            except httpx.HTTPError as exc:
                status, retry_after = type(exc).__name__, None
            self.attempts.append(Attempt(sent, status, time.monotonic() - sent, retry_after))
            if status == 202:
                self.acknowledged[body["utterance_id"]] = time.monotonic()
                return
            time.sleep(min(float(retry_after or 1), 2.0))
        if not self._abort.is_set():
            raise AssertionError(f"{key} never acknowledged")

    def first_ack_after(self, moment: float) -> float | None:
        times = [t for t in list(self.acknowledged.values()) if t > moment]
        return min(times) if times else None

    def stop(self) -> None:
        """Stop starting new utterances; the ones under way are retried to a 202."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=360)

    def abort(self) -> None:
        """Stop at once, retries too (a failed or interrupted run)."""
        self._abort.set()
        self.stop()


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)], 3)


def phase_figures(posters: Posters, start: float, end: float) -> dict:
    attempts = [a for a in list(posters.attempts) if start <= a.sent < end]
    acked = [t for t in list(posters.acknowledged.values()) if start <= t < end]
    return {
        "seconds": round(end - start, 1),
        "acknowledged_per_s": round(len(acked) / max(end - start, 1e-9), 1),
        "p99_s": p99([a.seconds for a in attempts]),
        "statuses": dict(Counter(str(a.status) for a in attempts)),
    }


def wait_for_ack(posters: Posters, after: float) -> float:
    deadline = time.monotonic() + RECOVERY_DEADLINE_S
    while (first := posters.first_ack_after(after)) is None:
        assert time.monotonic() < deadline, "no utterance acknowledged after the nodes returned"
        time.sleep(0.2)
    return first


def unreadable(db: Db, tenant: str, utterance_ids: list[str]) -> list[str]:
    """The ids not found at LOCAL_QUORUM (the session's level)."""
    statement = db.prepare(UTTERANCES.select(), idempotent=True)
    # One at a time: sent all at once (1,626 reads), some timed out on the
    # driver while three nodes shared two cores.
    return [u for u in utterance_ids if db.session.execute(statement, (tenant, u)).one() is None]


def one_node_baseline(settings: Settings, db: Db) -> dict:
    """The same clients for STEADY_S against the single node on 127.0.0.1
    (replication 1), on the same machine at the same time: what running 3
    nodes costs here."""
    tenant = new_tenant(db)
    api = PatientApiProcess(settings, workers=2)
    try:
        with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=30) as http:
            posters = Posters(api.url, tenant, create_learners(http, 8))
        start = time.monotonic()
        time.sleep(STEADY_S)
        posters.stop()
        return phase_figures(posters, start, time.monotonic())
    finally:
        api.stop()


@pytest.mark.timeout(DRILL_TIMEOUT_S)
def test_losing_nodes_and_a_flow_process_under_load_loses_nothing(
    cluster: Cluster, drill_settings: Settings, drill_db: Db, migrated: Settings, db: Db
) -> None:
    started = time.monotonic()
    figures: dict = {"mode": "full" if FULL else "short", "cluster_start_s": cluster.start_s}
    if FULL:
        figures["one_node_baseline"] = one_node_baseline(migrated, db)
    tenant = new_tenant(drill_db)
    api = PatientApiProcess(drill_settings, workers=2, extra_env=child_env(drill_settings))
    flows = FlowGroup(drill_settings)
    posters: Posters | None = None
    marks: dict[str, float] = {}
    try:
        with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=30) as http:
            learners = create_learners(http, 8)
        posters = Posters(api.url, tenant, learners)
        marks["start"] = time.monotonic()
        time.sleep(STEADY_S)

        # 1. One node of three killed, kept down, restarted.
        marks["node_killed"] = time.monotonic()
        cluster.ops("kill", "1")
        time.sleep(NODE_DOWN_S)
        marks["node_restarting"] = time.monotonic()
        figures["node_restart_s"] = round(cluster.restart(1), 1)
        marks["node_back"] = time.monotonic()
        time.sleep(STEADY_S)

        # 2. Two nodes down at once: quorum lost.
        marks["quorum_lost"] = time.monotonic()
        cluster.ops("kill", "2")
        cluster.ops("kill", "3")
        # Each kill waits for its JVM to exit, a second or two: a request sent
        # before the second is gone may still be acknowledged, or meet the
        # claim of an attempt that failed on the first (409 until its lease ends).
        marks["both_nodes_gone"] = time.monotonic()
        time.sleep(QUORUM_LOST_S)
        marks["quorum_restarting"] = time.monotonic()
        figures["two_nodes_restart_s"] = round(cluster.restart(2, 3), 1)
        marks["quorum_back"] = time.monotonic()
        figures["first_ack_after_quorum_back_s"] = round(
            wait_for_ack(posters, marks["quorum_back"]) - marks["quorum_back"], 1
        )
        time.sleep(STEADY_S)

        # 3. One process of the flow's two killed: the group restarts.
        before = flows.members()
        assert len(before) == 2, before
        marks["flow_killed"] = time.monotonic()
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while len(after := flows.members()) != 2 or set(after) & set(before):
            assert time.monotonic() < deadline, f"the group was not restarted: {after}"
            time.sleep(0.5)
        figures["flow_group_restart_s"] = round(time.monotonic() - marks["flow_killed"], 1)
        time.sleep(STEADY_S)
        posters.stop()
        marks["end"] = time.monotonic()

        phases = {
            "before": ("start", "node_killed"),
            "one_node_down": ("node_killed", "node_restarting"),
            "node_restarting": ("node_restarting", "node_back"),
            "after_node_back": ("node_back", "quorum_lost"),
            "two_nodes_down": ("quorum_lost", "quorum_restarting"),
            "two_nodes_restarting": ("quorum_restarting", "quorum_back"),
            "after_quorum_back": ("quorum_back", "flow_killed"),
            "flow_group_restart": ("flow_killed", "end"),
        }
        figures["phases"] = {
            name: phase_figures(posters, marks[a], marks[b]) for name, (a, b) in phases.items()
        }
        statuses = Counter(str(a.status) for a in posters.attempts)
        figures["statuses"] = dict(statuses)
        figures["acknowledged"] = len(posters.acknowledged)

        # Never a 500, never a hang: 202, 409 (a retry of a key in flight) or 503.
        assert set(statuses) <= {"202", "409", "503"}, statuses
        for a in posters.attempts:
            if a.status in (409, 503):
                assert a.retry_after is not None and float(a.retry_after) > 0
        # With one node down, quorum holds: requests are still acknowledged.
        assert figures["phases"]["one_node_down"]["acknowledged_per_s"] > 0
        # With two down, nothing is: every answer to a request sent once the
        # second node was gone is a 503.
        lost_quorum = {
            a.status
            for a in posters.attempts
            if marks["both_nodes_gone"] + 2 <= a.sent < marks["quorum_restarting"]
        }
        assert lost_quorum == {503}, lost_quorum

        # Every acknowledged utterance is there, at LOCAL_QUORUM.
        missing = unreadable(drill_db, tenant.name, list(posters.acknowledged))
        figures["lost"] = len(missing)
        assert not missing, f"{len(missing)} acknowledged utterances lost"

        # Once the flow has caught up, the served counts equal the recount.
        utterances = oracle.load_utterances(drill_db, tenant.name, posters.acknowledged)
        expected = (
            oracle.error_counts(utterances, drill_settings.dataflow.late_after_s),
            oracle.error_totals(utterances),
        )
        caught_up = time.monotonic()
        deadline = caught_up + 180
        while (
            got := (
                served_error_counts(
                    drill_db, tenant.name, utterances, drill_settings.dataflow.late_after_s
                ),
                served_error_totals(drill_db, tenant.name, utterances),
            )
        ) != expected and time.monotonic() < deadline:
            time.sleep(3)
        figures["flow_caught_up_s"] = round(time.monotonic() - caught_up, 1)
        assert got == expected
    finally:
        if posters is not None:
            posters.abort()
        flows.stop()
        api.stop()
        # Where the time went after the cluster's start, also when
        # pytest-timeout stops the drill.
        figures["marks_s"] = {k: round(v - started, 1) for k, v in marks.items()}
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.write_text(json.dumps(figures, indent=2))
        log.info("cluster.drill", **figures)
