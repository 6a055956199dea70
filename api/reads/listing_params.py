"""The query parameters of the listing endpoints (api/resources/listings.py):
their documented shapes and their checks, each refusal a 400 naming it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

import msgspec

from api.edge.problems import BadRequest
from api.reads import periods, query
from api.shapes import ID_PATTERN, Id
from cql.clock import to_stored_time

LIMIT_DEFAULT, LIMIT_MAX = 50, 100
UTC_ZONE = ZoneInfo("UTC")

Limit = Annotated[str | None, query.page_limit("rows", LIMIT_MAX, LIMIT_DEFAULT)]
PageToken = Annotated[str | None, query.PAGE_TOKEN]
Prefix = Annotated[
    str | None,
    query.param(
        "Only learners whose id starts with this",
        type=query.STRING,
        pattern=ID_PATTERN,
        max_length=128,
    ),
]
DayFrom = Annotated[
    str | None,
    query.param(
        "Start of the range (inclusive): a date (its start in UTC) or RFC 3339 with an offset",
        name="from",
        required=True,
        one_of=[query.DATE, query.DATE_TIME],
    ),
]
DayTo = Annotated[
    str | None,
    query.param(
        "End of the range (exclusive): a date (its start in UTC) or RFC 3339 with an offset",
        required=True,
        one_of=[query.DATE, query.DATE_TIME],
    ),
]


def utterance_range(
    from_: str | None, to: str | None, longest: timedelta
) -> tuple[datetime, datetime]:
    """[from, to) as stored (naive UTC, milliseconds, rounded up so that
    `ts >= from` and `ts < to` mean the same for stored times)."""
    start = periods.day_or_instant(from_, "from", UTC_ZONE).astimezone(UTC)
    end = periods.day_or_instant(to, "to", UTC_ZONE).astimezone(UTC)
    periods.checked_range(start, end, longest)
    return _stored_ceil(start), _stored_ceil(end)


def _stored_ceil(moment: datetime) -> datetime:
    stored = to_stored_time(moment)
    return stored if stored == moment.replace(tzinfo=None) else stored + timedelta(milliseconds=1)


def page_size(raw: str | None) -> int:
    """The rows a page holds: `limit`, or the default."""
    return query.integer(raw, "limit", 1, LIMIT_MAX, LIMIT_DEFAULT)


def prefix(raw: str | None) -> str:
    if raw is None:
        return ""
    try:
        return msgspec.convert(raw, Id)
    except msgspec.ValidationError:
        raise BadRequest(
            "`prefix` must be the start of a user_id: 1-128 characters, letters, digits"
            " and . _ : @ -, starting with a letter or digit.",
            field="prefix",
        ) from None
