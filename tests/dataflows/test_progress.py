"""A shard's watermark against the worker that reads it, interleaved on
purpose: the publisher thread asks the ledger while the worker owes new
reads and queues new sweeps. Whatever lands mid-publication, a watermark is
never published while a read up to it is owed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
import redis
from cassandra import OperationTimedOut

from cql.clock import utc_now
from cql.learning import DATAFLOW_PROGRESS
from dataflows.connectors.ledger import Ledger, pay
from dataflows.connectors.progress import Progress
from tests.dataflow_helpers import progress_of

Hook = Callable[[], None]


class AskedRedis:
    """The ledger's Redis client, which runs `during` once Redis has
    answered an HGETALL and before the ledger reads the answer: as when the
    worker owes a read while the publisher's question is on the wire."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.during: Hook | None = None

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        answer = self._client.hgetall(key)
        if self.during is not None:
            self.during, during = None, self.during
            during()
        return answer

    def __getattr__(self, name: str):
        return getattr(self._client, name)


class AnsweredLedger(Ledger):
    """Runs `after` once `owing` has answered, before the publication reads
    the answer: as when the worker sweeps again right then."""

    after: Hook | None = None

    def owing(self) -> set[int]:
        answer = super().owing()
        if self.after is not None:
            self.after, after = None, self.after
            after()
        return answer


class FailingOnce:
    """The flow's Cassandra session, whose next write times out once: as
    when a busy node does not answer in time."""

    def __init__(self, session) -> None:
        self._session = session
        self.failures = 1

    def execute(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise OperationTimedOut("injected: no answer in time")
        return self._session.execute(*args, **kwargs)


@pytest.fixture
def flow() -> str:
    return f"progress-test-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def start() -> datetime:
    return utc_now() - timedelta(minutes=1)


@pytest.fixture
def asked(redis_client) -> AskedRedis:
    return AskedRedis(redis_client)


@pytest.fixture
def ledger(asked, flow) -> AnsweredLedger:
    return AnsweredLedger(asked, flow, 0)  # type: ignore[arg-type]


@pytest.fixture
def progress(db, migrated, flow, ledger, start) -> Iterator[Progress]:
    write = db.prepare(DATAFLOW_PROGRESS.insert(), idempotent=True)
    shard = Progress(flow, 0, db.session, write, ledger, start, start, utc_now)
    yield shard
    shard.close()


def test_a_sweep_queued_after_the_ledger_answered_waits_for_the_next_publication(
    db, redis_client, flow, ledger, progress, start
):
    """The answer says nothing of a read owed after it: the sweep of that
    read must not ride on it. (The process's publisher thread may publish
    too, under the same lock: what is asserted holds whichever does.)"""
    first, second = start + timedelta(seconds=1), start + timedelta(seconds=2)
    pay(redis_client, [ledger.owe(1, 1)])
    progress.swept(1, first, utc_now())

    owed = []

    def sweep_again() -> None:
        owed.append(ledger.owe(2, 1))
        progress.swept(2, second, utc_now())

    ledger.after = sweep_again
    progress.publish()
    assert (progress.watermark, progress_of(db, flow)) == (first, first)
    assert progress.waiting, "the second sweep still waits"
    progress.publish()
    assert progress.watermark == first, "read 2 is still owed"
    pay(redis_client, owed)
    progress.publish()
    assert (progress.watermark, progress_of(db, flow)) == (second, second)


def test_a_read_owed_while_redis_is_asked_stays_owed(redis_client, asked, ledger):
    """The answer, asked for before the debt, shows nothing of read 2: the
    ledger must not take that for paid."""
    pay(redis_client, [ledger.owe(1, 1)])
    owed = []
    asked.during = lambda: owed.append(ledger.owe(2, 1))
    assert ledger.owing() == {2}
    pay(redis_client, owed)
    assert ledger.owing() == set()


def test_nothing_is_published_after_close(db, redis_client, flow, ledger, progress, start):
    pay(redis_client, [ledger.owe(1, 1)])
    progress.swept(1, start + timedelta(seconds=1), utc_now())
    progress.close()
    progress.publish()
    assert progress_of(db, flow) is None


def test_a_worker_does_not_wait_for_a_publication_in_flight(
    db, redis_client, flow, ledger, progress, start
):
    """A publication is held while it asks the ledger: the worker's look
    returns at once, records nothing, and the held one publishes the sweep.
    (Whichever thread asks first is held: the process's publisher thread
    may be the one.)"""
    until = start + timedelta(seconds=1)
    asking, answer = threading.Event(), threading.Event()

    def hold() -> None:
        asking.set()
        answer.wait(10)

    pay(redis_client, [ledger.owe(1, 1)])
    ledger.after = hold
    progress.swept(1, until, utc_now())
    publication = threading.Thread(target=progress.publish)
    publication.start()
    assert asking.wait(10), "a publication asked the ledger"
    progress.publish(wait=False)  # waiting would take until `answer` times out
    assert progress_of(db, flow) is None, "the worker returned before the held publication"
    answer.set()
    publication.join(10)
    assert (progress.watermark, progress_of(db, flow)) == (until, until)


def test_a_watermark_whose_write_failed_is_written_at_the_next_look(
    db, migrated, redis_client, flow, ledger, start
):
    """No later sweep comes at stop_at: the failed write itself is retried."""
    session = FailingOnce(db.session)
    write = db.prepare(DATAFLOW_PROGRESS.insert(), idempotent=True)
    shard = Progress(flow, 0, session, write, ledger, start, start, utc_now)  # type: ignore[arg-type]
    until = start + timedelta(seconds=1)
    try:
        pay(redis_client, [ledger.owe(1, 1)])
        shard.swept(1, until, utc_now())
        shard.publish()
        shard.publish()
        assert session.failures == 0, "the first write failed"
        assert (progress_of(db, flow), shard.waiting) == (until, False)
    finally:
        shard.close()
