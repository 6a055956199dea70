"""GET /errors and /errors/top in a time zone, and month windows, against
the real Cassandra with the served rows seeded directly: a local day or
month must be summed from exactly the stored windows that make it up, so
each test also seeds rows of the kinds that must not be read, with counts
that would show if they were."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Tenant
from tests.helpers import Served
from tests.served_seed import Seeder, own_flows, utc

WATERMARK = utc(2026, 11, 1)
DECOY = 1000  # the count of rows that must not be read


@pytest.fixture
def errors(client, tenant: Tenant, db) -> Served:
    own_flows(client, db, position=WATERMARK)
    return Served(client, tenant, "errors")


@pytest.fixture
def top(client, tenant: Tenant, db) -> Served:
    own_flows(client, db, position=WATERMARK)
    return Served(client, tenant, "errors/top")


def counts(body: dict) -> list[tuple[str, str, int]]:
    """(window_start, window_end, total count) of each listed window."""
    return [
        (w["window_start"], w["window_end"], sum(c["count"] for c in w["counts"]))
        for w in body["windows"]
    ]


async def test_paris_days_are_summed_from_hour_windows(errors, seed: Seeder) -> None:
    user_id = seed.learner()
    # Paris is +01:00 in January: its 10th is [9th 23:00Z, 10th 23:00Z).
    for hour, count in ((utc(2026, 1, 9, 22), 1), (utc(2026, 1, 9, 23), 2)):
        seed.error_count(user_id, "hour", hour, "grammar", "articles", count)
    seed.error_count(user_id, "hour", utc(2026, 1, 10, 22), "grammar", "tense", 4, late_events=1)
    seed.error_count(user_id, "hour", utc(2026, 1, 10, 23), "grammar", "articles", 8)
    seed.error_count(user_id, "day", utc(2026, 1, 10), "grammar", "articles", DECOY)
    body = await errors.ok(
        user_id, window="day", from_="2026-01-10", to="2026-01-12", tz="Europe/Paris"
    )
    assert (body["from"], body["to"], body["tz"]) == (
        "2026-01-10T00:00:00+01:00",
        "2026-01-12T00:00:00+01:00",
        "Europe/Paris",
    )
    assert counts(body) == [
        ("2026-01-10T00:00:00+01:00", "2026-01-11T00:00:00+01:00", 6),
        ("2026-01-11T00:00:00+01:00", "2026-01-12T00:00:00+01:00", 8),
    ]
    first = body["windows"][0]
    assert first["counts"] == [
        {"category": "grammar", "subcategory": "articles", "count": 2},
        {"category": "grammar", "subcategory": "tense", "count": 4},
    ]
    assert first["late_events"] == 1


async def test_kolkata_days_are_summed_from_minute_windows(errors, seed: Seeder) -> None:
    user_id = seed.learner()
    # Kolkata is +05:30: its 8 March is [7th 18:30Z, 8th 18:30Z).
    for minute, count in (
        (utc(2026, 3, 7, 18, 29), 1),
        (utc(2026, 3, 7, 18, 30), 2),
        (utc(2026, 3, 8, 18, 29), 4),
        (utc(2026, 3, 8, 18, 30), 8),
    ):
        seed.error_count(user_id, "minute", minute, "vocabulary", "word choice", count)
    seed.error_count(user_id, "hour", utc(2026, 3, 8, 12), "vocabulary", "word choice", DECOY)
    seed.error_count(user_id, "day", utc(2026, 3, 8), "vocabulary", "word choice", DECOY)
    body = await errors.ok(
        user_id, window="day", from_="2026-03-08", to="2026-03-09", tz="Asia/Kolkata"
    )
    assert counts(body) == [("2026-03-08T00:00:00+05:30", "2026-03-09T00:00:00+05:30", 6)]
    # Summed from minute windows, the range is the minute windows' longest.
    week = await errors(
        user_id, window="day", from_="2026-03-01", to="2026-03-08", tz="Asia/Kolkata"
    )
    assert week.status_code == 200, week.text
    await errors.assert_bad_parameter(
        user_id,
        {"window": "day", "from": "2026-03-01", "to": "2026-03-09", "tz": "Asia/Kolkata"},
        "to",
    )


async def test_a_time_within_a_local_day_gets_the_whole_day_and_says_so(
    errors, seed: Seeder
) -> None:
    user_id = seed.learner()
    seed.error_count(user_id, "hour", utc(2026, 6, 1, 4), "grammar", "articles", 3)
    body = await errors.ok(
        user_id,
        window="day",
        from_="2026-06-01T10:00:00+02:00",
        to="2026-06-01T10:05:00+02:00",
        tz="Europe/Paris",
    )
    assert (body["from"], body["to"]) == ("2026-06-01T00:00:00+02:00", "2026-06-02T00:00:00+02:00")
    assert counts(body) == [("2026-06-01T00:00:00+02:00", "2026-06-02T00:00:00+02:00", 3)]


async def test_utc_months_are_the_stored_month_rows(errors, seed: Seeder) -> None:
    user_id = seed.learner()
    for month, count in ((utc(2026, 1, 1), 5), (utc(2026, 2, 1), 7), (utc(2026, 3, 1), 11)):
        seed.error_count(user_id, "month", month, "spelling", "capitals", count)
    seed.error_count(user_id, "day", utc(2026, 1, 20), "spelling", "capitals", DECOY)
    body = await errors.ok(user_id, window="month", from_="2026-01-15", to="2026-03-01")
    assert (body["window"], body["from"], body["to"]) == (
        "month",
        "2026-01-01T00:00:00Z",
        "2026-03-01T00:00:00Z",
    )
    assert counts(body) == [
        ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", 5),
        ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", 7),
    ]


async def test_new_york_months_are_summed_from_hour_windows(errors, seed: Seeder) -> None:
    user_id = seed.learner()
    # New York is -05:00 in winter: its February starts at 1 Feb 05:00Z.
    seed.error_count(user_id, "hour", utc(2026, 2, 1, 4), "grammar", "articles", 1)
    seed.error_count(user_id, "hour", utc(2026, 2, 1, 5), "grammar", "articles", 2)
    seed.error_count(user_id, "month", utc(2026, 2, 1), "grammar", "articles", DECOY)
    seed.error_count(user_id, "day", utc(2026, 2, 1), "grammar", "articles", DECOY)
    body = await errors.ok(
        user_id, window="month", from_="2026-01-01", to="2026-03-01", tz="America/New_York"
    )
    assert counts(body) == [
        ("2026-01-01T00:00:00-05:00", "2026-02-01T00:00:00-05:00", 1),
        ("2026-02-01T00:00:00-05:00", "2026-03-01T00:00:00-05:00", 2),
    ]
    await errors.assert_bad_parameter(
        user_id,
        {"window": "month", "from": "2026-01-01", "to": "2026-06-01", "tz": "America/New_York"},
        "to",
    )


async def test_a_category_filter_ignores_case(errors, seed: Seeder) -> None:
    user_id = seed.learner()
    seed.error_count(user_id, "hour", utc(2026, 4, 1, 9), "grammar", "past tense", 2)
    seed.error_count(user_id, "hour", utc(2026, 4, 1, 9), "vocabulary", "word choice", 3)
    body = await errors.ok(
        user_id,
        window="hour",
        from_="2026-04-01",
        to="2026-04-02",
        category="GRAMMAR",
        subcategory="Past Tense",
    )
    assert [w["counts"] for w in body["windows"]] == [
        [{"category": "grammar", "subcategory": "past tense", "count": 2}]
    ]


async def test_minute_windows_are_shown_in_the_zone(errors, seed: Seeder) -> None:
    user_id = seed.learner()
    seed.error_count(user_id, "minute", utc(2026, 4, 1, 9, 7), "grammar", "articles", 2)
    body = await errors.ok(
        user_id,
        window="minute",
        from_="2026-04-01T14:37:30+05:30",
        to="2026-04-01T14:38:00+05:30",
        tz="Asia/Kolkata",
    )
    assert (body["from"], body["to"]) == ("2026-04-01T14:37:00+05:30", "2026-04-01T14:38:00+05:30")
    assert counts(body) == [("2026-04-01T14:37:00+05:30", "2026-04-01T14:38:00+05:30", 2)]


# ---- top errors since a local day


@pytest.mark.parametrize(
    ("zone", "head_kind", "before", "first"),
    [
        # Tokyo (+09:00) days begin at 15:00 UTC: the rest of that UTC day
        # is read from hour windows.
        ("Asia/Tokyo", "hour", timedelta(hours=14), timedelta(hours=15)),
        # Kolkata (+05:30) days begin at 18:30 UTC: from minute windows.
        (
            "Asia/Kolkata",
            "minute",
            timedelta(hours=18, minutes=29),
            timedelta(hours=18, minutes=30),
        ),
    ],
)
async def test_top_since_counts_from_the_local_midnight(
    top, seed: Seeder, zone: str, head_kind: str, before: timedelta, first: timedelta
) -> None:
    user_id = seed.learner()
    since = datetime.now(ZoneInfo(zone)).date() - timedelta(days=10)
    utc_day_before = datetime(since.year, since.month, since.day, tzinfo=UTC) - timedelta(days=1)
    seed.error_count(user_id, head_kind, utc_day_before + before, "grammar", "articles", DECOY)
    seed.error_count(user_id, head_kind, utc_day_before + first, "grammar", "articles", 2)
    seed.error_count(user_id, "day", utc_day_before, "grammar", "articles", DECOY)
    seed.error_count(user_id, "day", utc_day_before + timedelta(days=1), "grammar", "articles", 3)
    seed.error_count(user_id, "day", utc_day_before + timedelta(days=5), "grammar", "tense", 4)
    body = await top.ok(user_id, since=str(since), tz=zone)
    assert body["errors"] == [
        {"category": "grammar", "subcategory": "articles", "count": 5},
        {"category": "grammar", "subcategory": "tense", "count": 4},
    ]
    local_midnight = datetime(since.year, since.month, since.day, tzinfo=ZoneInfo(zone))
    assert (body["since"], body["tz"], body["from"]) == (
        str(since),
        zone,
        local_midnight.isoformat(),
    )


async def test_top_since_a_bad_zone_is_400_naming_tz(top, seed: Seeder) -> None:
    r = await top(seed.learner(), since="2026-11-01", tz="Europe/Atlantis")
    assert r.status_code == 400
    assert r.json()["field"] == "tz"


# ---- one rule for learners and dates on every per-learner read


@pytest.mark.parametrize(
    ("resource", "params"),
    [
        ("errors", {"window": "minute", "from": "2026-03-01", "to": "2026-03-02"}),
        (
            "errors",
            {"window": "month", "from": "2026-01-01", "to": "2026-03-01", "tz": "Asia/Tokyo"},
        ),
        ("errors/top", {"since": str(datetime.now(UTC).date()), "tz": "Asia/Kolkata"}),
        ("learning", {"granularity": "day", "from": "2026-03-01", "to": "2026-03-02"}),
    ],
)
async def test_an_unknown_learner_is_404_everywhere_dates_are_taken(
    client, tenant: Tenant, db, resource: str, params: dict
) -> None:
    own_flows(client, db, position=None)
    served = Served(client, tenant, resource)
    r = await served("nobody", **params)
    assert r.status_code == 404, r.text
    assert r.json()["field"] == "user_id"
