"""Which cached answers are still good: a generation number per learner in
Redis. The dataflows bump it after every write that changes a learner's
served rows; the API stores it with every cached answer. A late event therefore
makes every cached answer for that learner unreachable at once, and a stale
number can never be served."""

from __future__ import annotations

from redis.client import Pipeline


def generation_key(tenant: str, user_id: str) -> str:
    return f"gen:{tenant}:{user_id}"


def queue_bumps(pipe: Pipeline, learners: set[tuple[str, str]]) -> None:
    """The bumps, queued in a pipeline of the caller's (the dataflow sinks
    send them with their ledger payments, after their Cassandra writes)."""
    for tenant, user_id in learners:
        pipe.incr(generation_key(tenant, user_id))
