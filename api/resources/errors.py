"""GET /v1/users/{user_id}/errors and /errors/top: a learner's error counts
per minute, hour or day window, and their most frequent errors, read from
the tables the error-counter dataflow serves (cql/schema/005)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import FromPath

from api.edge.problems import KEYED, BadRequest, problem_responses
from api.reads import periods, query
from api.reads.errors import WINDOWS, TopQuery, WindowsQuery, error_windows, top_errors
from api.reads.shapes import ErrorWindows, TopErrors
from api.services import PrincipalDep, ServicesDep
from api.shapes import LABEL_PATTERN

SINCE_DAYS = 366
TOP_DEFAULT, TOP_MAX = 10, 100
WINDOWS_DOC = f"""\
The learner's error counts per (category, subcategory) in UTC windows of a
minute, an hour or a day: every window whose start lies in [`from`, `to`).

Only windows with at least one error are listed (a day of minute windows
would otherwise be 1,440 mostly empty entries). Each listed window says when
it was last counted (`as_of`) and how many late events it holds; the
answer's `as_of` is the dataflow's watermark, so a window that ends before
it and is not listed had no errors.

`from` and `to` are RFC 3339 timestamps with an offset. The longest range is
{WINDOWS["minute"].longest.days} days for minute windows, {WINDOWS["hour"].longest.days} days for
hour windows and {WINDOWS["day"].longest.days} days for day windows. `category` and
`subcategory` keep only the counts with that label.

A learner that does not exist is 404; one without errors gets an empty list.
Answers about windows that are over are served from a cache that a late
event invalidates at once.
"""

TOP_DOC = f"""\
The learner's most frequent (category, subcategory) pairs, most frequent
first (ties by category, then subcategory), at most `limit` of them
(1 to {TOP_MAX}, default {TOP_DEFAULT}).

Without `since`, all time. With `since`, from the start of that UTC day
(inclusive) to now: `since` is a date YYYY-MM-DD, or an RFC 3339 timestamp
whose UTC day is meant, at most {SINCE_DAYS} days ago. A learner that does not
exist is 404; one without errors gets an empty list.
"""

_encoder = msgspec.json.Encoder()


def label_param(description: str) -> object:
    """A label filter, documented with the rule a label follows (api.shapes.Label)."""
    return query.param(
        description, type=query.STRING, min_length=1, max_length=64, pattern=LABEL_PATTERN
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
            query.param("The window length", required=True, type=query.STRING, enum=list(WINDOWS)),
        ] = None,
        from_: query.TimeFrom = None,
        to: query.TimeTo = None,
        category: Annotated[str | None, label_param("Only this category")] = None,
        subcategory: Annotated[str | None, label_param("Only this subcategory")] = None,
    ) -> Response[ErrorWindows]:
        query.reject_unknown(request, ("window", "from", "to", "category", "subcategory"))
        asked = windows_query(window, from_, to, category, subcategory)
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
                "First UTC day counted (inclusive): a date, or RFC 3339 with an offset",
                one_of=[query.DATE, query.DATE_TIME],
            ),
        ] = None,
    ) -> Response[TopErrors]:
        query.reject_unknown(request, ("limit", "since"))
        today = _now().date()
        asked = top_query(limit, since, today)
        top = await top_errors(services, principal.tenant, user_id, asked, today)
        return query.json_response(_encoder.encode(top))


# ---- the parameters


def windows_query(
    window: str | None,
    from_: str | None,
    to: str | None,
    category: str | None,
    subcategory: str | None,
) -> WindowsQuery:
    kind = query.choice(window, "window", WINDOWS)
    start = periods.instant(from_, "from").astimezone(UTC)
    end = periods.instant(to, "to").astimezone(UTC)
    periods.checked_range(start, end, WINDOWS[kind].longest)
    return WindowsQuery(
        kind, start, end, query.label(category, "category"), query.label(subcategory, "subcategory")
    )


def top_query(limit: str | None, since: str | None, today: date) -> TopQuery:
    count = query.integer(limit, "limit", 1, TOP_MAX, TOP_DEFAULT)
    if since is None:
        return TopQuery(count, None)
    first = periods.utc_day(since, "since")
    earliest = today - timedelta(days=SINCE_DAYS)
    if not earliest <= first <= today:
        raise BadRequest(
            f"`since` must be a UTC day from {earliest} (at most {SINCE_DAYS} days ago) to "
            f"today ({today}); for all time, leave it out.",
            field="since",
        )
    return TopQuery(count, first)


def _now() -> datetime:
    return datetime.now(UTC)
