"""The plans POST /v1/ask runs: one Struct per served read, whose fields are
that GET endpoint's parameters under the same names, so a plan is a GET
request written down. Their bounds are the GET endpoint's, and the executor
checks every plan with the GET endpoint's own parameter functions as well
(api/ask/execute.py). The model's tools are generated from these Structs
(`tool_schemas`): an operation added here is offered to the model with no
other change."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from api.resources.errors import TOP_DEFAULT, TOP_MAX
from api.resources.insights import LIMIT_DEFAULT, LIMIT_MAX
from api.shapes import Id

Day = Annotated[
    str,
    Meta(
        description="A date YYYY-MM-DD (the start of that day in `tz`) or an RFC 3339 "
        "timestamp with an offset"
    ),
]
Zone = Annotated[str, Meta(description="IANA time zone, e.g. Asia/Kolkata")]


class _Plan(
    msgspec.Struct, tag_field="operation", forbid_unknown_fields=True, kw_only=True, frozen=True
):
    pass


class ErrorCountsPlan(_Plan, tag="error_counts"):
    """A learner's error counts per minute, hour, local day or local month
    (GET /v1/users/{user_id}/errors)."""

    user_id: Id
    window: Literal["minute", "hour", "day", "month"]
    from_: Day = msgspec.field(name="from")
    to: Day
    tz: Zone = "UTC"
    category: str | None = None
    subcategory: str | None = None


class TopErrorsPlan(_Plan, tag="top_errors"):
    """A learner's most frequent (category, subcategory) pairs, all time or
    from a local day on (GET /v1/users/{user_id}/errors/top)."""

    user_id: Id
    limit: Annotated[int, Meta(ge=1, le=TOP_MAX)] = TOP_DEFAULT
    since: Day | None = None
    tz: Zone = "UTC"


class LearningPlan(_Plan, tag="learning"):
    """Entries and words practised per local day, ISO week or month
    (GET /v1/users/{user_id}/learning)."""

    user_id: Id
    granularity: Literal["day", "week", "month"]
    from_: Day = msgspec.field(name="from")
    to: Day
    tz: Zone = "UTC"


class InsightsPlan(_Plan, tag="insights"):
    """Insights (sentiment, topics, confidence) of utterances in a time range,
    filtered (GET /v1/insights)."""

    from_: Day = msgspec.field(name="from")
    to: Day
    tz: Zone = "UTC"
    min_confidence: Annotated[float, Meta(ge=0, le=1)] = 0.0
    sentiment_min: Annotated[float, Meta(ge=-1, le=1)] = -1.0
    sentiment_max: Annotated[float, Meta(ge=-1, le=1)] = 1.0
    user_id: Id | None = None
    topic: str | None = None
    limit: Annotated[int, Meta(ge=1, le=LIMIT_MAX)] = LIMIT_DEFAULT


class UtterancePlan(_Plan, tag="utterance"):
    """One utterance, its processing status and its insight
    (GET /v1/utterances/{utterance_id})."""

    utterance_id: Id


Plan = ErrorCountsPlan | TopErrorsPlan | LearningPlan | InsightsPlan | UtterancePlan
OPERATIONS: dict[str, type[Plan]] = {
    msgspec.inspect.type_info(kind).tag: kind  # type: ignore[attr-defined]
    for kind in (ErrorCountsPlan, TopErrorsPlan, LearningPlan, InsightsPlan, UtterancePlan)
}
_plan_decoder = msgspec.json.Decoder(Plan)


def decode_plan(operation: str, arguments: bytes | str) -> Plan:
    """A plan from a tool call's JSON arguments; raises msgspec errors
    (DecodeError, ValidationError) that say what is wrong."""
    fields = msgspec.json.decode(arguments)
    if not isinstance(fields, dict):
        raise msgspec.ValidationError("the arguments must be a JSON object")
    return _plan_decoder.decode(msgspec.json.encode({**fields, "operation": operation}))


def tool_schemas() -> list[dict[str, Any]]:
    """One OpenAI tool per operation, its parameters the plan's JSON Schema
    without the tag (the tool's name says the operation)."""
    _, components = msgspec.json.schema_components(OPERATIONS.values())
    tools = []
    for operation, kind in OPERATIONS.items():
        schema = dict(components[kind.__name__])
        schema["properties"] = {k: v for k, v in schema["properties"].items() if k != "operation"}
        schema["required"] = [k for k in schema.get("required", []) if k != "operation"]
        description = schema.pop("description", "").replace("\n", " ")
        schema.pop("title", None)
        tools.append(_tool(operation, description, schema))
    return tools


def _tool(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    function = {"name": name, "description": description, "parameters": parameters}
    return {"type": "function", "function": function}
