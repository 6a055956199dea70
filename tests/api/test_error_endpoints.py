"""GET /v1/users/{user_id}/errors and /errors/top against the real
Cassandra, with the served tables seeded directly (tests/served_seed.py)
and every expected answer worked out here from the seeded facts."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from api.edge.problems import BadRequest
from api.reads import windows
from api.reads.errors import since_slices
from tests.conftest import Tenant, new_tenant
from tests.helpers import Served, bad_values
from tests.served_seed import Seeder, own_flows, utc

WATERMARK = utc(2026, 11, 1)
# (window_start, category, subcategory, count, late_events, as_of)
Fact = tuple[datetime, str, str, int, int, datetime]


@pytest.fixture
def errors(client, tenant: Tenant, db) -> Served:
    """GET /errors as `tenant`, with the (test's own) dataflow watermark at WATERMARK."""
    own_flows(client, db, position=WATERMARK)
    return Served(client, tenant, "errors")


@pytest.fixture
def top(client, tenant: Tenant, db) -> Served:
    """GET /errors/top as `tenant`, with the dataflow watermark at WATERMARK."""
    own_flows(client, db, position=WATERMARK)
    return Served(client, tenant, "errors/top")


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def expected_windows(
    facts: list[Fact], start: datetime, end: datetime, step: timedelta, category: str | None = None
) -> list[dict[str, Any]]:
    by_start: dict[datetime, list[Fact]] = defaultdict(list)
    for fact in facts:
        if start <= fact[0] < end and category in (None, fact[1]):
            by_start[fact[0]].append(fact)
    return [
        {
            "window_start": z(begin),
            "window_end": z(begin + step),
            "counts": [
                {"category": c, "subcategory": s, "count": n}
                for _, c, s, n, _, _ in sorted(by_start[begin], key=lambda f: (f[1], f[2]))
            ],
            "late_events": sum(f[4] for f in by_start[begin]),
            "as_of": z(max(f[5] for f in by_start[begin])),
        }
        for begin in sorted(by_start)
    ]


def seed_facts(seed: Seeder, user_id: str, window: str, facts: list[Fact]) -> None:
    for start, category, subcategory, count, late, as_of in facts:
        seed.error_count(
            user_id, window, start, category, subcategory, count, late_events=late, as_of=as_of
        )


# ---- windows


async def test_minute_windows_across_two_utc_days(errors, seed) -> None:
    user_id = seed.learner()
    # Minute windows are counted from facts: each vouches for the watermark.
    facts: list[Fact] = [
        (utc(2026, 3, 7, 23, 58), "grammar", "past tense", 1, 0, WATERMARK),  # before `from`
        (utc(2026, 3, 7, 23, 59), "vocabulary", "word choice", 1, 1, WATERMARK),
        (utc(2026, 3, 7, 23, 59), "grammar", "past tense", 2, 0, WATERMARK),
        (utc(2026, 3, 8, 0, 0), "grammar", "articles", 4, 0, WATERMARK),
        (utc(2026, 3, 8, 0, 17), "grammar", "past tense", 3, 2, WATERMARK),
        (utc(2026, 3, 8, 0, 30), "grammar", "articles", 1, 0, WATERMARK),  # at `to`: excluded
    ]
    seed_facts(seed, user_id, "minute", facts)
    # 05:29+05:30 is 23:59 UTC on the 7th: the range spans two partitions.
    start, end = utc(2026, 3, 7, 23, 59), utc(2026, 3, 8, 0, 30)
    body = await errors.ok(
        user_id, window="minute", from_="2026-03-08T05:29:00+05:30", to="2026-03-08T00:30:00Z"
    )
    assert body["user_id"] == user_id
    assert body["window"] == "minute"
    assert (body["from"], body["to"]) == (z(start), z(end))
    assert body["as_of"] == z(WATERMARK)
    assert body["windows"] == expected_windows(facts, start, end, timedelta(minutes=1))
    assert len(body["windows"]) == 3  # only windows with counts are listed

    query = {"window": "minute", "from_": z(start), "to": z(end)}
    r = await errors(user_id, **query, category="grammar")
    assert r.json()["windows"] == expected_windows(
        facts, start, end, timedelta(minutes=1), "grammar"
    )
    r = await errors(user_id, **query, subcategory="word choice")
    assert [w["counts"] for w in r.json()["windows"]] == [
        [{"category": "vocabulary", "subcategory": "word choice", "count": 1}]
    ]


async def test_hour_windows_across_a_utc_month_boundary(errors, seed) -> None:
    user_id = seed.learner()
    facts: list[Fact] = [
        (utc(2026, 1, 31, 19), "grammar", "articles", 9, 0, WATERMARK),
        (utc(2026, 1, 31, 23), "grammar", "articles", 2, 0, WATERMARK),
        (utc(2026, 2, 1, 0), "spelling", "double letters", 5, 1, WATERMARK),
        (utc(2026, 2, 1, 3), "grammar", "articles", 1, 0, WATERMARK),
        (utc(2026, 2, 1, 4), "grammar", "articles", 7, 0, WATERMARK),
    ]
    seed_facts(seed, user_id, "hour", facts)
    start, end = utc(2026, 1, 31, 20), utc(2026, 2, 1, 4)
    body = await errors.ok(user_id, window="hour", from_=z(start), to=z(end))
    assert body["windows"] == expected_windows(facts, start, end, timedelta(hours=1))


async def test_day_windows_across_a_utc_year_boundary(errors, seed) -> None:
    user_id = seed.learner()
    facts: list[Fact] = [
        (utc(2025, 12, 30), "grammar", "articles", 9, 0, WATERMARK),
        (utc(2025, 12, 31), "grammar", "articles", 2, 3, WATERMARK),
        (utc(2026, 1, 1), "spelling", "double letters", 5, 0, WATERMARK),
        (utc(2026, 1, 2), "grammar", "articles", 1, 0, WATERMARK),
    ]
    seed_facts(seed, user_id, "day", facts)
    # Without `tz` a day window is a UTC day, and every one that overlaps the
    # range is listed whole: from 2025-12-31T00:00+05:30 (18:30 UTC on the
    # 30th) that starts with the 30th, and the answer says so.
    body = await errors.ok(
        user_id, window="day", from_="2025-12-31T00:00:00+05:30", to="2026-01-02T00:00:00Z"
    )
    expected = expected_windows(facts, utc(2025, 12, 30), utc(2026, 1, 2), timedelta(days=1))
    assert [w["window_start"] for w in expected] == [
        "2025-12-30T00:00:00Z",
        "2025-12-31T00:00:00Z",
        "2026-01-01T00:00:00Z",
    ]
    assert body["windows"] == expected
    assert (body["from"], body["to"], body["tz"]) == (
        "2025-12-30T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "UTC",
    )


async def test_a_learner_without_errors_gets_an_empty_list_and_an_unknown_one_404(
    client, db, errors, seed
) -> None:
    own_flows(client, db, position=None)
    query = {"window": "hour", "from_": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}
    body = await errors.ok(seed.learner(), **query)
    assert body["windows"] == []
    assert body["as_of"] is None  # the (test's) dataflow has recorded no progress
    r = await errors("nobody", **query)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == "user_id"


async def test_a_tenant_sees_only_its_own_learners(client, db, errors, seed) -> None:
    user_id = seed.learner()
    seed.error_count(user_id, "hour", utc(2026, 3, 1, 10), "grammar", "articles", 3)
    query = {"window": "hour", "from_": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}
    other = new_tenant(db)
    as_other = Served(client, other, "errors")
    assert (await as_other(user_id, **query)).status_code == 404
    Seeder(db, other.name).learner(user_id)  # the same id in another tenant
    r = await as_other(user_id, **query)
    assert r.status_code == 200
    assert r.json()["windows"] == []
    assert len((await errors(user_id, **query)).json()["windows"]) == 1


@pytest.mark.parametrize(
    ("window", "longest"),
    [
        ("minute", timedelta(days=7)),
        ("hour", timedelta(days=92)),
        ("day", timedelta(days=1096)),
        ("month", timedelta(days=1096)),
    ],
)
async def test_range_limits(client, db, errors, seed, window: str, longest: timedelta) -> None:
    own_flows(client, db, position=None)
    user_id = seed.learner()
    start, end = utc(2025, 1, 1), utc(2025, 1, 1) + longest
    await errors.ok(user_id, window=window, from_=z(start), to=z(end))
    too_long = await errors(
        user_id, window=window, from_=z(start), to=z(end + timedelta(minutes=1))
    )
    assert too_long.status_code == 400
    problem = too_long.json()
    assert problem["field"] == "to"
    assert f"{longest.days} days" in problem["detail"]


GOOD = {"window": "hour", "from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}
# Each parameter's bad values (None: left out); a `to` equal to or before `from` too.
BAD = {
    "window": [None, "week", "Hour"],
    "from": [None, "2026-03-01T00:00:00", "2026-3-1", "yesterday"],
    "to": [None, "2026-02-30T00:00:00Z", "2026-03-01T00:00:00Z", "2026-02-28T00:00:00Z"],
    "category": ["", " grammar"],
    "subcategory": ["x" * 65],
    "tz": ["Mars/Olympus", "utc", ""],
    "windw": ["hour"],
}


@pytest.mark.parametrize(("field", "value"), bad_values(BAD))
async def test_bad_parameters_are_400_naming_the_parameter(errors, seed, field, value) -> None:
    await errors.assert_bad_parameter(seed.learner(), GOOD | {field: value}, field)


# ---- top


async def test_top_all_time_is_ranked_by_count_then_labels(top, seed) -> None:
    user_id = seed.learner()
    totals = [
        ("vocabulary", "word choice", 5),
        ("grammar", "past tense", 5),
        ("grammar", "articles", 9),
        ("pronunciation", "th", 1),
        ("spelling", "capitals", 0),
    ]
    for category, subcategory, count in totals:
        seed.error_total(user_id, category, subcategory, count)
    ranked = [
        {"category": "grammar", "subcategory": "articles", "count": 9},
        {"category": "grammar", "subcategory": "past tense", "count": 5},
        {"category": "vocabulary", "subcategory": "word choice", "count": 5},
        {"category": "pronunciation", "subcategory": "th", "count": 1},
    ]
    body = await top.ok(user_id)
    assert body == {
        "user_id": user_id,
        "since": None,
        "as_of": z(WATERMARK),
        "errors": ranked,
        "tz": "UTC",
        "from": None,
    }
    assert (await top(user_id, limit=2)).json()["errors"] == ranked[:2]


async def test_top_since_counts_from_that_utc_day(top, seed) -> None:
    """Facts over the last 400 days, written as day rows and month rows the
    way the dataflow writes both; `since` must count each fact once."""
    user_id = seed.learner()
    today = datetime.now(UTC).date()
    labels = [("grammar", "articles"), ("grammar", "past tense"), ("vocabulary", "word choice")]
    facts = [
        (today - timedelta(days=ago), *labels[ago % 3], 1 + ago % 7)
        for ago in (400, 367, 366, 365, 200, 101, 100, 99, 70, 45, 40, 31, 30, 29, 15, 2, 1, 0)
    ]
    months: Counter[tuple[date, str, str]] = Counter()
    for day, category, subcategory, count in facts:
        seed.error_count(
            user_id, "day", utc(day.year, day.month, day.day), category, subcategory, count
        )
        months[day.replace(day=1), category, subcategory] += count
    for (month, category, subcategory), count in months.items():
        seed.error_count(
            user_id, "month", utc(month.year, month.month, 1), category, subcategory, count
        )

    def expected(since: date) -> dict[tuple[str, str], int]:
        totals: Counter[tuple[str, str]] = Counter()
        for day, category, subcategory, count in facts:
            if day >= since:
                totals[category, subcategory] += count
        return dict(totals)

    month_start = today.replace(day=1) - timedelta(days=62)
    for since in (
        today - timedelta(days=366),
        today - timedelta(days=100),
        month_start.replace(day=1),
        today - timedelta(days=1),
        today,
    ):
        body = await top.ok(user_id, since=since.isoformat())
        assert body["since"] == since.isoformat()
        assert {(e["category"], e["subcategory"]): e["count"] for e in body["errors"]} == expected(
            since
        ), since

    # A timestamp means its UTC day: 02:00 at +05:30 is the day before.
    since = today - timedelta(days=100)
    r = await top(user_id, since=f"{since + timedelta(days=1)}T02:00:00+05:30")
    assert r.json()["since"] == since.isoformat()


EPOCH = utc(1970, 1, 1)


@pytest.mark.parametrize(
    ("since", "today", "slices"),
    [
        (
            date(2026, 11, 5),
            date(2026, 11, 22),
            [("day", utc(2026, 1, 1), utc(2026, 11, 5), utc(2027, 1, 1))],
        ),
        (
            date(2026, 10, 1),
            date(2026, 11, 22),
            [
                ("month", EPOCH, utc(2026, 10, 1), utc(2026, 11, 1)),
                ("day", utc(2026, 1, 1), utc(2026, 11, 1), utc(2027, 1, 1)),
            ],
        ),
        (
            date(2025, 12, 15),
            date(2026, 1, 3),
            [
                ("day", utc(2025, 1, 1), utc(2025, 12, 15), utc(2026, 1, 1)),
                ("day", utc(2026, 1, 1), utc(2026, 1, 1), utc(2027, 1, 1)),
            ],
        ),
        (
            date(2025, 11, 30),
            date(2026, 11, 22),
            [
                ("day", utc(2025, 1, 1), utc(2025, 11, 30), utc(2025, 12, 1)),
                ("month", EPOCH, utc(2025, 12, 1), utc(2026, 11, 1)),
                ("day", utc(2026, 1, 1), utc(2026, 11, 1), utc(2027, 1, 1)),
            ],
        ),
    ],
)
def test_since_reads_month_rows_for_whole_months_and_day_rows_for_the_rest(
    since: date, today: date, slices: list
) -> None:
    assert since_slices(since, today) == slices


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"since": "last week"}, "since"),
        ({"since": str(datetime.now(UTC).date() - timedelta(days=367))}, "since"),
        ({"since": str(datetime.now(UTC).date() + timedelta(days=1))}, "since"),
        ({"top": "3"}, "top"),
    ],
)
async def test_top_bad_parameters_are_400_naming_the_parameter(
    top, seed, params: dict, field: str
) -> None:
    r = await top(seed.learner(), **params)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field


async def test_top_of_an_unknown_learner_is_404_and_of_a_quiet_one_empty(
    client, db, top, seed
) -> None:
    own_flows(client, db, position=None)
    assert (await top("nobody")).status_code == 404
    r = await top(seed.learner(), since=str(datetime.now(UTC).date()))
    assert r.status_code == 200
    assert r.json()["errors"] == []


async def test_the_endpoints_are_in_the_openapi_document(client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    windows = schema["paths"]["/v1/users/{user_id}/errors"]["get"]
    assert windows["operationId"] == "getErrorCounts"
    params = {p["name"]: p for p in windows["parameters"]}
    assert params["window"]["required"] and params["window"]["schema"]["enum"] == [
        "minute",
        "hour",
        "day",
        "month",
    ]
    formats = [s["format"] for s in params["from"]["schema"]["oneOf"]]
    assert params["from"]["required"] and formats == ["date", "date-time"]
    assert "tz" in params
    assert not params["category"]["required"]
    assert "Only windows with at least one error are listed" in windows["description"]
    top_op = schema["paths"]["/v1/users/{user_id}/errors/top"]["get"]
    assert {p["name"]: p for p in top_op["parameters"]}["limit"]["schema"]["maximum"] == 100


@pytest.mark.parametrize("window", ["day", "month"])
def test_a_range_of_millennia_is_refused_before_its_periods_are_listed(
    monkeypatch: pytest.MonkeyPatch, window: str
) -> None:
    """Listing the local days from 1970 to 9998 first held a worker for
    over a minute (the API fuzz test's request timed out) before its 400."""

    def listed(*args: object) -> None:
        raise AssertionError("periods listed before the range was checked")

    monkeypatch.setattr(windows.periods, "periods", listed)
    start, end = utc(1970, 1, 1), utc(9998, 12, 31)
    with pytest.raises(BadRequest) as refused:
        windows.plan(window, start, end, ZoneInfo("Asia/Kolkata"))
    assert refused.value.field == "to"
