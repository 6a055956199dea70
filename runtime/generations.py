"""Which cached answers are still good: a generation number per learner in
Redis. The dataflows bump it after every write that changes a learner's
served rows; the API stores it with every cached answer. A late event therefore
makes every cached answer for that learner unreachable at once, and a stale
number can never be served."""

from __future__ import annotations

import redis


def generation_key(tenant: str, user_id: str) -> str:
    return f"gen:{tenant}:{user_id}"


def bump_generations(client: redis.Redis, learners: set[tuple[str, str]]) -> None:
    """Called by dataflow sinks (synchronous) after their Cassandra writes."""
    if not learners:
        return
    pipe = client.pipeline(transaction=False)
    for tenant, user_id in learners:
        pipe.incr(generation_key(tenant, user_id))
    pipe.execute()
