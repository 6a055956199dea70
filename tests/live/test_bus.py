"""The event bus against a Redis of the test's own, killed for real:
publishing never raises, and the events lost while Redis was away are
announced by a `reset` in each affected tenant's stream once it is back;
and against the shared Redis, an attempt whose answer is lost is retried
without appending its events twice."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from live import bus
from live.bus import PUBLISH_FAILED, AsyncPublisher, Publisher, entry_of, stream_key
from live.events import RESET, utterance_event
from runtime.processes import free_port
from runtime.sections import RedisSettings
from runtime.settings import Settings


class OwnRedis:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--save", "", "--dir", str(self.tmp)]
        # DEBUG SLEEP makes a slow Redis.
        args += ["--enable-debug-command", "local"]
        self.proc = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def test_an_outage_loses_no_write_and_ends_in_a_reset(own_redis: OwnRedis) -> None:
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    publisher = Publisher(Settings(redis=RedisSettings(url=url, socket_timeout_s=0.2)))
    client = redis.Redis.from_url(url)
    first = utterance_event("t-a", "u1", "ana", "pending")
    publisher.publish([first])
    own_redis.kill()
    failed_before = PUBLISH_FAILED._value.get()
    publisher.publish([utterance_event("t-a", "u2", "ana", "pending")])  # must not raise
    assert PUBLISH_FAILED._value.get() == failed_before + 1
    own_redis.start()  # an empty Redis, as after a restart without persistence
    publisher.publish([utterance_event("t-b", "u3", "bea", "pending")])
    [gap] = [entry_of(*e) for e in client.xrange(stream_key("t-a"))]
    assert gap.type == RESET and msgspec.json.decode(gap.data)["reason"] == "gap"
    [kept] = [entry_of(*e) for e in client.xrange(stream_key("t-b"))]
    assert kept.type == "utterance"
    # Told once: the next publish adds no second reset.
    publisher.publish([utterance_event("t-b", "u4", "bea", "pending")])
    assert client.xlen(stream_key("t-a")) == 1


def test_a_reply_slower_than_the_socket_timeout_is_awaited(
    own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis answering after a second (busy: DEBUG SLEEP), as a loaded
    machine's late reads look: the attempt waits within the publish's
    budget instead of timing out at the socket timeout and retrying, each
    retry a reconnect."""
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    publisher = Publisher(Settings(redis=RedisSettings(url=url, socket_timeout_s=0.2)))
    publisher.publish([utterance_event("t-s", "u0", "ana", "pending")])  # connected
    retried: list[int] = []
    monkeypatch.setattr(bus, "_retrying", lambda attempt, exc: retried.append(attempt))
    busy = redis.Redis(port=own_redis.port)
    sleeper = threading.Thread(target=busy.execute_command, args=("DEBUG", "SLEEP", "1"))
    sleeper.start()
    time.sleep(0.1)
    publisher.publish([utterance_event("t-s", "u1", "ana", "pending")])
    sleeper.join()
    assert retried == []
    assert busy.xlen(stream_key("t-s")) == 2


def _failing(pipeline: Any, applied: bool, for_s: float = 0.0) -> Any:
    """`pipeline` (a client's method) whose first execute fails, and every
    one for `for_s` seconds: after Redis applied it (its answer lost to a
    timeout) or before sending it (a full connection pool)."""
    failed: list[bool] = []
    until = time.monotonic() + for_s

    def pipe(*args: Any, **kwargs: Any) -> Any:
        made = pipeline(*args, **kwargs)
        execute = made.execute

        async def execute_once() -> Any:
            if failed and time.monotonic() >= until:
                return await execute()
            failed.append(True)
            if applied:
                await execute()
                raise redis.TimeoutError("Timeout reading from socket")
            raise redis.exceptions.MaxConnectionsError("Too many connections")

        made.execute = execute_once
        return made

    return pipe


@pytest.mark.parametrize(
    ("applied", "for_s"),
    [(True, 0.0), (False, 0.0), (True, 2.5)],
    ids=["answer_lost", "never_sent", "a_stall_of_seconds"],
)
def test_a_failed_attempt_is_retried_and_appends_each_event_once(
    settings: Settings, redis_client: redis.Redis, applied: bool, for_s: float
) -> None:
    """A stall of seconds too (a worker restarting on a loaded machine
    starves the others' loops): it outlasts the 1.6 s the publish used to
    give up after, so its tenant's connections do not all get a reset."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    failed_before = PUBLISH_FAILED._value.get()

    async def publish() -> None:
        publisher = AsyncPublisher(settings)
        publisher._redis.pipeline = _failing(publisher._redis.pipeline, applied, for_s)
        await publisher.publish([utterance_event(tenant, "u1", "ana", "pending")])
        await publisher.publish([utterance_event(tenant, "u2", "ana", "pending")])
        await publisher.aclose()

    asyncio.run(publish())
    entries = [entry_of(*e) for e in redis_client.xrange(stream_key(tenant))]
    ids = [msgspec.json.decode(e.data)["utterance_id"] for e in entries]
    assert ids == ["u1", "u2"]  # no loss, no duplicate, no reset
    assert PUBLISH_FAILED._value.get() == failed_before
