"""UTC time buckets and the event-time clock the counting flows share.

All datetimes here are naive UTC, as Cassandra stores them (see
cql.clock.to_stored_time), except where Bytewax needs aware ones: its
clocks and windowers compare with the aware system time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.dataflow import Stream
from bytewax.operators.windowing import EventClock, TumblingWindower

from cql.clock import EPOCH
from runtime.settings import DataflowSettings

T = TypeVar("T")

# A window whose close time is already in the past (a replay, or a client
# that was offline) is re-checked this often rather than in a busy loop.
_RECHECK = timedelta(seconds=1)
_WRITE_ALLOWANCE = timedelta(seconds=5)


def tumbling(length: timedelta) -> TumblingWindower:
    return TumblingWindower(length=length, align_to=EPOCH.replace(tzinfo=UTC))


def event_clock(wait_s: float, event_time: Any) -> EventClock[Any]:
    """Bytewax's event clock on `event_time(item)` (aware UTC).

    A window [start, end) closes once the learner's watermark (latest event
    time seen, minus the wait, plus system time elapsed since) passes `end`;
    for live events that is about `end + wait` in system time, so that is
    when the runtime is asked to wake up. Bytewax's default (`end` itself)
    would wake it repeatedly until the wait is over; never earlier than
    `_RECHECK` from now, for windows of old events.
    """
    wait = timedelta(seconds=wait_s)

    def wake_at(close: datetime) -> datetime:
        return max(close + wait, datetime.now(UTC) + _RECHECK)

    return EventClock(ts_getter=event_time, wait_for_system_duration=wait, to_system_utc=wake_at)


def window_hold(length: timedelta, settings: DataflowSettings) -> timedelta:
    """How long after a feed entry is read the counting flows may take to
    write it, at most: an event clock (above) starts a learner's watermark at
    most `length + wait` behind the entry's window end and advances it with
    system time; then up to one re-check, one poll, and the write itself
    (an allowance, not a bound: a sink slower than that under load makes the
    published watermark optimistic by the difference)."""
    wait = timedelta(seconds=settings.window_wait_s)
    poll = timedelta(seconds=settings.poll_interval_s)
    return length + wait + _RECHECK + poll + _WRITE_ALLOWANCE


def window_values(window: tuple[int, list[T]]) -> list[T]:
    """A closed window's items, without its id: the sink recounts by time."""
    return window[1]


def late_value(late: tuple[int, T]) -> list[T]:
    """An item that came after its window closed, as a batch of its own."""
    return [late[1]]


def batch_by_window(
    step_id: str,
    keyed: Stream[tuple[str, T]],
    length: timedelta,
    wait_s: float,
    event_time: Any,
) -> Stream[tuple[str, list[T]]]:
    """A learner's items, batched by tumbling event-time window of `length`;
    an item that comes after its window closed is a batch of its own. The
    windows only batch: the sinks recount whole windows from stored facts,
    so a late item or a reopened window never yields a partial count.
    The step ids stay those the flows had, so recovery state still fits."""
    windows = win.collect_window(
        step_id, keyed, event_clock(wait_s, event_time), tumbling(length), ordered=False
    )
    on_time = op.map_value("unwrap_window", windows.down, window_values)
    late = op.map_value("unwrap_late", windows.late, late_value)
    return op.merge("merge_on_time_and_late", on_time, late)
