"""GET /v1/users/{user_id}/learning against the real Cassandra, with the
quarter-hour buckets seeded directly. Each expected answer is worked out
here from the seeded events: an event's local date (and from it the ISO
week or month) decides its period, with no bucket arithmetic at all."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Tenant, new_tenant
from tests.helpers import Served, bad_values
from tests.served_seed import Seeder, own_flows, utc

WATERMARK = utc(2026, 11, 20)
# (instant, words): one utterance each
Event = tuple[datetime, int]
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def learning(client, tenant: Tenant, db) -> Served:
    """The endpoint as `tenant`, with the (test's own) dataflow watermark at WATERMARK."""
    own_flows(client, db, position=WATERMARK)
    return Served(client, tenant, "learning")


def learner_with(seed: Seeder, events: list[Event]) -> str:
    """A new learner with what the learning flow would write for `events`:
    per quarter hour, the number of utterances and their words."""
    user_id = seed.learner()
    buckets: dict[datetime, list[int]] = {}
    for moment, words in events:
        utc_moment = moment.astimezone(UTC)
        start = utc_moment.replace(
            minute=utc_moment.minute - utc_moment.minute % 15, second=0, microsecond=0
        )
        entries_words = buckets.setdefault(start, [0, 0])
        entries_words[0] += 1
        entries_words[1] += words
    for start, (entries, words) in buckets.items():
        seed.learning_bucket(user_id, start, entries, words)
    return user_id


def period_key(moment: datetime, zone: ZoneInfo, granularity: str) -> date:
    local = moment.astimezone(zone).date()
    if granularity == "week":
        year, week, _ = local.isocalendar()
        return date.fromisocalendar(year, week, 1)
    if granularity == "month":
        return local.replace(day=1)
    return local


def expected_totals(
    events: list[Event], zone: ZoneInfo, granularity: str
) -> dict[date, tuple[int, int]]:
    entries: Counter[date] = Counter()
    words: Counter[date] = Counter()
    for moment, n in events:
        key = period_key(moment, zone, granularity)
        entries[key] += 1
        words[key] += n
    return {key: (entries[key], words[key]) for key in entries}


def check_periods(
    body: dict[str, Any], events: list[Event], zone: ZoneInfo, granularity: str, starts: list[str]
) -> None:
    """The listed periods start exactly at `starts` (local times with their
    offsets) and hold the events' totals; the others are zero."""
    assert [p["period_start"] for p in body["periods"]] == starts
    totals = expected_totals(events, zone, granularity)
    for period in body["periods"]:
        key = datetime.fromisoformat(period["period_start"]).date()
        entries, words = totals.pop(key, (0, 0))
        assert (period["entries"], period["total_words"]) == (entries, words), period
        assert period["average_words"] == (round(words / entries, 2) if entries else 0)
    assert totals == {}, "events outside the listed periods"


async def test_kolkata_days_across_a_month_end(learning, seed) -> None:
    events: list[Event] = [
        (utc(2026, 1, 30, 18, 30), 4),  # 00:00 on the 31st in Kolkata
        (utc(2026, 1, 31, 18, 29), 2),  # 23:59 on the 31st
        (utc(2026, 1, 31, 18, 30), 5),  # 00:00 on 1 February, still January in UTC
        (utc(2026, 2, 1, 3), 1),
        (utc(2026, 2, 1, 3, 5), 2),
    ]
    user_id = learner_with(seed, events)
    body = await learning.ok(
        user_id, granularity="day", from_="2026-01-30", to="2026-02-03", tz="Asia/Kolkata"
    )
    assert (body["tz"], body["from"], body["to"]) == (
        "Asia/Kolkata",
        "2026-01-30T00:00:00+05:30",
        "2026-02-03T00:00:00+05:30",
    )
    assert body["as_of"] == "2026-11-20T00:00:00Z"
    starts = [f"2026-{d}T00:00:00+05:30" for d in ("01-30", "01-31", "02-01", "02-02")]
    check_periods(body, events, ZoneInfo("Asia/Kolkata"), "day", starts)
    assert [p["period_end"] for p in body["periods"]][-1] == "2026-02-03T00:00:00+05:30"
    assert body["periods"][2]["average_words"] == 2.67


async def test_kathmandu_quarter_hour_offset(learning, seed) -> None:
    events: list[Event] = [
        (utc(2026, 6, 1, 18, 14), 3),  # 23:59 on 1 June at +05:45 (bucket 18:00 UTC)
        (utc(2026, 6, 1, 18, 15), 7),  # 00:00 on 2 June
    ]
    user_id = learner_with(seed, events)
    body = await learning.ok(
        user_id, granularity="day", from_="2026-06-01", to="2026-06-03", tz="Asia/Kathmandu"
    )
    starts = ["2026-06-01T00:00:00+05:45", "2026-06-02T00:00:00+05:45"]
    check_periods(body, events, ZoneInfo("Asia/Kathmandu"), "day", starts)
    assert [p["total_words"] for p in body["periods"]] == [3, 7]


@pytest.mark.parametrize(
    ("day", "events", "starts", "hours"),
    [
        (
            "2026-03-08",  # spring forward: 23 hours
            [
                (utc(2026, 3, 8, 4, 59), 1),
                (utc(2026, 3, 8, 5), 2),
                (utc(2026, 3, 9, 3, 45), 3),
                (utc(2026, 3, 9, 4), 4),
            ],
            ["2026-03-07T00:00:00-05:00", "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"],
            [24, 23, 24],
        ),
        (
            "2026-11-01",  # fall back: 25 hours, 01:30 happens twice
            [
                (utc(2026, 11, 1, 3, 59), 1),
                (utc(2026, 11, 1, 5, 30), 2),
                (utc(2026, 11, 1, 6, 30), 3),
                (utc(2026, 11, 2, 4, 45), 4),
                (utc(2026, 11, 2, 5), 5),
            ],
            ["2026-10-31T00:00:00-04:00", "2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"],
            [24, 25, 24],
        ),
    ],
)
async def test_new_york_daylight_saving_days(
    learning, seed, day: str, events: list[Event], starts: list[str], hours: list[int]
) -> None:
    user_id = learner_with(seed, events)
    middle = date.fromisoformat(day)
    body = await learning.ok(
        user_id,
        granularity="day",
        tz="America/New_York",
        from_=str(middle - timedelta(days=1)),
        to=str(middle + timedelta(days=2)),
    )
    check_periods(body, events, NEW_YORK, "day", starts)
    lengths = [
        (datetime.fromisoformat(p["period_end"]) - datetime.fromisoformat(p["period_start"]))
        / timedelta(hours=1)
        for p in body["periods"]
    ]
    assert lengths == hours


async def test_iso_week_spanning_the_year_end(learning, seed) -> None:
    events: list[Event] = [
        (utc(2026, 12, 27, 23), 1),  # Sunday: the week before
        (utc(2026, 12, 28, 0), 2),  # Monday 00:00 UTC
        (utc(2026, 12, 31, 23, 45), 3),  # UTC December partition
        (utc(2027, 1, 1, 0), 4),  # UTC January partition, same ISO week 2026-W53
        (utc(2027, 1, 3, 23, 59), 5),  # Sunday, last minute of the week
        (utc(2027, 1, 4, 0), 6),  # the next week
    ]
    user_id = learner_with(seed, events)
    body = await learning.ok(user_id, granularity="week", from_="2026-12-20", to="2027-01-10")
    assert body["tz"] == "UTC"
    mondays = ["2026-12-14", "2026-12-21", "2026-12-28", "2027-01-04"]
    check_periods(body, events, ZoneInfo("UTC"), "week", [f"{d}T00:00:00Z" for d in mondays])
    assert body["periods"][2]["entries"] == 4
    assert body["periods"][2]["period_end"] == "2027-01-04T00:00:00Z"


async def test_local_months_in_new_york(learning, seed) -> None:
    events: list[Event] = [
        (utc(2026, 2, 1, 4, 30), 3),  # 23:30 on 31 January in New York
        (utc(2026, 2, 1, 5), 4),  # 00:00 on 1 February
        (utc(2026, 3, 8, 12), 5),
        (utc(2026, 4, 1, 3, 59), 6),  # 23:59 on 31 March (EDT)
    ]
    user_id = learner_with(seed, events)
    body = await learning.ok(
        user_id, granularity="month", from_="2026-01-15", to="2026-03-15", tz="America/New_York"
    )
    # March is listed whole (it overlaps the range), so its last evening counts.
    starts = [f"2026-{m}-01T00:00:00-05:00" for m in ("01", "02", "03")]
    check_periods(body, events, NEW_YORK, "month", starts)
    assert body["periods"][-1]["period_end"] == "2026-04-01T00:00:00-04:00"


async def test_timestamps_as_bounds_and_empty_periods(client, db, learning, seed) -> None:
    own_flows(client, db, position=None)
    body = await learning.ok(
        seed.learner(),
        granularity="day",
        from_="2026-05-10T12:00:00+02:00",
        to="2026-05-12T00:00:00Z",
        tz="Europe/Paris",
    )
    assert body["as_of"] is None
    # 12:00 on the 10th to 02:00 on the 12th in Paris: three local days.
    assert body["periods"] == [
        {
            "period_start": f"2026-05-{d}T00:00:00+02:00",
            "period_end": f"2026-05-{d + 1}T00:00:00+02:00",
            "entries": 0,
            "total_words": 0,
            "average_words": 0.0,
            "late_events": 0,
        }
        for d in (10, 11, 12)
    ]
    # The answer's bounds are the ones really counted: whole local days.
    assert (body["from"], body["to"]) == ("2026-05-10T00:00:00+02:00", "2026-05-13T00:00:00+02:00")


async def test_five_minutes_get_their_whole_day_and_its_bounds(learning, seed) -> None:
    user_id = learner_with(seed, [(utc(2026, 5, 10, 1), 4), (utc(2026, 5, 10, 23, 59), 6)])
    body = await learning.ok(
        user_id, granularity="day", from_="2026-05-10T10:00:00Z", to="2026-05-10T10:05:00Z"
    )
    assert (body["from"], body["to"]) == ("2026-05-10T00:00:00Z", "2026-05-11T00:00:00Z")
    assert [(p["entries"], p["total_words"]) for p in body["periods"]] == [(2, 10)]


async def test_unknown_learner_is_404_and_tenants_are_apart(client, db, learning, seed) -> None:
    user_id = learner_with(seed, [(utc(2026, 5, 10, 12), 9)])
    query = {"granularity": "day", "from_": "2026-05-10", "to": "2026-05-11"}
    assert (await learning("nobody", **query)).status_code == 404
    other = new_tenant(db)
    as_other = Served(client, other, "learning")
    assert (await as_other(user_id, **query)).status_code == 404
    Seeder(db, other.name).learner(user_id)
    assert (await as_other(user_id, **query)).json()["periods"][0]["entries"] == 0
    assert (await learning(user_id, **query)).json()["periods"][0]["entries"] == 1


async def test_four_hundred_days_at_most(client, db, learning, seed) -> None:
    own_flows(client, db, position=None)
    user_id = seed.learner()
    query = {"granularity": "month", "from_": "2025-10-20", "tz": "America/New_York"}
    assert len((await learning.ok(user_id, to="2026-11-24", **query))["periods"]) == 14
    r = await learning(user_id, to="2026-11-25", **query)
    assert r.status_code == 400
    assert r.json()["field"] == "to"
    assert "400 days" in r.json()["detail"]


GOOD = {"granularity": "day", "from": "2026-05-01", "to": "2026-05-08", "tz": "Asia/Kolkata"}


# Each parameter's bad values (None: left out); a `to` equal to or before `from` too.
BAD = {
    "granularity": [None, "year"],
    "from": [None, "2026-05-01T00:00:00", "2026-5-1", "2026-02-30"],
    "to": [None, "2026-05-01", "2026-04-30"],
    "tz": ["Mars/Olympus", "IST", ""],
    "timezone": ["UTC"],
}


@pytest.mark.parametrize(("field", "value"), bad_values(BAD))
async def test_bad_parameters_are_400_naming_the_parameter(learning, seed, field, value) -> None:
    await learning.assert_bad_parameter(seed.learner(), GOOD | {field: value}, field)
