"""A CAS write timeout is an unknown outcome: the LWT may or may not have
applied. A single node will not time out on demand, so the fault is injected
where the network would lose it — the driver's answer — while every statement
really runs against Cassandra: the store must settle the outcome with a SERIAL
read of the real row, never by sending the insert again.

The driver does send a statement again, on the next node, when the connection
it went out on fails before the answer: the second send of an Idempotency-Key
claim or take-over whose first applied answers "not applied" with our own
owner, which the store must count as applied (a first attempt was answered
409 "in flight" by its own claim, in the cluster drill, before this)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest
from cassandra import ConsistencyLevel, WriteTimeout, WriteType
from cassandra.connection import ConnectionShutdown
from cassandra.policies import RetryPolicy

import api.writes.store
from api.edge import idempotency
from api.edge.problems import ServiceUnavailable
from api.writes.store import Store
from cql.clock import utc_now
from cql.learners import UserRow
from cql.session import Db
from cql.utterances import IDEMPOTENCY_KEYS, IdempotencyRow

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


# ---- a statement sent again after its connection failed


def send_twice(statement: Any, sent: list[Any]) -> Callable[..., Any]:
    """An execute() that, for `statement`, runs it twice and answers with the
    second: what the driver does when the connection the first send went out
    on fails before its answer (a node killed mid-request)."""

    async def execute(session: Any, query: Any, params: Any = None) -> Any:
        if query is not statement:
            return await real_execute(session, query, params)
        sent.append(params)
        await real_execute(session, query, params)
        return await real_execute(session, query, params)

    return execute


def test_the_session_sends_an_lwt_again_when_its_connection_fails(db: Db) -> None:
    """The premise of the tests below: the policy of the session's requests
    sends a statement that is not idempotent, an LWT's, to the next node."""
    store = Store(db, 16)
    policy = db.session.cluster.profile_manager.default.retry_policy
    lwt = store._claim_key
    assert not lwt.is_idempotent
    decision, _ = policy.on_request_error(
        lwt, ConsistencyLevel.QUORUM, ConnectionShutdown("the node died"), 0
    )
    assert decision == RetryPolicy.RETRY_NEXT_HOST


async def test_a_claim_sent_twice_is_carried_out_not_refused_as_in_flight(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(db, 16)
    sent: list[Any] = []
    monkeypatch.setattr(api.writes.store, "execute", send_twice(store._claim_key, sent))
    calls: list[int] = []

    async def work() -> idempotency.Answer:
        calls.append(1)
        return 202, b"{}"

    tenant, key = f"t-{uuid.uuid4().hex[:12]}", f"k-{uuid.uuid4().hex[:8]}"
    answer = await idempotency.run(
        store, tenant=tenant, key=key, digest=b"d", in_flight_timeout_s=30, work=work
    )
    assert answer.status_code == 202 and calls == [1] and len(sent) == 1


async def test_a_take_over_sent_twice_is_won(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(db, 16)
    tenant, key, now = f"t-{uuid.uuid4().hex[:12]}", "k-1", utc_now()

    def claim(started: datetime, lease_until: datetime, holder: str) -> IdempotencyRow:
        return IdempotencyRow(
            tenant, key, b"d", uuid.uuid4(), "started", started, None, None,
            lease_until, holder,
        )  # fmt: skip

    assert await store.claim_key(claim(now, now - timedelta(seconds=1), "dead:1")) is None
    retry = claim(now, now + timedelta(seconds=30), "retry:2")
    lapsed = await store.claim_key(retry)
    assert lapsed is not None
    sent: list[Any] = []
    monkeypatch.setattr(api.writes.store, "execute", send_twice(store._take_over_key, sent))
    assert await store.take_over_key(lapsed, retry)
    assert len(sent) == 1
    assert await store.renew_key(tenant, key, retry.owner, now + timedelta(seconds=30))


async def test_a_take_over_of_a_key_deleted_meanwhile_is_lost_not_an_error(db: Db) -> None:
    """A key erased (or expired) between the read and the take-over: the
    not-applied answer names no owner, and the take-over is simply lost."""
    store = Store(db, 16)
    tenant, key, now = f"t-{uuid.uuid4().hex[:12]}", "k-1", utc_now()
    lapsed = IdempotencyRow(
        tenant, key, b"d", uuid.uuid4(), "started", now, None, None,
        now - timedelta(seconds=1), "dead:1",
    )  # fmt: skip
    assert await store.claim_key(lapsed) is None
    db.session.execute(db.prepare(IDEMPOTENCY_KEYS.delete()), (tenant, key))
    retry = msgspec.structs.replace(lapsed, owner=uuid.uuid4(), holder="retry:2")
    assert not await store.take_over_key(lapsed, retry)
