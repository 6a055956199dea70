"""GET /v1/users/{user_id}/errors and /errors/top: a learner's error counts
per minute, hour or day window, and their most frequent errors, read from
the tables the error-counter dataflow serves (cql/schema/005)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import FromPath

from api.edge.problems import KEYED, BadRequest, problem_responses
from api.reads import periods, query
from api.reads.errors import TopQuery, WindowsQuery, error_windows, top_errors
from api.reads.shapes import ErrorWindows, TopErrors
from api.reads.windows import STORED, plan
from api.services import PrincipalDep, ServicesDep
from api.shapes import LABEL_CASE, LABEL_PATTERN

SINCE_DAYS = 366
TOP_DEFAULT, TOP_MAX = 10, 100
_DAYS = {kind: stored.longest.days for kind, stored in STORED.items()}
WINDOWS_DOC = f"""\
The learner's error counts per (category, subcategory) in windows of a
minute, an hour, a local day or a local month (in `tz`, an IANA name,
default UTC): every window that overlaps [`from`, `to`), whole. The answer's
`from` and `to` are the bounds of those windows, the range really counted.

Only windows with at least one error are listed (a day of minute windows
would otherwise be 1,440 mostly empty entries). Each listed window says when
it was last counted (`as_of`, never earlier than the newest utterance
counted in it) and how many late events it holds; the answer's `as_of` is
the dataflow's watermark, so a window that ends before it and is not listed
had no errors.

`from` and `to` are each a date YYYY-MM-DD, meaning the start of that day in
`tz`, or an RFC 3339 timestamp with an offset. Minute and hour windows are
UTC ones, shown in `tz` (minutes counted from the stored error points). A
local day or month is summed from the coarsest UTC windows that start at
each of its midnights: UTC days or months when they are UTC midnights, hours
when they fall on whole UTC hours (e.g. Europe/Paris), minutes otherwise
(e.g. Asia/Kolkata, +05:30). The
longest range is that of the windows read: {_DAYS["minute"]} days for minutes,
{_DAYS["hour"]} days for hours, {_DAYS["day"]} days for UTC days and
{_DAYS["month"]} days for UTC months.

`category` and `subcategory` keep only the counts with that label; labels
are case-insensitive (stored in lower case). A learner that does not exist
is 404; one without errors gets an empty list. Answers about windows that
are over are served from a cache that a late event invalidates at once.
"""

TOP_DOC = f"""\
The learner's most frequent (category, subcategory) pairs, most frequent
first (ties by category, then subcategory), at most `limit` of them
(1 to {TOP_MAX}, default {TOP_DEFAULT}).

Without `since`, all time. With `since`, from the start of that local day
in `tz` (an IANA name, default UTC; inclusive) to now: `since` is a date
YYYY-MM-DD, or an RFC 3339 timestamp whose day in `tz` is meant, at most
{SINCE_DAYS} days ago. The answer's `from` is the instant counted from. A local
day that does not begin at a UTC midnight is counted from the hour windows
of its first UTC day, or its minute windows when its zone's offset is not
whole hours. A learner that does not exist is 404; one without errors gets
an empty list.
"""

_encoder = msgspec.json.Encoder()


def label_param(description: str) -> object:
    """A label filter, documented with the rule a label follows (api.shapes.Label)."""
    return query.param(
        f"{description}. {LABEL_CASE}",
        type=query.STRING,
        min_length=1,
        max_length=64,
        pattern=LABEL_PATTERN,
    )


class ErrorCountsController(Controller):
    path = "/v1/users/{user_id:str}/errors"
    tags = ["errors"]

    @get(
        "/",
        operation_id="getErrorCounts",
        summary="Error counts per minute, hour or day window",
        description=WINDOWS_DOC,
        responses=problem_responses(*KEYED, 400, 404, 422),
    )
    async def windows(
        self,
        request: Request,
        user_id: FromPath[str],
        principal: PrincipalDep,
        services: ServicesDep,
        window: Annotated[
            str | None,
            query.param("The window length", required=True, type=query.STRING, enum=list(STORED)),
        ] = None,
        from_: query.RangeFrom = None,
        to: query.RangeTo = None,
        tz: query.Zone = None,
        category: Annotated[str | None, label_param("Only this category")] = None,
        subcategory: Annotated[str | None, label_param("Only this subcategory")] = None,
    ) -> Response[ErrorWindows]:
        query.reject_unknown(request, ("window", "from", "to", "tz", "category", "subcategory"))
        asked = windows_query(window, from_, to, tz, category, subcategory)
        body = await error_windows(services, principal.tenant, user_id, asked, _now())
        return query.json_response(body)

    @get(
        "/top",
        operation_id="getTopErrors",
        summary="The learner's most frequent errors",
        description=TOP_DOC,
        responses=problem_responses(*KEYED, 400, 404, 422),
    )
    async def top(
        self,
        request: Request,
        user_id: FromPath[str],
        principal: PrincipalDep,
        services: ServicesDep,
        limit: Annotated[
            str | None,
            query.param(
                "How many pairs",
                type=query.INTEGER,
                minimum=1,
                maximum=TOP_MAX,
                default=TOP_DEFAULT,
            ),
        ] = None,
        since: Annotated[
            str | None,
            query.param(
                "First local day counted (inclusive): a date, or RFC 3339 with an offset",
                one_of=[query.DATE, query.DATE_TIME],
            ),
        ] = None,
        tz: query.Zone = None,
    ) -> Response[TopErrors]:
        query.reject_unknown(request, ("limit", "since", "tz"))
        now = _now()
        asked = top_query(limit, since, tz, now)
        top = await top_errors(services, principal.tenant, user_id, asked, now.date())
        return query.json_response(_encoder.encode(top))


# ---- the parameters


def windows_query(
    window: str | None,
    from_: str | None,
    to: str | None,
    tz: str | None,
    category: str | None,
    subcategory: str | None,
) -> WindowsQuery:
    kind = query.choice(window, "window", STORED)
    zone = periods.zone(tz)
    start, end = periods.bounds(from_, to, zone)
    return WindowsQuery(
        kind,
        zone,
        plan(kind, start, end, zone),
        query.label(category, "category"),
        query.label(subcategory, "subcategory"),
    )


def top_query(limit: str | None, since: str | None, tz: str | None, now: datetime) -> TopQuery:
    count = query.integer(limit, "limit", 1, TOP_MAX, TOP_DEFAULT)
    zone = periods.zone(tz)
    if since is None:
        return TopQuery(count, None, zone)
    first = periods.local_day(since, "since", zone)
    today = now.astimezone(zone).date()
    earliest = today - timedelta(days=SINCE_DAYS)
    if not earliest <= first <= today:
        raise BadRequest(
            f"`since` must be a day from {earliest} (at most {SINCE_DAYS} days ago) to "
            f"today ({today}, in {zone.key}); for all time, leave it out.",
            field="since",
        )
    return TopQuery(count, first, zone)


def _now() -> datetime:
    return datetime.now(UTC)
