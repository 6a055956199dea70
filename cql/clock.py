"""Time as the tables store it: naive UTC at millisecond precision, and the
calendar steps (minute, quarter hour, hour, day, month, year) that buckets,
windows and partitions are built from. One definition, used by the API, the
dataflows and the tests. Each works on naive UTC (as stored) and on aware
datetimes (as answered) alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

EPOCH = datetime(1970, 1, 1)

MINUTE = timedelta(minutes=1)
QUARTER_HOUR = timedelta(minutes=15)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def to_stored_time(moment: datetime) -> datetime:
    """As Cassandra stores a timestamp: naive UTC, millisecond precision, so
    a value read back equals the value written."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def from_stored_time(moment: datetime) -> datetime:
    """A stored (naive UTC) timestamp as an aware UTC datetime for answers."""
    return moment.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return to_stored_time(datetime.now(UTC))


def _epoch(moment: datetime) -> datetime:
    return EPOCH.replace(tzinfo=moment.tzinfo)


def floor_to(moment: datetime, step: timedelta) -> datetime:
    return moment - (moment - _epoch(moment)) % step


def is_late(written_at: datetime, window_end: datetime, late_after: timedelta) -> bool:
    """Whether an event accepted at `written_at` is late for the window (or
    bucket) ending at `window_end`: the one rule of every flow and read."""
    return written_at > window_end + late_after


def ceil_to(moment: datetime, step: timedelta) -> datetime:
    """`moment` rounded up to a multiple of `step` since the epoch."""
    over = (moment - _epoch(moment)) % step
    return moment + (step - over) if over else moment


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: datetime) -> datetime:
    return (start.replace(day=1) + timedelta(days=32)).replace(day=1)


def year_start(moment: datetime) -> datetime:
    return moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


# ---- UTC spans: what one partition of a served table holds

Span = Literal["day", "month", "year"]


def span_start(moment: datetime, span: Span) -> datetime:
    """The start of the UTC day, month or year that holds `moment`."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if span == "day":
        return day
    month = day.replace(day=1)
    return month if span == "month" else month.replace(month=1)


def next_span(start: datetime, span: Span) -> datetime:
    if span == "day":
        return start + DAY
    if span == "year":
        return start.replace(year=start.year + 1)
    return next_month(start)


def spans(start: datetime, end: datetime, span: Span) -> list[datetime]:
    """The starts of the UTC spans that overlap [start, end)."""
    starts = []
    current = span_start(start, span)
    while current < end:
        starts.append(current)
        current = next_span(current, span)
    return starts


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, as tokens carry a stored time."""
    return (moment - _epoch(moment)) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)
