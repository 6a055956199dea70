"""GET /v1/live as Server-Sent Events.

- an event: `id:` its stream id (the cursor), `event:` its type, `data:`
  its JSON;
- a heartbeat: a comment every `live.heartbeat_s`, with an `id:` line when
  entries the filters left out moved the cursor on (EventSource then
  resumes after them without dispatching anything); a connection without
  Last-Event-ID gets one at once, with the position it starts from, so it
  resumes from there even if no event came before it dropped;
- the end: `event: closed` with the reason (`replaced`: a newer connection
  with this client_id took the slot, do not reconnect with it; `slow`: it
  read so slowly that the stream dropped events it had not read yet,
  reconnect with Last-Event-ID and get a reset).

Each write to the client is bounded by `live.send_timeout_s`: a client
that stops reading (its TCP window full) is cut off rather than holding
its events in memory. The session ends with the response, whichever way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import structlog
from litestar import Request
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.response.base import ASGIResponse
from litestar.types import Message, Receive, Scope, Send

from api.live.feed import Closed, Heartbeat, Item
from live.bus import Entry

log = structlog.get_logger("api.live")

REASONS = {
    "replaced": "A newer connection with this client_id replaced this one; do not reconnect "
    "with the same client_id from here.",
    "slow": "This connection fell further behind than the events kept; reconnect with "
    "Last-Event-ID to carry on (you get a reset).",
}


def closing(reason: str) -> bytes:
    return msgspec.json.encode({"reason": reason, "detail": REASONS.get(reason, reason)})


async def messages(items: AsyncIterator[Item]) -> AsyncIterator[ServerSentEventMessage]:
    yield ServerSentEventMessage(comment="connected", data=None)
    sent: str | None = None
    async for item in items:
        if isinstance(item, Entry):
            sent = item.id
            yield ServerSentEventMessage(data=item.data.decode(), event=item.type, id=item.id)
        elif isinstance(item, Heartbeat):
            moved = item.cursor if item.cursor != sent else None
            sent = item.cursor
            yield ServerSentEventMessage(comment="heartbeat", data=None, id=moved)
        elif isinstance(item, Closed):
            yield ServerSentEventMessage(data=closing(item.reason).decode(), event="closed")


class LiveStream(ServerSentEvent):
    """An SSE response whose writes are bounded and whose end runs `on_end`."""

    def __init__(
        self,
        content: AsyncIterator[ServerSentEventMessage],
        *,
        send_timeout_s: float,
        on_end: Callable[[], Awaitable[None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, headers=headers)
        self.send_timeout_s = send_timeout_s
        self.on_end = on_end

    def to_asgi_response(self, app: Any, request: Request, **kwargs: Any) -> ASGIResponse:
        inner = super().to_asgi_response(app, request, **kwargs)
        return _Bounded(inner, self.send_timeout_s, self.on_end)


class _Stalled(Exception):
    pass


class _Bounded(ASGIResponse):
    def __init__(
        self, inner: ASGIResponse, timeout_s: float, on_end: Callable[[], Awaitable[None]]
    ) -> None:
        self._inner = inner
        self._timeout_s = timeout_s
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded(message: Message) -> None:
            try:
                async with asyncio.timeout(self._timeout_s):  # no task per message
                    await send(message)
            except TimeoutError:
                raise _Stalled from None

        try:
            await self._inner(scope, receive, bounded)
        except* _Stalled:  # raised in Litestar's task group, so in a group
            log.info("live_client_stalled", path=scope["path"], after_s=self._timeout_s)
        finally:
            await self._on_end()
