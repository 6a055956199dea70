"""What a counting flow's sink does in Redis after its Cassandra writes: one
pipeline bumps the learners' cache generations and pays the items back to
the feed's ledger, and only then are the live events published, so a client
that reads over REST on an event is not answered from a stale cache."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import redis

from cql.error_counts import ErrorPointFact
from dataflows.connectors.ledger import Ledger
from dataflows.connectors.sinks import LearnerSink, Stamped, learner_key_of
from dataflows.writers.error_writer import ErrorCountWriter
from live.bus import stream_key
from runtime.generations import generation_key


@contextmanager
def commands(client: redis.Redis) -> Iterator[list[dict[str, Any]]]:
    """Every command Redis runs meanwhile (MONITOR), in order."""
    seen: list[dict[str, Any]] = []
    end = f"end-{uuid.uuid4().hex}"
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as monitor:
            ready.set()
            while end not in (command := monitor.next_command())["command"]:
                seen.append(command)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert ready.wait(5)
    try:
        yield seen
    finally:
        client.echo(end)
        watcher.join(5)


def test_a_batch_bumps_and_pays_in_one_pipeline_before_it_publishes(migrated, redis_client) -> None:
    tenant, user_id = f"sink-{uuid.uuid4().hex[:8]}", "learner-1"
    ledger = Ledger(redis_client, "sink-test", 0)
    ticket = ledger.owe(1, 1)
    accepted = datetime(2026, 11, 2, 8, 44, 5)
    fact = ErrorPointFact(
        tenant, user_id, datetime(2026, 11, 2), datetime(2026, 11, 2, 8, 43, 30),
        "utt-1", 0, "grammar", "articles", accepted,
    )  # fmt: skip
    sink = LearnerSink(migrated, ErrorCountWriter).build("sink", 0, 1)
    try:
        with commands(redis_client) as seen:
            sink.write_batch([(learner_key_of(tenant, user_id), [Stamped(fact, accepted, ticket)])])
    finally:
        sink.close()

    assert ledger.owing() == set()
    assert int(redis_client.get(generation_key(tenant, user_id))) == 1
    assert redis_client.xlen(stream_key(tenant)) == 1

    def at(word: str, key: str) -> int:
        [i] = [i for i, c in enumerate(seen) if c["command"].startswith(f"{word} {key}")]
        return i

    bump, payment = at("INCRBY", generation_key(tenant, user_id)), at("HSET", ledger.key)
    append = next(i for i, c in enumerate(seen) if stream_key(tenant) in c["command"])
    assert payment == bump + 1, seen[bump : payment + 1]
    assert seen[bump]["client_port"] == seen[payment]["client_port"]
    assert payment < append
