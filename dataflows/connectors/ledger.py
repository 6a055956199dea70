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

Asking Redis what is still owed costs the source a round trip, and it
looks every 0.1 s while a sweep waits. In a flow of one process (the
default) every payment comes from the same process (the flow's workers are
its threads), so a payment made here is noted in memory, wakes whoever
waits for one (`wait_for_payment`), and the ledger asks Redis at once after
one, and otherwise only every `_ELSEWHERE_S`: in a flow of several
processes, the others' payments are seen that much later.

Every write to a ledger is idempotent, because the flows' Redis client
(runtime/redis_client.py) sends a command whose answer timed out again, and
the first try may have applied: a debt is set, not added (`o:<read>`), and
each payment is a field of its own named by a fresh id (`p:<read>:<id>`).
An increment sent twice would pay twice and publish a watermark before its
items are written.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable

import msgspec
import redis
from redis.client import Pipeline

# Longer than any item can wait between source and sink; refreshed by use.
_KEEP_S = 3600
# How soon a payment made by another process is seen (one made in this
# process is seen at its ledger's next check).
_ELSEWHERE_S = 0.5
# Ledger key -> number of this process's newest payment to it.
_paid_here: dict[str, int] = {}
_payments = itertools.count(1)
_paid = threading.Event()


def wait_for_payment(timeout: float) -> None:
    """Returns once this process has paid a ledger (or `look_again` was
    called) since the last return, or after `timeout` seconds."""
    if _paid.wait(timeout):
        _paid.clear()


def look_again() -> None:
    """Wakes whoever waits in `wait_for_payment` as a payment would."""
    _paid.set()


class Ticket(msgspec.Struct, frozen=True, array_like=True):
    """Where the sink pays an item back: its partition's ledger and read."""

    ledger: str
    read: int


class Ledger:
    """One source partition's: the reads it owes items for. Its worker owes,
    and its watermark's publisher (dataflows/connectors/progress.py) asks
    what is owing from a thread of its own too."""

    def __init__(self, client: redis.Redis, flow: str, shard: int) -> None:
        self._redis = client
        self.key = f"utterstream:ledger:{flow}:{shard}:{uuid.uuid4().hex}"
        # Guards _open, which `owing` reads and shrinks while `owe` adds to
        # it from another thread. `owing` itself, with _seen and _asked,
        # takes one caller at a time: its only caller, Progress.publish,
        # holds its publication lock.
        self._lock = threading.Lock()
        # Reads this partition has owed for and not yet seen paid.
        self._open: set[int] = set()
        self._seen = 0  # the newest payment made here that an answer includes
        self._asked = float("-inf")  # monotonic time of the last answer

    def owe(self, read: int, items: int) -> Ticket:
        """Record that `items` items of read `read` are on their way."""
        if items:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.key, f"o:{read}", items)
                pipe.expire(self.key, _KEEP_S)
                pipe.execute()
            with self._lock:
                self._open.add(read)
        return Ticket(self.key, read)

    def owing(self) -> set[int]:
        """The reads not fully paid yet. Asks Redis only while some are, and
        only after a payment made here or `_ELSEWHERE_S` after its last ask."""
        with self._lock:
            asked = set(self._open)
        if not asked:
            return asked
        paid = _paid_here.get(self.key, 0)
        now = time.monotonic()
        if paid == self._seen and now - self._asked < _ELSEWHERE_S:
            return asked
        # Noted before asking: a payment made meanwhile makes the next check ask.
        self._seen, self._asked = paid, now
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
        with self._lock:
            # Only reads owed before the answer was asked for can be settled.
            self._open -= asked - still
            return set(self._open)


def pay(
    client: redis.Redis,
    tickets: Iterable[Ticket | None],
    also: Callable[[Pipeline], object] = lambda pipe: None,
) -> None:
    """Pay back written items, after their writes are durable, in one round
    trip with the commands `also` queues first (a counting sink's cache
    bumps), which must be harmless when sent twice, as all of the pipeline
    is when its answer times out. Items without a ticket (read from a
    test's source) owe nothing."""
    counts = Counter(t for t in tickets if t is not None)
    payment = uuid.uuid4().hex
    with client.pipeline(transaction=False) as pipe:
        also(pipe)
        for ticket, count in counts.items():
            pipe.hset(ticket.ledger, f"p:{ticket.read}:{payment}", count)
        pipe.execute()  # no round trip when nothing is queued
    for ticket in counts:
        _paid_here[ticket.ledger] = next(_payments)
    if counts:
        _paid.set()
