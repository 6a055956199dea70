"""A CAS write timeout is an unknown outcome: the LWT may or may not have
applied. A single node will not time out on demand, so the fault is injected
where the network would lose it — the driver's answer — while every statement
really runs against Cassandra: the store must settle the outcome with a SERIAL
read of the real row, never by sending the insert again."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cassandra import WriteTimeout, WriteType

import api.writes.store
from api.edge.problems import ServiceUnavailable
from api.writes.store import Store
from cql.clock import utc_now
from cql.learners import UserRow
from cql.session import Db

real_execute = api.writes.store.execute


def lose_answers_of(statement: Any, applied: bool, sent: list[Any]) -> Callable[..., Any]:
    """An execute() that, for `statement`, raises the CAS WriteTimeout a lost
    answer gives — after the insert ran when `applied`, instead of it if not."""

    async def execute(session: Any, query: Any, params: Any = None) -> Any:
        if query is not statement:
            return await real_execute(session, query, params)
        sent.append(params)
        if applied:
            await real_execute(session, query, params)
        raise WriteTimeout("injected: the coordinator's answer was lost", write_type=WriteType.CAS)

    return execute


def learner(name: str) -> UserRow:
    return UserRow(f"t-{uuid.uuid4().hex[:12]}", "u-1", f"{name}@example.org", name, utc_now())


@pytest.mark.parametrize("applied", [True, False])
async def test_a_lost_lwt_answer_is_settled_by_a_serial_read(
    db: Db, monkeypatch: pytest.MonkeyPatch, applied: bool
) -> None:
    store = Store(db, 16)
    sent: list[Any] = []
    monkeypatch.setattr(
        api.writes.store, "execute", lose_answers_of(store._insert_user, applied, sent)
    )
    row = learner("Ada")
    if applied:
        assert await store.create_user(row) is None  # ours: created
    else:
        with pytest.raises(ServiceUnavailable):  # nothing there: 503, the client retries
            await store.create_user(row)
    assert len(sent) == 1  # never re-sent
    monkeypatch.setattr(api.writes.store, "execute", real_execute)
    assert (await Store(db, 16).user(row.tenant, row.user_id) is not None) == applied


async def test_a_lost_answer_over_someone_elses_row_returns_theirs(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(db, 16)
    theirs = learner("Grace")
    assert await store.create_user(theirs) is None
    ours = UserRow(theirs.tenant, theirs.user_id, "ada@example.org", "Ada", utc_now())
    sent: list[Any] = []
    monkeypatch.setattr(
        api.writes.store, "execute", lose_answers_of(store._insert_user, True, sent)
    )
    assert await store.create_user(ours) == theirs
    assert len(sent) == 1
