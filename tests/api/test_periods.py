"""The time math of the served GET endpoints (api/periods.py): parameters,
UTC partitions, and local days, ISO weeks and months in awkward zones.
Expected instants are written out by hand, not computed with the code under
test."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.edge.problems import BadRequest
from api.reads import periods
from cql import clock

NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
ZONES = [
    "UTC",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "America/Santiago",
    "America/Havana",
    "Pacific/Chatham",
    "Europe/London",
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def spans_of(found: list[periods.Period]) -> list[tuple[str, str]]:
    return [(iso(p.start), iso(p.end)) for p in found]


# ---- parameters


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-03-08T00:00:00Z", utc(2026, 3, 8)),
        ("2026-03-08T05:30:00+05:30", utc(2026, 3, 8)),
        ("2026-03-07T18:15:00-05:45", utc(2026, 3, 8)),
        ("2026-03-08T00:00:00.250+00:00", utc(2026, 3, 8, 0, 0, 0, 250_000)),
    ],
)
def test_rfc3339_with_an_offset_is_that_instant_in_any_zone(raw: str, expected: datetime) -> None:
    assert periods.day_or_instant(raw, "from", KOLKATA) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "2026-03-08T00:00:00",
        "2026-3-8",
        "08/03/2026",
        "2026-13-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "9999-06-01T00:00:00Z",
        "now",
    ],
)
def test_a_bound_refuses_anything_else_naming_the_parameter(raw: str | None) -> None:
    with pytest.raises(BadRequest) as caught:
        periods.day_or_instant(raw, "to", NEW_YORK)
    assert caught.value.field == "to"
    assert "`to`" in caught.value.detail


def test_a_date_means_the_start_of_that_day_in_the_zone() -> None:
    assert iso(periods.day_or_instant("2026-01-01", "from", KOLKATA)) == "2026-01-01T00:00:00+05:30"
    assert (
        iso(periods.day_or_instant("2026-01-01", "from", KATHMANDU)) == "2026-01-01T00:00:00+05:45"
    )
    # An explicit timestamp keeps its own offset whatever the zone.
    assert periods.day_or_instant("2026-01-01T00:00:00Z", "from", KOLKATA) == utc(2026, 1, 1)


@pytest.mark.parametrize("raw", ["2026-02-30", "2026-1-1", "0001-01-01", "2026-01-01T00:00:00"])
def test_day_or_instant_refuses_bad_values(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        periods.day_or_instant(raw, "from", NEW_YORK)
    assert caught.value.field == "from"


def test_local_day_of_a_date_or_a_timestamp() -> None:
    assert periods.local_day("2026-03-08", "since", KOLKATA) == date(2026, 3, 8)
    assert periods.local_day("2026-03-08T02:00:00+05:30", "since", ZoneInfo("UTC")) == date(
        2026, 3, 7
    )
    assert periods.local_day("2026-03-07T20:00:00Z", "since", KOLKATA) == date(2026, 3, 8)
    with pytest.raises(BadRequest) as caught:
        periods.local_day("yesterday", "since", KOLKATA)
    assert caught.value.field == "since"


def test_bounds_are_aware_in_the_zone_whatever_their_spelling() -> None:
    start, end = periods.bounds("2026-03-08", "2026-03-09T00:00:00Z", KOLKATA)
    assert iso(start) == "2026-03-08T00:00:00+05:30"
    assert iso(end) == "2026-03-09T05:30:00+05:30"


def test_zone_names() -> None:
    assert periods.zone(None).key == "UTC"
    assert periods.zone("Asia/Kathmandu") == KATHMANDU
    for bad in ["Mars/Olympus", "localtime", "../etc/passwd", "", "asia/kolkata"]:
        with pytest.raises(BadRequest) as caught:
            periods.zone(bad)
        assert caught.value.field == "tz"


def test_range_order_and_length() -> None:
    start = utc(2026, 3, 1)
    periods.checked_range(start, start + timedelta(days=7), timedelta(days=7))
    for end in (start, start - timedelta(seconds=1), start + timedelta(days=7, seconds=1)):
        with pytest.raises(BadRequest) as caught:
            periods.checked_range(start, end, timedelta(days=7))
        assert caught.value.field == "to"
    assert "7 days" in str(caught.value)


def test_range_length_is_counted_on_the_local_wall_clock() -> None:
    # 400 local days from EDT into EST are 400 days and one hour in UTC.
    start = datetime(2026, 10, 20, tzinfo=NEW_YORK)
    end = datetime(2027, 11, 24, tzinfo=NEW_YORK)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(days=400, hours=1)
    periods.checked_range(start, end, timedelta(days=400), NEW_YORK)
    with pytest.raises(BadRequest):
        periods.checked_range(start.astimezone(UTC), end.astimezone(UTC), timedelta(days=400))


# ---- UTC spans


def test_spans_cover_the_range() -> None:
    assert clock.spans(utc(2026, 3, 7, 23, 59), utc(2026, 3, 9), "day") == [
        utc(2026, 3, 7),
        utc(2026, 3, 8),
    ]
    assert clock.spans(utc(2026, 11, 30), utc(2027, 1, 1, 0, 0, 1), "month") == [
        utc(2026, 11, 1),
        utc(2026, 12, 1),
        utc(2027, 1, 1),
    ]
    assert clock.spans(utc(2025, 6, 1), utc(2027, 1, 1), "year") == [
        utc(2025, 1, 1),
        utc(2026, 1, 1),
    ]
    # An offset is converted first: 00:30+05:30 is the previous UTC day.
    assert clock.span_start(datetime(2026, 1, 1, 0, 30, tzinfo=KOLKATA), "year") == utc(2025, 1, 1)


def test_ceil_to_window_boundaries() -> None:
    assert clock.ceil_to(utc(2026, 3, 8, 10, 0, 1), timedelta(minutes=1)) == utc(2026, 3, 8, 10, 1)
    assert clock.ceil_to(utc(2026, 3, 8, 10), timedelta(hours=1)) == utc(2026, 3, 8, 10)
    assert clock.ceil_to(utc(2026, 12, 31, 0, 0, 1), timedelta(days=1)) == utc(2027, 1, 1)


# ---- local periods


def local_periods(granularity: str, start: str, end: str, zone: ZoneInfo) -> list[periods.Period]:
    """The periods over [start, end), both wall-clock times in `zone`."""
    bounds = [datetime.fromisoformat(t).replace(tzinfo=zone) for t in (start, end)]
    return periods.periods(granularity, *bounds, zone)


def test_kolkata_days_across_a_month_end() -> None:
    found = local_periods("day", "2026-01-31", "2026-02-02", KOLKATA)
    assert spans_of(found) == [
        ("2026-01-31T00:00:00+05:30", "2026-02-01T00:00:00+05:30"),
        ("2026-02-01T00:00:00+05:30", "2026-02-02T00:00:00+05:30"),
    ]
    assert found[1].start.astimezone(UTC) == utc(2026, 1, 31, 18, 30)


def test_kathmandu_quarter_hour_offset() -> None:
    (day,) = local_periods("day", "2026-06-01", "2026-06-02", KATHMANDU)
    assert day.start.astimezone(UTC) == utc(2026, 5, 31, 18, 15)
    assert day.end.astimezone(UTC) == utc(2026, 6, 1, 18, 15)


def test_new_york_spring_forward_day_is_23_hours() -> None:
    found = local_periods("day", "2026-03-07", "2026-03-10", NEW_YORK)
    assert spans_of(found) == [
        ("2026-03-07T00:00:00-05:00", "2026-03-08T00:00:00-05:00"),
        ("2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"),
        ("2026-03-09T00:00:00-04:00", "2026-03-10T00:00:00-04:00"),
    ]
    assert [p.end.astimezone(UTC) - p.start.astimezone(UTC) for p in found] == [
        timedelta(hours=24),
        timedelta(hours=23),
        timedelta(hours=24),
    ]


def test_new_york_fall_back_day_is_25_hours() -> None:
    (day,) = local_periods("day", "2026-11-01", "2026-11-02", NEW_YORK)
    assert (iso(day.start), iso(day.end)) == (
        "2026-11-01T00:00:00-04:00",
        "2026-11-02T00:00:00-05:00",
    )
    assert day.end.astimezone(UTC) - day.start.astimezone(UTC) == timedelta(hours=25)


def test_iso_week_spanning_the_year_end() -> None:
    found = local_periods("week", "2026-12-31T15:00", "2027-01-05", KOLKATA)
    assert spans_of(found) == [
        ("2026-12-28T00:00:00+05:30", "2027-01-04T00:00:00+05:30"),
        ("2027-01-04T00:00:00+05:30", "2027-01-11T00:00:00+05:30"),
    ]


def test_months_are_local_calendar_months() -> None:
    found = local_periods("month", "2026-10-15", "2026-12-01", NEW_YORK)
    assert spans_of(found) == [
        ("2026-10-01T00:00:00-04:00", "2026-11-01T00:00:00-04:00"),
        ("2026-11-01T00:00:00-04:00", "2026-12-01T00:00:00-05:00"),
    ]


def test_a_day_whose_midnight_does_not_exist_starts_at_the_jump() -> None:
    # Santiago jumps from 00:00 to 01:00 on 2026-09-06 (at 04:00 UTC).
    santiago = ZoneInfo("America/Santiago")
    start = periods.local_start(date(2026, 9, 6), santiago)
    assert iso(start) == "2026-09-06T01:00:00-03:00"
    assert start.astimezone(UTC) == utc(2026, 9, 6, 4)


@given(
    zone_name=st.sampled_from(ZONES),
    day=st.dates(min_value=date(1990, 1, 1), max_value=date(2037, 12, 31)),
)
def test_local_start_is_the_first_instant_of_the_local_day(zone_name: str, day: date) -> None:
    zone = ZoneInfo(zone_name)
    start = periods.local_start(day, zone)
    assert start.astimezone(zone).date() == day
    # One real minute earlier (in UTC: aware arithmetic in `zone` is wall-clock
    # and would land on a local time that does not exist, e.g. Santiago
    # 2011-08-21 00:59).
    assert (start.astimezone(UTC) - timedelta(minutes=1)).astimezone(zone).date() < day
    # Every offset in use since 1990 is whole quarter hours, so every
    # boundary is one of the learning flow's bucket boundaries.
    assert start.astimezone(UTC).minute % 15 == 0


@given(
    zone_name=st.sampled_from(ZONES),
    granularity=st.sampled_from(["day", "week", "month"]),
    start=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
    ),
    length=st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=400)),
)
def test_periods_tile_the_range(
    zone_name: str, granularity: str, start: datetime, length: timedelta
) -> None:
    zone = ZoneInfo(zone_name)
    end = start + length
    found = periods.periods(granularity, start, end, zone)
    assert found[0].start <= start < found[0].end
    assert found[-1].start < end <= found[-1].end
    for before, after in pairwise(found):
        assert before.end == after.start
    for period in found:
        local = period.start.astimezone(zone)
        if granularity == "week":
            assert local.isoweekday() == 1
        if granularity == "month":
            assert local.day == 1
