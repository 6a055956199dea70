"""A feed shard's published watermark: the `until` of its newest sweep
whose reads the flow has written, recorded in `dataflow_progress`.

See dataflows/connectors/feed_source.py for what a sweep vouches for and
dataflows/connectors/ledger.py for how the sinks say what they wrote.

A sweep is published by whichever comes first: its partition's worker,
which looks between its calls, or the process's publisher thread, which
looks as soon as a sink of the process has paid and every 0.1 s while a
sweep waits. The worker alone publishes late under load: the same thread
runs sinks, whose calls took up to 0.44 s each at 89 POSTs/s, several in a
row, and a sweep paid meanwhile waited for them. For the same reason the
worker never waits for a publication in flight (a ledger question and a
Cassandra write, up to its timeout): it leaves the sweep to the publisher
thread, which looks again as soon as that publication is done.

A watermark whose write failed stays waiting, and is written again at the
next look: at `stop_at` no later sweep would carry it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

import redis
import structlog
from cassandra import OperationTimedOut, Unavailable, WriteFailure, WriteTimeout
from cassandra.cluster import NoHostAvailable, Session
from cassandra.query import PreparedStatement
from prometheus_client import Gauge

from cql.clock import to_stored_time
from cql.learning import DATAFLOW_PROGRESS, ProgressRow
from cql.session import Db
from dataflows.connectors.ledger import Ledger, look_again, wait_for_payment
from dataflows.resources import acquire_db, release_db
from runtime.settings import Settings

log = structlog.get_logger("dataflows.progress")

# What a busy or briefly unreachable Cassandra answers a write.
CASSANDRA_BUSY = (WriteTimeout, WriteFailure, Unavailable, OperationTimedOut, NoHostAvailable)

# Set as they change. In multiprocess mode the newest process's value counts
# ("livemostrecent"): a restarted flow replaces the dead one's sample.
READ_LAG = Gauge(
    "utterstream_dataflow_read_lag_seconds",
    "Now minus the position of a feed shard's last complete sweep",
    ["flow", "shard"],
    multiprocess_mode="livemostrecent",
)
AS_OF_LAG = Gauge(
    "utterstream_dataflow_as_of_lag_seconds",
    "Now minus the watermark (as_of) a feed shard last recorded",
    ["flow", "shard"],
    multiprocess_mode="livemostrecent",
)
# How often a waiting sweep's ledger is looked at when no payment of this
# process wakes the publisher thread (one of another process's), and how
# often a shard's worker looks at its doorbell.
LOOK_EVERY = timedelta(seconds=0.1)


class ShardsDropped(RuntimeError):
    """The feed is read with fewer shards than this flow has read before."""


# (keyspace, flow, shards) checked by this process: every worker lists the
# source's partitions, and each check would connect and disconnect again.
_checked: set[tuple[str, str, int]] = set()


def check_shards(settings: Settings, flow: str) -> None:
    """Refuses to read the feed with fewer shards than `flow` has recorded
    progress for: entries the API wrote into the others, while it had more,
    would never be read, and their shards' stale watermarks would hold every
    answer's `as_of` back for good."""
    shards = settings.feed.shards
    checked = (settings.cassandra.keyspace, flow, shards)
    if checked in _checked:
        return
    db = acquire_db(settings.cassandra)
    try:
        select = db.prepare(DATAFLOW_PROGRESS.select(columns=("shard",)), idempotent=True)
        recorded = [shard for (shard,) in db.session.execute(select, (flow,))]
    finally:
        release_db(settings.cassandra)
    if beyond := sorted(shard for shard in recorded if shard >= shards):
        raise ShardsDropped(
            f"feed.shards is {shards}, but the flow {flow!r} has read shards {beyond} "
            "(dataflow_progress): set UTTERSTREAM_FEED_SHARDS to what it was, or change it "
            "as the README's 'Changing the feed's shards' says"
        )
    _checked.add(checked)


def forget_progress(db: Db, flow: str) -> None:
    """Deletes what `flow` recorded, for a run that starts afresh (a replay,
    the bench's flows): an earlier run's rows would misstate its `as_of`,
    and, read with another feed.shards, stop it (check_shards)."""
    db.session.execute(db.prepare(DATAFLOW_PROGRESS.delete(), idempotent=True), (flow,))


class Progress:
    """Sweeps wait here, oldest first, until the ledger says every read up
    to theirs is written; then the newest such becomes the watermark.

    `not_before`: a partition resumed from a snapshot may have items of its
    previous run still in the collect step, which no ledger of this run
    tracks; it publishes nothing before then (start plus a few flush
    intervals), the one allowance left. `clock` tells the time of each
    publication. Call `close` before the session goes."""

    def __init__(
        self,
        flow: str,
        shard: int,
        session: Session,
        write: PreparedStatement,
        ledger: Ledger,
        watermark: datetime,
        not_before: datetime,
        clock: Callable[[], datetime],
    ) -> None:
        self._flow, self._shard = flow, shard
        self._session, self._write = session, write
        self._ledger = ledger
        self._not_before = not_before
        self.clock = clock
        self.names = {"flow": flow, "shard": shard}  # for its log lines
        # Appended by the worker, popped by a publication: a deque's appends
        # and pops are thread-safe.
        self._sweeps: deque[tuple[int, datetime]] = deque()
        self.watermark = watermark  # published
        self.swept_until = watermark  # read, maybe not written yet
        # Held across a whole publication, its write included: two in flight
        # could record an older watermark last. swept() does not wait for it.
        self._publishing = threading.Lock()
        self._closed = False
        self._unrecorded = False  # the published watermark's write failed
        _publisher().add(self)

    @property
    def waiting(self) -> bool:
        return bool(self._sweeps) or self._unrecorded

    def swept(self, read: int, until: datetime, now: datetime) -> None:
        """A sweep up to `until` completed with read number `read`, which
        the ledger already owes for if it read anything."""
        self._sweeps.append((read, until))
        self.swept_until = until
        READ_LAG.labels(self._flow, str(self._shard)).set((now - until).total_seconds())

    def publish(self, wait: bool = True) -> None:
        """Publish the newest sweep that is fully written, if any. Unless
        `wait`, return at once when a publication is in flight."""
        if not self._publishing.acquire(blocking=wait):
            # The publication in flight may have taken its sweeps before
            # the caller's: the publisher thread looks again right after it.
            look_again()
            return
        try:
            self._publish()
        finally:
            self._publishing.release()

    def _publish(self) -> None:
        if self._closed or not self.waiting or self.clock() < self._not_before:
            return
        if newest := self._newest_paid():
            self.watermark = newest
        if newest or self._unrecorded:
            # After the ledger's answer: updated_at and the lag gauge then
            # count the time asking took.
            self._record(self.clock())

    def _newest_paid(self) -> datetime | None:
        """Pops the sweeps whose reads are all paid; the newest of them."""
        # Only sweeps queued before the ledger is asked: a later one's read
        # may have been owed after the ledger's answer.
        queued = len(self._sweeps)
        if not queued:
            return None
        owing = self._ledger.owing()
        first_owed = min(owing) if owing else None
        newest = None
        for _ in range(queued):
            if first_owed is not None and self._sweeps[0][0] >= first_owed:
                break
            newest = self._sweeps.popleft()[1]
        return newest

    def close(self) -> None:
        """Waits for a publication in flight; publishes nothing after."""
        _publisher().discard(self)
        with self._publishing:
            self._closed = True

    def _record(self, now: datetime) -> None:
        watermark = to_stored_time(self.watermark)
        row = ProgressRow(self._flow, self._shard, watermark, now)
        try:
            self._session.execute(self._write, DATAFLOW_PROGRESS.values(row))
        except CASSANDRA_BUSY as exc:
            # Progress is advisory and written again at the next look;
            # stopping the flow for it would cost a restart and a replay.
            if not self._unrecorded:
                log.warning("progress_not_recorded", **self.names, error=repr(exc))
            self._unrecorded = True
            return
        if self._unrecorded:
            log.info("progress_recorded_again", **self.names)
            self._unrecorded = False
        AS_OF_LAG.labels(self._flow, str(self._shard)).set((now - watermark).total_seconds())


class _Publisher:
    """This process's publisher thread (see the module's docstring)."""

    def __init__(self) -> None:
        self._progress: set[Progress] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="progress", daemon=True).start()

    def add(self, progress: Progress) -> None:
        with self._lock:
            self._progress.add(progress)

    def discard(self, progress: Progress) -> None:
        with self._lock:
            self._progress.discard(progress)

    def _run(self) -> None:
        # Must never end: the workers would still publish, but late, and
        # nothing would log why.
        while True:
            wait_for_payment(LOOK_EVERY.total_seconds())
            with self._lock:
                waiting = [progress for progress in self._progress if progress.waiting]
            for progress in waiting:
                self._try(progress)

    @staticmethod
    def _try(progress: Progress) -> None:
        try:
            progress.publish()
        except (redis.RedisError, OSError) as exc:
            # The worker's own ledger calls fail too, and stop the flow.
            log.warning("progress_not_published", **progress.names, error=repr(exc))
        except Exception:
            log.exception("progress_publisher_failed", **progress.names)


_the_publisher: _Publisher | None = None
_publisher_lock = threading.Lock()


def _publisher() -> _Publisher:
    global _the_publisher
    with _publisher_lock:
        if _the_publisher is None:
            _the_publisher = _Publisher()
        return _the_publisher
