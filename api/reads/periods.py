"""Time math of the served GET endpoints, pure and synchronous: reading the
`from`, `to`, `since` and `tz` parameters, the UTC partitions a range
touches, and a time zone's local days, ISO weeks and months as spans of UTC
instants.

Every UTC offset in use today is a whole number of quarter hours (+05:30,
+05:45, -03:30, daylight saving's one hour), so a local period is an exact
union of the learning flow's quarter-hour UTC buckets: any zone is answered
by a roll-up at query time, with no table per zone.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Annotated, Literal, NamedTuple
from zoneinfo import ZoneInfo, available_timezones

import msgspec

from api.edge.problems import BadRequest
from cql import clock

Granularity = Literal["day", "week", "month"]

EPOCH = clock.EPOCH.replace(tzinfo=UTC)
# Nothing served precedes the epoch, and the period math stays clear of
# datetime's year-9999 ceiling.
LATEST = datetime(9999, 1, 1, tzinfo=UTC)

_AWARE = Annotated[datetime, msgspec.Meta(tz=True)]
_INSTANT = "an RFC 3339 timestamp with an offset, e.g. 2026-03-08T00:00:00-05:00"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Names that are files in the zone database but not zones a client can mean:
# `localtime` is whatever the host is set to.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


# ---- parameters


def day_or_instant(raw: str | None, name: str, zone: ZoneInfo) -> datetime:
    """A date (YYYY-MM-DD: when that day begins in `zone`) or an RFC 3339
    timestamp with an offset."""
    if raw is not None and _DAY.match(raw):
        return _in_range(local_start(_date(raw, name), zone), name)
    return _in_range(_required(raw, name, _rfc3339(raw), f"a date YYYY-MM-DD or {_INSTANT}"), name)


def bounds(from_: str | None, to: str | None, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The `from` and `to` of a range, each a date or an RFC 3339 timestamp
    (day_or_instant), as aware datetimes in `zone`. Every GET endpoint with a
    range reads it here, so all take the same values."""
    start = day_or_instant(from_, "from", zone).astimezone(zone)
    return start, day_or_instant(to, "to", zone).astimezone(zone)


def local_day(raw: str, name: str, zone: ZoneInfo) -> date:
    """A date (YYYY-MM-DD, a day in `zone`) or the day in `zone` of an RFC
    3339 timestamp."""
    if _DAY.match(raw):
        return _date(raw, name)
    moment = _required(raw, name, _rfc3339(raw), f"a date YYYY-MM-DD or {_INSTANT}")
    return _in_range(moment, name).astimezone(zone).date()


def zone(raw: str | None) -> ZoneInfo:
    """An IANA time zone by name (default UTC)."""
    if raw is None:
        return ZoneInfo("UTC")
    if raw not in _zone_names():
        raise BadRequest(
            f"`tz` must be an IANA time zone name such as Europe/Paris, Asia/Kolkata or UTC; "
            f"{raw!r} is not one.",
            field="tz",
        )
    return ZoneInfo(raw)


def checked_range(
    start: datetime, end: datetime, longest: timedelta, zone: ZoneInfo | None = None
) -> None:
    """`from` before `to`, at most `longest` apart (on the wall clock of
    `zone` when given, so a range of whole local days is whole days)."""
    ordered(start, end)
    if zone is not None:
        start, end = _wall(start, zone), _wall(end, zone)
    if end - start > longest:
        raise BadRequest(
            f"The range from `from` to `to` is longer than the limit of {longest.days} days; "
            "split it into several requests.",
            field="to",
        )


def ordered(start: datetime, end: datetime) -> None:
    if start >= end:
        raise BadRequest("`from` must be before `to` (the range is [from, to)).", field="to")


def _rfc3339(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, _AWARE)
    except msgspec.ValidationError:
        return None


def _required(raw: str | None, name: str, parsed: datetime | None, expected: str) -> datetime:
    if raw is None:
        raise BadRequest(f"`{name}` is required: {expected}.", field=name)
    if parsed is None:
        hint = (
            " A `+` in a query string reads as a space: send it encoded, as %2B."
            if " " in raw
            else ""
        )
        raise BadRequest(f"`{name}` must be {expected}; got {raw!r}.{hint}", field=name)
    return parsed


def _date(raw: str, name: str) -> date:
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"`{name}` is not a valid date: {raw!r}.", field=name) from None
    if not EPOCH.year <= day.year < LATEST.year:
        raise _out_of_range(name)
    return day


def _in_range(moment: datetime, name: str) -> datetime:
    if not EPOCH <= moment < LATEST:
        raise _out_of_range(name)
    return moment


def _out_of_range(name: str) -> BadRequest:
    return BadRequest(f"`{name}` must lie between 1970 and 9998.", field=name)


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


# ---- local periods


class Period(NamedTuple):
    """One local day, ISO week or month: aware datetimes in its zone, with
    the offset in force at each end."""

    start: datetime
    end: datetime


def local_start(day: date, zone: ZoneInfo) -> datetime:
    """When `day` begins in `zone`. Where midnight does not exist (a
    daylight-saving jump at 00:00) that is the moment of the jump, shown
    with the new offset."""
    naive_midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    return naive_midnight.astimezone(UTC).astimezone(zone)


def periods(
    granularity: Granularity, start: datetime, end: datetime, zone: ZoneInfo
) -> list[Period]:
    """Every local period that overlaps [start, end), whole: the first one
    holds `start`, the last one begins before `end`."""
    first = start.astimezone(zone).date()
    if granularity == "week":
        first -= timedelta(days=first.weekday())
    elif granularity == "month":
        first = first.replace(day=1)
    found = []
    begin = local_start(first, zone)
    while begin < end:
        first = _next_period(first, granularity)
        following = local_start(first, zone)
        found.append(Period(begin, following))
        begin = following
    return found


def _next_period(day: date, granularity: Granularity) -> date:
    if granularity == "day":
        return day + timedelta(days=1)
    if granularity == "week":
        return day + timedelta(days=7)
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)
