"""What several benchmark sections share: the bench keyspace and its
settings, a dedicated API server, a tenant key without a practical rate
limit, learners to write for, latency summaries, and what the machine is."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import platform
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from api.app import server_command
from api.commands.serve import children_of
from runtime.processes import free_port, launch, stop
from runtime.settings import CassandraSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOG_DIR = ROOT / ".local" / "log"
# The Prometheus samples of the bench's own processes: never the folder the
# API of ops/up serves /metrics from, so a run's counters stay out of it.
METRICS_DIR = ROOT / ".local" / "bench" / "metrics"
BENCH_KEYSPACE = os.environ.get("UTTERSTREAM_BENCH_KEYSPACE", "utterstream_bench")
TEXT = "Yesterday I goed to the market and buyed three apples for my grandmother."
ERRORS = [
    {"category": "grammar", "subcategory": "past tense"},
    {"category": "vocabulary", "subcategory": "word choice"},
]


def bench_settings() -> Settings:
    """The environment's settings, but in a keyspace of the bench's own, so a
    run never mixes with development or test data."""
    base = Settings.from_env()
    cassandra = CassandraSettings(
        **{
            **{f: getattr(base.cassandra, f) for f in base.cassandra.__struct_fields__},
            "keyspace": BENCH_KEYSPACE,
        }
    )
    return Settings(
        cassandra=cassandra,
        redis=base.redis,
        feed=base.feed,
        api=base.api,
        llm=base.llm,
        dataflow=base.dataflow,
    )


def own_metrics_dir(folder: Path = METRICS_DIR) -> Path:
    """Empty `folder` and make it the metrics folder of every process the
    bench starts from now on (they inherit this environment)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def summarize(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """p50/p99/p99.9/max/mean of a list of latencies (nearest-rank)."""
    if not latencies_ms:
        return {"p50": None, "p99": None, "p999": None, "max": None, "mean": None}
    ordered = sorted(latencies_ms)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)

    return {
        "p50": rank(0.50),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": round(ordered[-1], 3),
        "mean": round(sum(ordered) / len(ordered), 3),
    }


def run_id() -> str:
    return f"b{uuid.uuid4().hex[:10]}"


class ApiServer:
    """A granian server with `workers` worker processes, serving the bench
    keyspace on a free port; its log goes to .local/log/bench-api-PORT.log."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = LOG_DIR / f"bench-api-{self.port}.log"
        env = {
            **os.environ,
            "UTTERSTREAM_CASSANDRA_KEYSPACE": settings.cassandra.keyspace,
            "API_PORT": str(self.port),
        }
        self.proc = launch(
            server_command(self.port, workers), self.log_path, env, ready=self._ready, deadline_s=60
        )

    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        """/ready is answered by one worker; wait until all have forked too."""
        self.proc = proc  # launch() has not returned it yet
        try:
            answered = httpx.get(self.url + "/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
        return answered and len(self.worker_pids()) >= self.workers

    def worker_pids(self) -> list[int]:
        """granian's workers: the children of the server that the supervisor
        (`python -m api serve`, this process) runs as its child."""
        return [pid for server in children_of(self.proc.pid) for pid in children_of(server)]

    def stop(self) -> None:
        stop(self.proc, grace_s=15)


def create_key(settings: Settings, tenant: str) -> str:
    """An API key for `tenant` whose rate limit never gets in a benchmark's way
    (what `python -m api keys create --rate 1000000 --burst 1000000` does)."""
    from api.commands.keys import create
    from cql.session import Db

    db = Db.open(settings.cassandra)
    try:
        return create(db, tenant, 1_000_000.0, 1_000_000)[1]
    finally:
        db.close()


class ClientPools:
    """`connections` requests at once over small httpx pools, a free slot
    being a free connection of one of them, so a request never waits in a
    pool while another has a connection to spare. Small, because httpcore's
    pool does work per request for every connection it holds: one pool of 24
    spent a quarter of the freshness client's CPU choosing a connection."""

    PER_POOL = 3

    def __init__(self, url: str, key: str, connections: int, timeout: float) -> None:
        self._free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        self._stack = contextlib.AsyncExitStack()
        self._make = functools.partial(
            httpx.AsyncClient, base_url=url, headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )  # fmt: skip
        self._connections = connections

    async def __aenter__(self) -> ClientPools:
        for first in range(0, self._connections, self.PER_POOL):
            size = min(self.PER_POOL, self._connections - first)
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            client = await self._stack.enter_async_context(self._make(limits=limits))
            for _ in range(size):
                self._free.put_nowait(client)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def take(self) -> httpx.AsyncClient:
        """A free connection's client; give() it back once its request is done."""
        return await self._free.get()

    def give(self, client: httpx.AsyncClient) -> None:
        self._free.put_nowait(client)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[httpx.AsyncClient]:
        client = await self.take()
        try:
            yield client
        finally:
            self.give(client)


def make_learners(url: str, key: str, count: int, prefix: str) -> list[tuple[str, str]]:
    """`count` learners with one conversation each, through the API, 16 at a
    time; returns their (user_id, conversation_id) pairs."""
    pairs = [(f"{prefix}-u{i}", f"{prefix}-c{i}") for i in range(count)]

    async def create_all() -> None:
        slots = asyncio.Semaphore(16)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

            async def one(user_id: str, conversation_id: str) -> None:
                async with slots:
                    user = {"user_id": user_id, "email": f"{user_id}@bench.invalid", "name": "B"}
                    (await client.post("/v1/users", json=user)).raise_for_status()
                    conversation = {"user_id": user_id, "conversation_id": conversation_id}
                    (await client.post("/v1/conversations", json=conversation)).raise_for_status()

            await asyncio.gather(*(one(u, c) for u, c in pairs))

    asyncio.run(create_all())
    return pairs


def machine() -> dict[str, object]:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(settings: Settings) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in (
        "litestar",
        "msgspec",
        "granian",
        "cassandra-driver",
        "redis",
        "httpx",
        "locust",
        "bytewax",
    ):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    try:
        from cql.session import Db

        db = Db.open(settings.cassandra)
        try:
            found["cassandra"] = db.session.execute(
                "SELECT release_version FROM system.local"
            ).one()[0]
        finally:
            db.close()
    except Exception as exc:  # the report says so rather than failing the run
        found["cassandra"] = f"unknown ({type(exc).__name__})"
    try:
        import redis

        found["redis-server"] = redis.Redis.from_url(settings.redis.url).info()["redis_version"]
    except Exception as exc:
        found["redis-server"] = f"unknown ({type(exc).__name__})"
    wrk = (
        subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        if has_wrk()
        else None
    )
    found["wrk"] = (wrk.stdout or wrk.stderr).split("\n")[0].strip() if wrk else "not installed"
    return found


def has_wrk() -> bool:
    from shutil import which

    return which("wrk") is not None


def drive(
    session: Any,
    next_request: Callable[[int], tuple[Any, Any]],
    window: int,
    warmup_s: float,
    duration_s: float,
) -> dict[str, Any]:
    """Keep `window` driver requests in flight (async callbacks, no thread per
    request) for warmup_s + duration_s; `next_request(n)` gives the n-th
    (statement, params). Counts and latencies cover requests sent after the
    warm-up; ops/s is those sent in the measured time over its length."""
    lock = threading.Lock()
    finished = threading.Event()
    state: dict[str, Any] = {"n": 0, "in_flight": window, "ok": 0, "errors": 0, "kinds": {}}
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from, deadline = start + warmup_s, start + warmup_s + duration_s

    def send() -> None:
        with lock:
            if time.perf_counter() >= deadline:
                state["in_flight"] -= 1
                if state["in_flight"] == 0:
                    finished.set()
                return
            state["n"] += 1
            n = state["n"]
        statement, params = next_request(n)
        sent = time.perf_counter()
        future = session.execute_async(statement, params)
        future.add_callbacks(ok, failed, callback_args=(sent,), errback_args=(sent,))

    def ok(_rows: Any, sent: float) -> None:
        done = time.perf_counter()
        if sent >= measure_from:
            with lock:
                state["ok"] += 1
                latencies.append((done - sent) * 1000)
        send()

    def failed(exc: BaseException, sent: float) -> None:
        if sent >= measure_from:
            with lock:
                state["errors"] += 1
                kind = type(exc).__name__
                state["kinds"][kind] = state["kinds"].get(kind, 0) + 1
        send()

    for _ in range(window):
        send()
    finished.wait(warmup_s + duration_s + 60)
    return {
        "ok": state["ok"],
        "errors": state["errors"],
        "error_kinds": state["kinds"],
        "latencies": latencies,
    }


def spread(values: list[float], digits: int = 1) -> dict[str, float | None]:
    """Median and range of one figure measured over several rounds."""
    clean = [v for v in values if v is not None]
    if not clean:
        return {"median": None, "min": None, "max": None}
    return {
        "median": round(statistics.median(clean), digits),
        "min": round(min(clean), digits),
        "max": round(max(clean), digits),
    }
