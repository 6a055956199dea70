"""Time as the tables store it: naive UTC at millisecond precision, and the
calendar steps (minute, quarter hour, hour, day, month, year) that buckets,
windows and partitions are built from. One definition, used by the API, the
dataflows and the tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


def floor_to(moment: datetime, step: timedelta) -> datetime:
    return moment - (moment - EPOCH) % step


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: datetime) -> datetime:
    return (start.replace(day=1) + timedelta(days=32)).replace(day=1)


def year_start(moment: datetime) -> datetime:
    return moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
