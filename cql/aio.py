"""Awaiting cassandra-driver from asyncio without blocking the event loop.

The driver runs I/O on its own threads; `execute_async` returns a
ResponseFuture whose callbacks fire on those threads, so results are handed
to the loop with call_soon_threadsafe. Only the first page is awaited here:
iterating a ResultSet past `current_rows` would fetch synchronously.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cassandra.cluster import ResponseFuture, ResultSet, Session


async def execute(
    session: Session, statement: Any, params: Any = None, *, paging_state: bytes | None = None
) -> ResultSet:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[ResultSet] = loop.create_future()
    response: ResponseFuture = session.execute_async(statement, params, paging_state=paging_state)

    def settle(outcome: Any, failed: bool) -> None:
        if done.cancelled():
            return
        if failed:
            done.set_exception(outcome)
        else:
            # The future is complete, so result() returns without blocking.
            done.set_result(response.result())

    response.add_callbacks(
        lambda _rows: loop.call_soon_threadsafe(settle, None, False),
        lambda exc: loop.call_soon_threadsafe(settle, exc, True),
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
