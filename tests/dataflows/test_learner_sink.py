"""What a counting flow's sink does in Redis after its Cassandra writes: one
round trip bumps the learners' cache generations and pays the items back to
the feed's ledger, and only then are the live events published, so a client
that reads over REST on an event is not answered from a stale cache."""

from __future__ import annotations

import uuid
from datetime import datetime

from redis.client import Pipeline

from cql.error_counts import ErrorPointFact
from dataflows.connectors.ledger import Ledger
from dataflows.connectors.sinks import LearnerSink, Stamped, learner_key_of
from dataflows.writers.error_writer import ErrorCountWriter
from live.bus import stream_key
from runtime.generations import generation_key


def test_a_batch_bumps_and_pays_in_one_round_trip_before_it_publishes(
    migrated, redis_client, monkeypatch
) -> None:
    tenant, user_id = f"sink-{uuid.uuid4().hex[:8]}", "learner-1"
    ledger = Ledger(redis_client, "sink-test", 0)
    ticket = ledger.owe(1, 1)
    accepted = datetime(2026, 11, 2, 8, 44, 5)
    fact = ErrorPointFact(
        tenant, user_id, datetime(2026, 11, 2), datetime(2026, 11, 2, 8, 43, 30),
        "utt-1", 0, "grammar", "articles", accepted,
    )  # fmt: skip
    # Each round trip the sink makes: the commands of one pipeline's execute.
    trips: list[list[str]] = []
    execute = Pipeline.execute

    def recorded(pipe: Pipeline, *args, **kwargs):
        trips.append([" ".join(map(str, cmd[:2])) for cmd, _options in pipe.command_stack])
        return execute(pipe, *args, **kwargs)

    sink = LearnerSink(migrated, ErrorCountWriter).build("sink", 0, 1)
    monkeypatch.setattr(Pipeline, "execute", recorded)
    try:
        sink.write_batch([(learner_key_of(tenant, user_id), [Stamped(fact, accepted, ticket)])])
    finally:
        monkeypatch.undo()
        sink.close()

    assert ledger.owing() == set()
    assert int(redis_client.get(generation_key(tenant, user_id))) == 1
    assert redis_client.xlen(stream_key(tenant)) == 1
    bump = f"INCRBY {generation_key(tenant, user_id)}"
    payment = f"HSET {ledger.key}"

    def trip_of(command: str) -> int:
        [i] = [i for i, trip in enumerate(trips) if command in trip]
        return i

    appends = [i for i, trip in enumerate(trips) if any(c.startswith("EVAL") for c in trip)]
    assert trip_of(bump) == trip_of(payment), trips
    assert appends and min(appends) > trip_of(payment), trips
