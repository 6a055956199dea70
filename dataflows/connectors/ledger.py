"""What a feed shard's reads still owe the flow's sinks, kept in Redis.

The watermark a flow publishes (`as_of`) must mean that every utterance
accepted before it is in the served tables: read is not enough, it must be
written. Between the source and the sink the items wait in the collect step
and may cross to another worker, or another process. So each read of a
shard is numbered; the source records in Redis how many items the flow will
make of it (`owe`) before it emits them, and every sink, once its writes of
a batch are done, pays the items back (`pay`). A sweep's watermark is
published only when no read up to the sweep's own is owed anything.

Each partition's ledger is a Redis hash of its own (flow, shard, and a fresh
id per partition start): a restarted partition starts clean, and a dead
one's leftovers expire. The sinks learn where to pay from the items' ticket.

Every write to a ledger is idempotent, because the flows' Redis client
(runtime/redis_client.py) sends a command whose answer timed out again, and
the first try may have applied: a debt is set, not added (`o:<read>`), and
each payment is a field of its own named by a fresh id (`p:<read>:<id>`).
An increment sent twice would pay twice and publish a watermark before its
items are written.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable

import msgspec
import redis

# Longer than any item can wait between source and sink; refreshed by use.
_KEEP_S = 3600


class Ticket(msgspec.Struct, frozen=True, array_like=True):
    """Where the sink pays an item back: its partition's ledger and read."""

    ledger: str
    read: int


class Ledger:
    """One source partition's: the reads it owes items for."""

    def __init__(self, client: redis.Redis, flow: str, shard: int) -> None:
        self._redis = client
        self.key = f"utterstream:ledger:{flow}:{shard}:{uuid.uuid4().hex}"
        # Reads this partition has owed for and not yet seen paid.
        self._open: set[int] = set()

    def owe(self, read: int, items: int) -> Ticket:
        """Record that `items` items of read `read` are on their way."""
        if items:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.key, f"o:{read}", items)
                pipe.expire(self.key, _KEEP_S)
                pipe.execute()
            self._open.add(read)
        return Ticket(self.key, read)

    def owing(self) -> set[int]:
        """The reads not fully paid yet. Asks Redis only while some are."""
        if not self._open:
            return set()
        fields = self._redis.hgetall(self.key)
        balance: Counter[int] = Counter()
        for field, count in fields.items():
            kind, read = field.split(b":")[:2]
            balance[int(read)] += int(count) if kind == b"o" else -int(count)
        still = {read for read, owed in balance.items() if owed > 0}
        # A settled read gets no more payments: its fields can go.
        settled = [field for field in fields if int(field.split(b":")[1]) not in still]
        if settled:
            self._redis.hdel(self.key, *settled)
        self._open &= still
        return set(self._open)


def pay(client: redis.Redis, tickets: Iterable[Ticket | None]) -> None:
    """Pay back written items, after their writes are durable. Items without
    a ticket (read from a test's source) owe nothing."""
    counts = Counter(t for t in tickets if t is not None)
    if not counts:
        return
    payment = uuid.uuid4().hex
    with client.pipeline(transaction=False) as pipe:
        for ticket, count in counts.items():
            pipe.hset(ticket.ledger, f"p:{ticket.read}:{payment}", count)
        pipe.execute()
