"""GET /v1/ws: utterances in, answers and live events out.

A client sends `{"type": "utterance", "idempotency_key": "...", "utterance":
{...}}` (the body of POST /v1/utterances) and gets, in the order they are
ready:

- `{"type": "accepted", "idempotency_key", "replayed", "utterance_id",
  "status", "duplicate"}`: the POST's 202, under the POST's idempotency
  protocol and keyed as a POST to /v1/utterances (api/edge/keyed.py);
- `{"type": "problem", "idempotency_key", "problem": {RFC 9457}}`, also for
  a malformed frame (the problem's `field` names what is wrong); the
  connection stays open and nothing is stored;
- `{"type": "busy", "idempotency_key", "retry_after"}` when
  `live.ws_max_in_flight` messages are being processed across all API
  processes (api/live/budget.py): nothing waits in a queue.

It also gets `{"type": "event", "id", "event", "data"}` for the learners it
sent utterances for and those in `user_id`, and `{"type": "heartbeat",
"id"}`. It is closed with code 4001 (`replaced`: a newer connection with
its client_id) or 4002 (`slow`: it did not take a message within
`live.send_timeout_s`, or fell further behind than the events kept;
reconnect with `last_event_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis
import structlog
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from api.edge.auth import Principal
from api.edge.body import invalid
from api.edge.idempotency import HEADER
from api.edge.keyed import keyed_run
from api.edge.limits import charge
from api.edge.problems import (
    CASSANDRA_UNAVAILABLE,
    ApiError,
    BadRequest,
    ServiceUnavailable,
    problem_body,
)
from api.live.feed import Closed, Filter, Heartbeat, Item
from api.live.session import Session
from api.resources.utterances import accept_one
from api.services import Services
from api.shapes import UtteranceIn
from live.bus import Entry

log = structlog.get_logger("api.live")
UTTERANCES_PATH = "/v1/utterances"
CLOSE_CODES = {"replaced": 4001, "slow": 4002}
BUSY_RETRY_S = 1
UNAVAILABLE = "The utterance cannot be taken right now; send it again after retry_after seconds."


class UtteranceMessage(
    msgspec.Struct, tag="utterance", tag_field="type", forbid_unknown_fields=True
):
    utterance: UtteranceIn
    idempotency_key: str | None = None


_decoder = msgspec.json.Decoder(UtteranceMessage)
_encoder = msgspec.json.Encoder()


class _Stalled(Exception):
    pass


class Connection:
    def __init__(
        self,
        socket: WebSocket,
        services: Services,
        principal: Principal,
        session: Session,
        wanted: Filter,
    ) -> None:
        self._socket, self._services, self._principal = socket, services, principal
        self._session, self._wanted = session, wanted
        self._settings = services.settings.live
        self._sending = asyncio.Lock()
        self._working: set[asyncio.Task[None]] = set()

    async def serve(self, items: AsyncIterator[Item]) -> None:
        pump = asyncio.create_task(self._pump(items))
        listen = asyncio.create_task(self._listen())
        try:
            await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, listen, *self._working):
                task.cancel()
            await asyncio.gather(pump, listen, *self._working, return_exceptions=True)
        reason = self._session.subscriber.reason
        if reason is not None:
            with contextlib.suppress(Exception):  # the client may be gone already
                await self._socket.close(CLOSE_CODES.get(reason, 1011), reason)

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._sending:
            try:
                async with asyncio.timeout(self._settings.send_timeout_s):  # no task per message
                    await self._socket.send_text(_encoder.encode(message).decode())
            except TimeoutError:
                self._session.subscriber.close("slow")
                raise _Stalled from None

    async def _pump(self, items: AsyncIterator[Item]) -> None:
        with contextlib.suppress(_Stalled):
            async for item in items:
                if isinstance(item, Entry):
                    data = msgspec.Raw(item.data)
                    await self._send(
                        {"type": "event", "id": item.id, "event": item.type, "data": data}
                    )
                elif isinstance(item, Heartbeat):
                    await self._send({"type": "heartbeat", "id": item.cursor})
                elif isinstance(item, Closed):
                    return

    async def _listen(self) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while self._session.subscriber.reason is None:
                frame = await self._socket.receive_data("text")
                self._take(frame)

    def _take(self, frame: str) -> None:
        try:
            message = _decoder.decode(frame)
        except msgspec.ValidationError as exc:
            self._spawn(self._problem(None, invalid(str(exc))))
            return
        except msgspec.DecodeError as exc:
            refused = BadRequest(f"The frame is not valid JSON ({exc}); send one JSON object.")
            self._spawn(self._problem(None, refused))
            return
        if len(self._working) >= self._settings.ws_max_in_flight:
            self._spawn(self._busy(message.idempotency_key))
            return
        self._spawn(self._process(message))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(self._quietly(work))
        self._working.add(task)
        task.add_done_callback(self._working.discard)

    async def _quietly(self, work: Any) -> None:
        with contextlib.suppress(_Stalled, WebSocketDisconnect):
            await work

    async def _process(self, message: UtteranceMessage) -> None:
        key = message.idempotency_key
        try:
            token = await self._take_budget()
            if token is None:
                await self._busy(key)
                return
            try:
                await self._accept(message)
            finally:
                await self._give_back(token)
        except ApiError as exc:
            await self._problem(key, exc)
        except CASSANDRA_UNAVAILABLE as exc:
            log.warning("live_ws_cassandra_unavailable", error=type(exc).__name__)
            await self._problem(key, ServiceUnavailable(UNAVAILABLE, retry_after_s=BUSY_RETRY_S))

    async def _take_budget(self) -> str | None:
        """A token, None when busy, or "" when Redis cannot count and the
        rate limiter's failure policy lets messages through."""
        try:
            return await self._services.live.budget.take()
        except redis.RedisError:
            if self._services.settings.api.redis_failure_policy == "closed":
                raise ServiceUnavailable(UNAVAILABLE, retry_after_s=BUSY_RETRY_S) from None
            return ""

    async def _give_back(self, token: str) -> None:
        if token:
            with contextlib.suppress(redis.RedisError):  # its lease lapses anyway
                await self._services.live.budget.give_back(token)

    async def _accept(self, message: UtteranceMessage) -> None:
        services, principal, data = self._services, self._principal, message.utterance
        await charge(services, principal, 1)
        if self._wanted.users is not None:
            # Before the write, so the utterance's own event is let through.
            self._wanted.users.add(data.user_id)
        work = accept_one(services, principal.tenant, data)
        answer = await keyed_run(
            UTTERANCES_PATH, data, principal, services, message.idempotency_key, work
        )
        body = msgspec.json.decode(answer.content)
        if answer.status_code >= 400:
            await self._send_problem(message.idempotency_key, body, answer.headers)
            return
        replayed = answer.headers.get("Idempotent-Replayed") == "true"
        await self._send(
            {"type": "accepted", "idempotency_key": message.idempotency_key, "replayed": replayed}
            | body
        )

    async def _problem(self, key: str | None, exc: ApiError) -> None:
        _status, body, headers = problem_body(exc)
        await self._send_problem(key, body, headers)

    async def _send_problem(self, key: str | None, body: dict[str, Any], headers: Any) -> None:
        if body.get("field") == HEADER:  # here the key is a field of the message
            body = {**body, "field": "idempotency_key"}
        message: dict[str, Any] = {"type": "problem", "idempotency_key": key, "problem": body}
        if "Retry-After" in headers:
            message["retry_after"] = int(headers["Retry-After"])
        await self._send(message)

    async def _busy(self, key: str | None) -> None:
        await self._send({"type": "busy", "idempotency_key": key, "retry_after": BUSY_RETRY_S})
