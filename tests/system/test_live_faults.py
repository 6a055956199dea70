"""Live connections under faults, for real: a worker killed with -9 while it
holds connection slots, and a client that stops reading."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
import redis

from api.server.processes import children_of
from live.bus import stream_key
from runtime.settings import Settings
from tests.conftest import ApiProcess
from tests.live_helpers import LIVE_ENV, live_tenant, sse

LEASE_S = float(LIVE_ENV["UTTERSTREAM_LIVE_LEASE_S"])
RENEW_S = float(LIVE_ENV["UTTERSTREAM_LIVE_RENEW_S"])


@pytest.fixture
def api(migrated: Settings) -> Iterator[ApiProcess]:
    proc = ApiProcess(migrated, workers=1, extra_env=LIVE_ENV)
    yield proc
    proc.stop()


def held_slots(client: redis.Redis, tenant: str) -> int:
    return client.zcount(f"live:{{{tenant}}}:slots", int(time.time() * 1000), "+inf")


def test_a_killed_worker_frees_its_slots_within_the_lease(
    api: ApiProcess, db, redis_client: redis.Redis
) -> None:
    tenant = live_tenant(db, live_connections=3)
    with httpx.Client(base_url=api.url, timeout=10) as http, ExitStack() as streams:
        readers = [streams.enter_context(sse(http, tenant.headers)) for _ in range(3)]
        assert http.get("/v1/live", headers=tenant.headers).status_code == 429
        [worker] = [pid for server in children_of(api.proc.pid) for pid in children_of(server)]
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        assert all(r.ended.wait(10) for r in readers)
        # Nothing released them: the leases still count until they lapse.
        assert held_slots(redis_client, tenant.name) == 3
        while True:
            try:
                with http.stream("GET", "/v1/live", headers=tenant.headers) as r:
                    if r.status_code == 200:
                        break
                    assert r.status_code == 429, r.read()
            except httpx.TransportError:
                pass  # granian is replacing the worker
            assert time.monotonic() - killed < LEASE_S + 2, "slots not freed within the lease"
            time.sleep(0.2)
        freed_after = time.monotonic() - killed
    # The last renewal was at most RENEW_S before the kill.
    assert LEASE_S - RENEW_S - 1 <= freed_after <= LEASE_S + 2


def test_a_stalled_client_is_disconnected_while_the_others_keep_receiving(
    api: ApiProcess, db, redis_client: redis.Redis
) -> None:
    tenant = live_tenant(db)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", api.port))
    request = f"GET /v1/live HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.key}\r\n\r\n"
    stalled.sendall(request.encode())
    pad = "x" * 50_000
    with httpx.Client(base_url=api.url, timeout=10) as http, sse(http, tenant.headers) as reader:
        deadline = time.monotonic() + 10
        while held_slots(redis_client, tenant.name) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # 15 MB of events, far past the stalled connection's buffers and queue.
        for n in range(300):
            data = json.dumps({"user_id": "u", "n": n, "pad": pad})
            redis_client.xadd(
                stream_key(tenant.name), {"type": "utterance", "user": "u", "data": data}
            )
        deadline = time.monotonic() + 30
        while len(reader.events) < 300 or held_slots(redis_client, tenant.name) > 1:
            assert time.monotonic() < deadline, (len(reader.events), "stalled still held")
            time.sleep(0.1)
        assert [e.data["n"] for e in reader.events] == list(range(300))
    # The stalled client, reading at last, finds its connection closed.
    stalled.settimeout(10)
    while stalled.recv(1 << 20):
        pass
    stalled.close()
