"""The ledger's writes survive a lost answer: redis-py sends a command again
when its answer times out, and the first try may have applied. A debt or a
payment applied twice must still count once, or a watermark is published
before its items are written (or never)."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pytest

from dataflows.connectors import ledger as ledgers
from dataflows.connectors.ledger import Ledger, pay
from runtime.redis_client import connect
from runtime.sections import RedisSettings


class AnswerEater:
    """A TCP proxy in front of Redis. Armed, it drops every answer on the
    connections that are open: their commands apply, their answers never
    come, as when Redis is slow past the client's timeout."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[dict[str, bool]] = []
        self.eaten = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        for state in self._open:
            state["mute"] = True

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            state = {"mute": False}
            self._open.append(state)
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, state), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, state: dict | None) -> None:
        try:
            while data := source.recv(65536):
                if state is not None and state["mute"]:
                    self.eaten += 1
                    continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            source.close()
            sink.close()


@contextmanager
def flaky_redis(url: str) -> Iterator[tuple[AnswerEater, RedisSettings]]:
    parsed = urlparse(url)
    eater = AnswerEater((parsed.hostname or "127.0.0.1", parsed.port or 6379))
    try:
        yield (
            eater,
            RedisSettings(
                url=f"redis://127.0.0.1:{eater.port}{parsed.path}",
                socket_timeout_s=1.0,
                flow_timeout_s=0.3,
            ),
        )
    finally:
        eater.close()


@pytest.fixture
def ledger(redis_client) -> Ledger:
    return Ledger(redis_client, f"ledger-test-{uuid.uuid4().hex[:6]}", 0)


def test_a_payment_whose_answer_was_lost_is_counted_once(settings, redis_client, ledger):
    ticket = ledger.owe(1, 2)
    with flaky_redis(settings.redis.url) as (eater, flaky):
        client = connect(flaky)
        client.ping()
        eater.arm()
        pay(client, [ticket])  # applied, answer lost, sent again
        assert eater.eaten >= 1
    assert ledger.owing() == {1}, "one item of two is paid, not both"
    pay(redis_client, [ticket])
    assert ledger.owing() == set()


def test_a_debt_whose_answer_was_lost_is_counted_once(settings, redis_client):
    with flaky_redis(settings.redis.url) as (eater, flaky):
        client = connect(flaky)
        ledger = Ledger(client, f"ledger-test-{uuid.uuid4().hex[:6]}", 0)
        client.ping()
        eater.arm()
        ticket = ledger.owe(7, 2)  # applied, answer lost, sent again
        assert eater.eaten >= 1
        pay(redis_client, [ticket])
        assert ledger.owing() == {7}
        pay(redis_client, [ticket])
        assert ledger.owing() == set(), "two items owed, two paid"


def test_settled_reads_leave_the_ledger(redis_client, ledger):
    first, second = ledger.owe(1, 1), ledger.owe(2, 3)
    pay(redis_client, [first, second])
    assert ledger.owing() == {2}
    assert all(not field.startswith((b"o:1", b"p:1:")) for field in redis_client.hkeys(ledger.key))


def test_a_payment_made_here_is_seen_at_once_one_made_elsewhere_later(
    redis_client, ledger, monkeypatch
):
    monkeypatch.setattr(ledgers, "_ELSEWHERE_S", 60.0)
    first, second = ledger.owe(1, 1), ledger.owe(2, 1)
    assert ledger.owing() == {1, 2}
    pay(redis_client, [first])
    assert ledger.owing() == {2}, "paid in this process: seen at the next check"
    # What another process's pay() writes; this process notes nothing of it.
    redis_client.hset(second.ledger, "p:2:elsewhere", 1)
    assert ledger.owing() == {2}, "Redis is not asked again without a payment here"
    monkeypatch.setattr(ledgers, "_ELSEWHERE_S", 0.0)
    assert ledger.owing() == set(), "a payment made elsewhere is seen once _ELSEWHERE_S passed"
