"""The clients of the live benchmark (bench/live.py), all on one event loop:
SSE readers that drop and resume, WebSocket senders, a steady POSTer,
stalled connections, and the ledger of what was posted and what each
client saw."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosedOK, WebSocketException

from bench import common

SSE_CLIENTS, WS_CLIENTS = 100, 50
IN_FLIGHT = 64  # the REST poster's requests at once


class Ledger:
    """What was posted and what each client saw, in one place."""

    def __init__(self) -> None:
        self.acked: dict[str, float] = {}  # utterance_id -> 202 time
        self.sent: dict[str, float] = {}
        self.posted_by_user: dict[str, list[str]] = defaultdict(list)
        self.minute_posts: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.seen: dict[int, list[str]] = defaultdict(list)  # client -> utterance ids
        self.first_seen: dict[str, float] = {}
        # utterance id -> when the connection that first got its event opened
        self.first_seen_since: dict[str, float] = {}
        self.since: dict[int, float] = {}  # client -> when its connection opened
        self.errors_seen: dict[str, float] = {}
        self.reconnects = 0
        self.cursors: dict[int, str] = {}  # client -> the last id it got
        self.failures: dict[str, int] = defaultdict(int)
        self.opened: set[int] = set()  # SSE clients whose first connection is open
        self.all_opened = asyncio.Event()

    def posted(self, user: str, uid: str, minute: str, sent: float) -> None:
        self.sent[uid], self.acked[uid] = sent, time.monotonic()
        self.posted_by_user[user].append(uid)
        self.minute_posts[(user, minute)].append(uid)

    def unseen(self, client: int, user: str) -> set[str]:
        """The utterances acknowledged for `user` whose event `client` has not had."""
        return set(self.posted_by_user[user]) - set(self.seen[client])

    def connected(self, client: int) -> None:
        self.since[client] = time.monotonic()

    def disconnected(self, client: int) -> None:
        self.since.pop(client, None)

    def open(self, client: int) -> None:
        self.connected(client)
        self.opened.add(client)
        if len(self.opened) == SSE_CLIENTS:
            self.all_opened.set()

    def event(self, client: int, name: str, data: dict[str, Any]) -> None:
        now = time.monotonic()
        if name in ("reset", "closed"):
            self.failures[f"got_{name}"] += 1
        elif name == "utterance" and data.get("status") == "pending":
            uid = data["utterance_id"]
            self.seen[client].append(uid)
            if uid not in self.first_seen:
                self.first_seen[uid] = now
                self.first_seen_since[uid] = self.since.get(client, now)
        elif name == "errors":
            for w in data["windows"]:
                if w["window"] == "minute" and w["subcategory"] == "past tense":
                    minute = w["start"][:16]
                    for uid in self.minute_posts[(data["user_id"], minute)][: w["count"]]:
                        self.errors_seen.setdefault(uid, now)


def _body(user: str, conv: str) -> tuple[dict[str, Any], str]:
    now = datetime.now(UTC)
    body = {
        "conversation_id": conv, "user_id": user, "text": common.TEXT,
        "timestamp": now.isoformat(), "errors": common.ERRORS, "words_learned": 3,
    }  # fmt: skip
    return body, now.strftime("%Y-%m-%dT%H:%M")


async def sse_client(
    url: str, key: str, user: str, index: int, ledger: Ledger, over: asyncio.Event
) -> None:
    """Follows one learner; drops its connection every 5-20 s and resumes
    from the last id it got, as EventSource does (ledger.cursors)."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=30)) as client:
        while not over.is_set():
            headers = {"Authorization": f"Bearer {key}"}
            if cursor := ledger.cursors.get(index):
                headers["Last-Event-ID"] = cursor
            params = {"user_id": user, "types": "utterance,errors", "client_id": f"sse-{index}"}
            try:
                async with client.stream("GET", "/v1/live", headers=headers, params=params) as r:
                    if r.status_code != 200:
                        ledger.failures[f"sse_{r.status_code}"] += 1
                        await asyncio.sleep(float(r.headers.get("Retry-After", 1)))
                        continue
                    ledger.open(index)
                    drop_at = time.monotonic() + random.uniform(5, 20)
                    try:
                        await _read(r, index, ledger, over, drop_at)
                    finally:
                        ledger.disconnected(index)
            except httpx.HTTPError:
                ledger.failures["sse_dropped"] += 1
                await asyncio.sleep(0.2)
            ledger.reconnects += 1


async def _read(
    r: httpx.Response, index: int, ledger: Ledger, over: asyncio.Event, drop_at: float
) -> None:
    """Events into the ledger until the run is over or it is time to drop."""
    current: dict[str, str] = {}
    async for line in r.aiter_lines():
        if line == "":
            if "id" in current:
                ledger.cursors[index] = current["id"]
            if "data" in current:
                ledger.event(index, current["event"], json.loads(current["data"]))
            current = {}
            # Between events: a drop inside one would only make the event
            # itself come again on resume.
            if over.is_set() or time.monotonic() > drop_at:
                break
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value


async def ws_client(
    url: str, key: str, learner: tuple[str, str], index: int, ledger: Ledger, rate: float,
    over: asyncio.Event, sending: asyncio.Event,
) -> None:  # fmt: skip
    """One WebSocket client on the event loop: an utterance every 1/rate s
    on average, every message read as it comes; after a drop it resumes
    from the last id it got."""
    base = url.replace("http://", "ws://") + f"/v1/ws?client_id=ws-{index}&user_id={learner[0]}"
    pending: dict[str, tuple[str, float, str]] = {}
    while not over.is_set():
        cursor = ledger.cursors.get(SSE_CLIENTS + index)
        ws_url = base + (f"&last_event_id={cursor}" if cursor else "")
        try:
            # As a conversation app's client: no compression, no proxy.
            ws = await ws_connect(
                ws_url, additional_headers={"Authorization": f"Bearer {key}"},
                open_timeout=10, compression=None, proxy=None, ping_interval=None,
            )  # fmt: skip
        except (OSError, TimeoutError, WebSocketException):  # refused, or a worker replaced
            ledger.failures["ws_connect"] += 1
            await asyncio.sleep(0.5)
            continue
        ledger.connected(SSE_CLIENTS + index)
        try:
            await _ws_session(ws, learner, index, ledger, rate, (over, sending), pending)
        except (OSError, WebSocketException):  # the worker was killed: reconnect
            ledger.failures["ws_dropped"] += 1
        finally:
            ledger.disconnected(SSE_CLIENTS + index)
            await ws.close()


async def _ws_session(
    ws: ClientConnection, learner: tuple[str, str], index: int, ledger: Ledger, rate: float,
    flags: tuple[asyncio.Event, asyncio.Event], pending: dict[str, tuple[str, float, str]],
) -> None:  # fmt: skip
    """Reads until `over`; sends while `sending` is set. A closed
    connection raises (from the reader or the sender)."""
    over, sending = flags
    tasks = [
        asyncio.create_task(_ws_read(ws, index, ledger, pending)),
        asyncio.create_task(_ws_send(ws, learner, rate, sending, pending)),
        asyncio.create_task(over.wait()),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    for task in done:
        task.result()


async def _ws_read(
    ws: ClientConnection, index: int, ledger: Ledger, pending: dict[str, tuple[str, float, str]]
) -> None:
    async for raw in ws:
        _ws_take(json.loads(raw), index, ledger, pending)
    raise ConnectionClosedOK(None, None)  # closed by the server


async def _ws_send(
    ws: ClientConnection, learner: tuple[str, str], rate: float, sending: asyncio.Event,
    pending: dict[str, tuple[str, float, str]],
) -> None:  # fmt: skip
    user, conv = learner
    next_send = time.monotonic()
    while True:
        next_send += random.expovariate(rate)
        await asyncio.sleep(max(0.0, next_send - time.monotonic()))
        if sending.is_set():
            body, minute = _body(user, conv)
            key = f"k{random.getrandbits(64):x}"
            pending[key] = (user, time.monotonic(), minute)
            await ws.send(
                json.dumps({"type": "utterance", "idempotency_key": key, "utterance": body})
            )


def _ws_take(
    message: dict[str, Any], index: int, ledger: Ledger, pending: dict[str, tuple[str, float, str]]
) -> None:
    if message["type"] == "accepted" and message["idempotency_key"] in pending:
        user, sent, minute = pending.pop(message["idempotency_key"])
        ledger.posted(user, message["utterance_id"], minute, sent)
    elif message["type"] == "event":
        ledger.cursors[SSE_CLIENTS + index] = message["id"]
        ledger.event(SSE_CLIENTS + index, message["event"], message["data"])
    elif message["type"] == "heartbeat":
        ledger.cursors[SSE_CLIENTS + index] = message["id"]
    elif message["type"] in ("problem", "busy"):
        ledger.failures[f"ws_{message['type']}"] += 1


async def poster(
    url: str, key: str, learners: list[tuple[str, str]], rate: float, ledger: Ledger,
    over: asyncio.Event,
) -> None:  # fmt: skip
    async with common.ClientPools(url, key, IN_FLIGHT, timeout=10) as pools:

        async def one(client: httpx.AsyncClient, user: str, conv: str) -> None:
            body, minute = _body(user, conv)
            sent = time.monotonic()
            try:
                r = await client.post("/v1/utterances", json=body)
            except httpx.HTTPError:
                ledger.failures["post_error"] += 1
                return
            finally:
                pools.give(client)
            if r.status_code == 202:
                ledger.posted(user, r.json()["utterance_id"], minute, sent)
            else:
                ledger.failures[f"post_{r.status_code}"] += 1

        tasks: set[asyncio.Task[None]] = set()
        start, n = time.monotonic(), 0
        while not over.is_set():
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            # A machine that cannot carry the rate makes POSTs wait for a
            # slot (the offered rate is not kept) instead of piling up.
            client = await pools.take()
            task = asyncio.create_task(one(client, *random.choice(learners)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks, return_exceptions=True)


def stall(port: int, key: str, n: int) -> list[socket.socket]:
    """Connections that never read: their events pile up at the server."""
    stalled = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(
            f"GET /v1/live HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )
        stalled.append(s)
    return stalled
