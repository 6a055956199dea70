"""Clients of the live endpoints for the tests: an SSE reader over httpx
streaming, a WebSocket over websocket-client, and an API process whose
live settings are short enough to test leases and tickets in seconds."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import websocket

from api.commands.keys import create as create_key
from cql.session import Db
from tests.conftest import Tenant

# The API processes of the live tests: leases, tickets and heartbeats in
# seconds, a small queue, so the faults show within a test's time.
LIVE_ENV = {
    "UTTERSTREAM_LIVE_LEASE_S": "6",
    "UTTERSTREAM_LIVE_RENEW_S": "2",
    "UTTERSTREAM_LIVE_TICKET_TTL_S": "2",
    "UTTERSTREAM_LIVE_HEARTBEAT_S": "1",
    "UTTERSTREAM_LIVE_QUEUE_SIZE": "50",
    "UTTERSTREAM_LIVE_SEND_TIMEOUT_S": "2",
}


def live_tenant(db: Db, live_connections: int | None = None) -> Tenant:
    name = f"t-{uuid.uuid4().hex[:12]}"
    _key_id, key = create_key(db, name, 1e6, 1_000_000, None, live_connections)
    return Tenant(name, key)


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: Any


@dataclass
class SseReader:
    """Reads one SSE response in a thread, collecting its events."""

    response: httpx.Response
    events: list[SseEvent] = field(default_factory=list)
    heartbeats: int = 0
    last_id: str | None = None  # as EventSource keeps it: id-only messages count
    ended: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            current: dict[str, str] = {}
            for line in self.response.iter_lines():
                if line.startswith(":"):
                    self.heartbeats += "heartbeat" in line
                elif line == "":
                    self.last_id = current.get("id", self.last_id)
                    if "data" in current:
                        data = json.loads(current["data"])
                        self.events.append(SseEvent(current.get("id"), current.get("event"), data))
                    current = {}
                else:
                    name, _, value = line.partition(": ")
                    current[name] = value
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def of(self, kind: str) -> list[SseEvent]:
        return [e for e in self.events if e.event == kind]


@contextmanager
def sse(
    client: httpx.Client, headers: dict[str, str] | None = None, **params: Any
) -> Iterator[SseReader]:
    """An open GET /v1/live; fails unless it answers 200."""
    with client.stream("GET", "/v1/live", headers=headers or {}, params=params) as response:
        assert response.status_code == 200, response.read()
        reader = SseReader(response)
        thread = threading.Thread(target=reader.run, daemon=True)
        thread.start()
        try:
            yield reader
        finally:
            response.close()


def ws_url(base: str, **params: Any) -> str:
    query = str(httpx.QueryParams(params))
    return base.replace("http://", "ws://") + "/v1/ws?" + query


def ws_connect(
    base: str, headers: dict[str, str] | None = None, **params: Any
) -> websocket.WebSocket:
    return websocket.create_connection(
        ws_url(base, **params), header=dict(headers or {}), timeout=10
    )


def ws_messages(ws: websocket.WebSocket, count: int, kinds: set[str]) -> list[dict[str, Any]]:
    """The next `count` messages of the `kinds` given (heartbeats and others skipped)."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        found.append(ws_until(ws, "", kinds=kinds))
    return found


def ws_until(
    ws: websocket.WebSocket, kind: str, limit: int = 30, kinds: set[str] | None = None
) -> dict[str, Any]:
    """The next message of type `kind` (others are skipped)."""
    for _ in range(limit):
        message = json.loads(ws.recv())
        if message["type"] in (kinds or {kind}):
            return message
    raise AssertionError(f"no {kind} message in {limit}")
