"""Awaiting cassandra-driver from asyncio without blocking the event loop.

The driver runs I/O on its own threads; `execute_async` returns a
ResponseFuture whose callbacks fire on those threads, so results are handed
to the loop through an inbox (`_Inbox`) that wakes the loop once for every
result that arrives before it runs, not once per result: under load most
answers then cost no cross-thread wake-up of their own. Only the first page
is awaited here: iterating a ResultSet past `current_rows` would fetch
synchronously.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from typing import Any

from cassandra.cluster import ResponseFuture, ResultSet, Session

_Settled = tuple["asyncio.Future[ResultSet]", ResponseFuture, BaseException | None]


class _Inbox:
    """Results handed from the driver's threads to one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the inboxes are kept by loop, and a closed loop must go.
        self._loop = weakref.ref(loop)
        self._settled: collections.deque[_Settled] = collections.deque()
        self._woken = False

    def put(self, done: asyncio.Future[ResultSet], response: ResponseFuture, exc: Any) -> None:
        # Appended before the flag is read, and the drain clears the flag
        # before it reads the queue: no result is ever left unread.
        self._settled.append((done, response, exc))
        loop = self._loop()
        if not self._woken and loop is not None:
            self._woken = True
            loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._woken = False
        while self._settled:
            done, response, exc = self._settled.popleft()
            if done.cancelled():
                continue
            if exc is not None:
                done.set_exception(exc)
            else:
                # The future is complete, so result() returns without blocking.
                done.set_result(response.result())


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = weakref.WeakKeyDictionary()


async def execute(
    session: Session, statement: Any, params: Any = None, *, paging_state: bytes | None = None
) -> ResultSet:
    loop = asyncio.get_running_loop()
    inbox = _inboxes.get(loop) or _inboxes.setdefault(loop, _Inbox(loop))
    done: asyncio.Future[ResultSet] = loop.create_future()
    response: ResponseFuture = session.execute_async(statement, params, paging_state=paging_state)
    response.add_callbacks(
        lambda _rows: inbox.put(done, response, None),
        lambda exc: inbox.put(done, response, exc),
    )
    return await done


async def fetch_all(
    session: Session, statement: Any, params: Any = None, *, limit: int
) -> list[Any]:
    """All rows of a bounded query, page by page, each page awaited; refuses
    to read more than `limit` rows so no caller can stream a partition."""
    rows: list[Any] = []
    result = await execute(session, statement, params)
    while True:
        rows.extend(result.current_rows)
        if len(rows) > limit:
            raise ValueError(f"query returned more than {limit} rows")
        if not result.has_more_pages:
            return rows
        result = await execute(session, statement, params, paging_state=result.paging_state)
