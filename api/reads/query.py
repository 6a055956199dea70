"""Query parameters of the GET endpoints, checked by us rather than by the
framework: each reaches its handler as the raw string (or None), so every
bad or missing value becomes one kind of 400 problem naming the parameter,
and an unknown parameter (a typo) is refused rather than ignored. The
OpenAPI document still states each parameter's real type, through `param`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any

import msgspec
from litestar import Request, Response
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import QueryParameter

from api.edge.problems import BadRequest
from api.shapes import Label

STRING = OpenAPIType.STRING
INTEGER = OpenAPIType.INTEGER
DATE = Schema(type=STRING, format="date")
DATE_TIME = Schema(type=STRING, format="date-time")
JSON = "application/json"


def param(
    description: str, *, name: str | None = None, required: bool = False, **schema: Any
) -> Any:
    """The QueryParameter of a `str | None` handler argument whose documented
    schema is `schema` (OpenAPI Schema fields, e.g. type, enum, minimum)."""
    return QueryParameter(
        name=name,
        required=required,
        description=description,
        schema_extra={"one_of": None, **schema},
    )


def page_limit(rows: str, most: int, default: int) -> Any:
    """The `limit` of a paged read: 1 to `most` `rows` a page."""
    return param(f"Most {rows} on the page", type=INTEGER, minimum=1, maximum=most, default=default)


# The `page_token` of a paged read, as its previous page gave it.
PAGE_TOKEN = param("next_page_token of the previous page", type=STRING)


def reject_unknown(request: Request, known: Collection[str]) -> None:
    for name in request.query_params:
        if name not in known:
            raise BadRequest(
                f"Unknown query parameter `{name}`; this endpoint takes {_listed(known)}.",
                field=name,
            )


def choice(raw: str | None, name: str, allowed: Collection[str]) -> str:
    if raw is None:
        raise BadRequest(f"`{name}` is required: one of {_listed(allowed)}.", field=name)
    if raw not in allowed:
        raise BadRequest(f"`{name}` must be one of {_listed(allowed)}; got {raw!r}.", field=name)
    return raw


def integer(raw: str | None, name: str, low: int, high: int, default: int) -> int:
    if raw is None:
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() else None
    if value is None or not low <= value <= high:
        raise BadRequest(
            f"`{name}` must be a whole number from {low} to {high}; got {raw!r}.", field=name
        )
    return value


def label(raw: str | None, name: str) -> str | None:
    """An optional error label, checked and lower-cased as the ingest API
    does (api.shapes.ErrorPointIn)."""
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, Label).lower()
    except msgspec.ValidationError:
        raise BadRequest(
            f"`{name}` must be 1 to 64 characters, not starting or ending with a space.",
            field=name,
        ) from None


def json_response(body: bytes) -> Response[Any]:
    return Response(body, media_type=JSON)


def _listed(names: Collection[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


# The range and zone of every served GET endpoint (api/reads/periods.py reads them).
RangeFrom = Annotated[
    str | None,
    param(
        "Start of the range (inclusive): a date YYYY-MM-DD (its start in `tz`) or RFC 3339 "
        "with an offset",
        name="from",
        required=True,
        one_of=[DATE, DATE_TIME],
    ),
]
RangeTo = Annotated[
    str | None,
    param(
        "End of the range (exclusive): a date YYYY-MM-DD (its start in `tz`) or RFC 3339 "
        "with an offset",
        required=True,
        one_of=[DATE, DATE_TIME],
    ),
]
Zone = Annotated[
    str | None,
    param(
        "IANA time zone of dates and local periods, e.g. Asia/Kolkata",
        type=STRING,
        default="UTC",
    ),
]
