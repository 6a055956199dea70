"""Running a plan as the GET request it stands for, through the GET
endpoint's own functions. A plan becomes that request's path and query
parameters (`request_of`); they are read by the GET handler's parameter
functions and answered by its read functions, so the limits, the answer
cache and `as_of` are the GET's, and `url_of(plan)` returns the same data."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import msgspec

from api.ask.plans import (
    ErrorCountsPlan,
    InsightsPlan,
    LearningPlan,
    Plan,
    TopErrorsPlan,
    UtterancePlan,
)
from api.ask.shapes import Clarify
from api.edge.problems import BadRequest, NotFound
from api.reads.errors import error_windows, top_errors
from api.resources.errors import top_query, windows_query
from api.resources.insights import insights, insights_query
from api.resources.learning import learning, learning_query
from api.resources.utterances import utterance_of
from api.services import Services

_encoder = msgspec.json.Encoder()


class Request(NamedTuple):
    path: str
    params: dict[str, str]


def request_of(plan: Plan) -> Request:
    """The GET request of `plan`: its path, and its query parameters as a
    client sends them (defaults left out, numbers in decimals)."""
    path_fields = {"user_id", "utterance_id"} if not isinstance(plan, InsightsPlan) else set()
    params = {
        field.encode_name: _text(value)
        for field in msgspec.structs.fields(plan)
        if field.name not in path_fields
        and (value := getattr(plan, field.name)) is not None
        and value != field.default
    }
    return Request(_path(plan), params)


def url_of(plan: Plan) -> str:
    path, params = request_of(plan)
    return f"{path}?{urlencode(params, quote_via=quote)}" if params else path


async def check(services: Services, tenant: str, plan: Plan, now: datetime) -> Clarify | None:
    """What stops `plan` from running, without reading the served tables:
    a parameter the GET endpoint refuses, or a learner not in `tenant`."""
    try:
        _parsed(plan, request_of(plan).params, now)
    except BadRequest as bad:
        return Clarify((bad.field or "question",), bad.detail)
    if isinstance(plan, UtterancePlan):
        if await services.store.utterance(tenant, plan.utterance_id) is None:
            return Clarify(
                ("utterance_id",), f"there is no utterance {plan.utterance_id!r} in your account."
            )
    elif plan.user_id is not None and await services.store.user(tenant, plan.user_id) is None:
        return Clarify(("user_id",), f"there is no learner {plan.user_id!r} in your account.")
    return None


async def run(services: Services, tenant: str, plan: Plan, now: datetime) -> bytes | Clarify:
    """The JSON the GET request of `plan` answers, or why it cannot run."""
    params = request_of(plan).params
    try:
        return await _answer(services, tenant, plan, _parsed(plan, params, now), now)
    except BadRequest as bad:
        return Clarify((bad.field or "question",), bad.detail)
    except NotFound as missing:
        return Clarify((missing.field or _id_field(plan),), missing.detail)


def _parsed(plan: Plan, params: dict[str, str], now: datetime) -> Any:
    """The GET handler's reading of its parameters (BadRequest naming one)."""
    get = params.get
    match plan:
        case ErrorCountsPlan():
            return windows_query(
                get("window"), get("from"), get("to"), get("tz"), get("category"),
                get("subcategory"),
            )  # fmt: skip
        case TopErrorsPlan():
            return top_query(get("limit"), get("since"), get("tz"), now)
        case LearningPlan():
            return learning_query(get("granularity"), get("from"), get("to"), get("tz"))
        case InsightsPlan():
            return insights_query(
                (get("from"), get("to"), get("tz")), get("min_confidence"),
                get("sentiment_min"), get("sentiment_max"), get("user_id"), get("topic"),
                get("limit"),
            )  # fmt: skip
        case UtterancePlan():
            return plan.utterance_id


async def _answer(services: Services, tenant: str, plan: Plan, asked: Any, now: datetime) -> bytes:
    match plan:
        case ErrorCountsPlan():
            return await error_windows(services, tenant, plan.user_id, asked, now)
        case TopErrorsPlan():
            top = await top_errors(services, tenant, plan.user_id, asked, now.date())
            return _encoder.encode(top)
        case LearningPlan():
            return await learning(services, tenant, plan.user_id, asked, now)
        case InsightsPlan():
            return _encoder.encode(await insights(services, tenant, asked, None))
        case UtterancePlan():
            return _encoder.encode(await utterance_of(services, tenant, asked))


def _path(plan: Plan) -> str:
    match plan:
        case ErrorCountsPlan():
            return f"/v1/users/{quote(plan.user_id, safe='')}/errors"
        case TopErrorsPlan():
            return f"/v1/users/{quote(plan.user_id, safe='')}/errors/top"
        case LearningPlan():
            return f"/v1/users/{quote(plan.user_id, safe='')}/learning"
        case InsightsPlan():
            return "/v1/insights"
        case UtterancePlan():
            return f"/v1/utterances/{quote(plan.utterance_id, safe='')}"


def _text(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _id_field(plan: Plan) -> str:
    return "utterance_id" if isinstance(plan, UtterancePlan) else "user_id"
