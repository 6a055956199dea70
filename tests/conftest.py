"""Fixtures shared by every test: a real Cassandra and a real Redis (started
by ops/test before pytest runs), a keyspace of the tests' own, a fresh
tenant with an API key per test, and the API app or real API processes.

Tests isolate themselves by tenant (every partition key carries it), so the
keyspace is never truncated between tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from api.app import create_app, server_command
from api.commands.keys import create as create_key
from cql.migrate import migrate
from cql.session import Db
from runtime.processes import free_port, launch, stop
from runtime.settings import CassandraSettings, FeedSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
TEST_KEYSPACE = os.environ.get("UTTERSTREAM_TEST_KEYSPACE", "utterstream_test")


def _test_settings() -> Settings:
    base = Settings.from_env()
    return Settings(
        cassandra=CassandraSettings(
            hosts=base.cassandra.hosts, port=base.cassandra.port, keyspace=TEST_KEYSPACE
        ),
        redis=base.redis,
        feed=FeedSettings(shards=4, bucket_s=60, reader_lag_s=2.0),
        api=base.api,
        llm=base.llm,
        dataflow=base.dataflow,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process (API server, dataflow)
    use the same keyspace and feed layout as the tests."""
    return {
        **os.environ,
        "UTTERSTREAM_CASSANDRA_KEYSPACE": settings.cassandra.keyspace,
        "UTTERSTREAM_FEED_SHARDS": str(settings.feed.shards),
        "UTTERSTREAM_FEED_BUCKET_S": str(settings.feed.bucket_s),
        "UTTERSTREAM_FEED_READER_LAG_S": str(settings.feed.reader_lag_s),
    }


@pytest.fixture(scope="session")
def settings() -> Settings:
    return _test_settings()


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Settings:
    try:
        migrate(settings.cassandra)
    except Exception as exc:  # pragma: no cover - environment problem, said plainly
        pytest.exit(
            f"Cassandra is not reachable ({exc!r}); run the tests with ops/test", returncode=2
        )
    return settings


@pytest.fixture(scope="session")
def db(migrated: Settings) -> Iterator[Db]:
    handle = Db.open(migrated.cassandra)
    yield handle
    handle.close()


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis.url)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover
        pytest.exit(f"Redis is not reachable ({exc!r}); run the tests with ops/test", returncode=2)
    return client


class Tenant:
    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}


def new_tenant(db: Db, rate: float = 1e6, burst: int = 1_000_000) -> Tenant:
    name = f"t-{uuid.uuid4().hex[:12]}"
    _key_id, key = create_key(db, name, rate, burst)
    return Tenant(name, key)


@pytest.fixture
def tenant(db: Db) -> Tenant:
    """A fresh tenant whose rate limit never gets in a test's way."""
    return new_tenant(db)


@pytest.fixture
async def client(migrated: Settings, redis_client: redis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in this process, through its real lifespan."""
    from litestar.testing import AsyncTestClient

    async with AsyncTestClient(app=create_app(migrated)) as test_client:
        yield test_client


class ApiProcess:
    """A real API server (granian) in its own OS process, stopped again if it
    is not ready within `ready_deadline_s` (None: not waited for at all)."""

    ready_deadline_s: float | None = 30.0

    def __init__(
        self, settings: Settings, workers: int = 1, extra_env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = ROOT / ".local" / "log" / f"test-api-{self.port}.log"
        self.proc = launch(
            server_command(self.port, workers),
            self.log_path,
            {**settings_env(settings), **(extra_env or {})},
            ready=None if self.ready_deadline_s is None else self.answers_ready,
            deadline_s=self.ready_deadline_s or 0,
        )

    def answers_ready(self, _proc: object = None) -> bool:
        try:
            return httpx.get(self.url + "/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """kill -9 the server and its workers: no graceful anything."""
        stop(self.proc, grace_s=0)

    def stop(self) -> None:
        stop(self.proc)


@pytest.fixture
def api_processes(migrated: Settings) -> Iterator[list[ApiProcess]]:
    """Two API servers, each its own OS process, on one Cassandra and Redis."""
    procs = [ApiProcess(migrated), ApiProcess(migrated)]
    yield procs
    for p in procs:
        p.stop()
