"""Reading a model's reply to the insight prompt (`parse_reply`) or to
another prompt (`json_object`), with only the repairs that need no guessing.

Never raises: a reply that cannot be read is a "failed" ParsedReply with the
reason. Hand-written on purpose: a JSON-repair library (json-repair 0.64,
even with strict=True) closes truncated objects and lets NaN through, which
is guessing; here each repair is safe and named, and anything else fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import msgspec

from llm.analysis import Analysis, ParsedReply, canonical, encodable

_strict_decoder = msgspec.json.Decoder(Analysis)
_any_decoder = msgspec.json.Decoder()
_NON_JSON_NUMBER = re.compile(r"\b(?:NaN|-?Infinity)\b")


class _Unsafe(Exception):
    """A reply that cannot be turned into an Analysis without guessing."""


def parse_reply(text: str) -> ParsedReply:
    """Read a model's reply. Never raises.

    "strict": the whole reply is the JSON object asked for. "repaired": safe
    repairs were needed, namely JSON found inside a markdown fence or inside
    prose (the first balanced {...} that decodes), numbers given as strings,
    sentiment or confidence out of range (clamped), topics as one
    comma-separated string. "failed": anything else, with the reason.
    """
    text = encodable(text)
    try:
        return ParsedReply(canonical(_strict_decoder.decode(text)), "strict")
    except msgspec.DecodeError:
        pass
    repairs: list[str] = []
    try:
        analysis = _repaired(text, repairs)
    except _Unsafe as unsafe:
        return ParsedReply(None, "failed", reason=str(unsafe))
    return ParsedReply(analysis, "repaired", repairs=tuple(repairs))


def json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in a reply (whole, fenced or inside prose), or None
    and why not. For replies to other prompts than the insight."""
    try:
        return _json_object(encodable(text), []), None
    except _Unsafe as unsafe:
        return None, str(unsafe)


def _repaired(text: str, repairs: list[str]) -> Analysis:
    fields = _json_object(text, repairs)
    return canonical(
        Analysis(
            sentiment=_bounded_number(fields, "sentiment", -1.0, 1.0, repairs),
            topics=_topic_list(fields, repairs),
            confidence=_bounded_number(fields, "confidence", 0.0, 1.0, repairs),
            reasoning=_string(fields, "reasoning"),
        )
    )


def _json_object(text: str, repairs: list[str]) -> dict[str, Any]:
    if not text.strip():
        raise _Unsafe("empty reply")
    try:
        whole = _any_decoder.decode(text)
    except msgspec.DecodeError:
        return _embedded_object(text, repairs)
    if not isinstance(whole, dict):
        raise _Unsafe(f"reply is a JSON {_kind(whole)}, not an object")
    return whole


def _embedded_object(text: str, repairs: list[str]) -> dict[str, Any]:
    first_error: str | None = None
    for start, candidate in _balanced_objects(text):
        try:
            found = _any_decoder.decode(candidate)
        except msgspec.DecodeError as error:
            first_error = first_error or _decode_problem(candidate, error)
            continue
        fenced = "```" in text[:start]
        repairs.append(
            "took the JSON object out of a markdown fence"
            if fenced
            else "took the JSON object out of surrounding prose"
        )
        return found
    if first_error is None:
        raise _Unsafe("no JSON object in reply")
    raise _Unsafe(f"no valid JSON object in reply: {first_error}")


def _decode_problem(candidate: str, error: msgspec.DecodeError) -> str:
    if _NON_JSON_NUMBER.search(candidate):
        return "it contains NaN or Infinity, which JSON does not allow"
    return str(error)


def _balanced_objects(text: str) -> Iterator[tuple[int, str]]:
    """Each top-level {...} in text, in order, with where it starts; braces
    inside JSON strings do not count. Linear in len(text)."""
    start = text.find("{")
    while start != -1:
        end = _closing_brace(text, start)
        if end is None:
            return
        yield start, text[start : end + 1]
        start = text.find("{", end + 1)


def _closing_brace(text: str, start: int) -> int | None:
    depth = 0
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def _field(fields: dict[str, Any], name: str) -> Any:
    if name not in fields:
        raise _Unsafe(f"the JSON object has no {name!r}")
    return fields[name]


def _bounded_number(
    fields: dict[str, Any], name: str, low: float, high: float, repairs: list[str]
) -> float:
    value = _field(fields, name)
    # bool is an int subclass, but true/false is not a score.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Unsafe(f"{name!r} must be a number, got a JSON {_kind(value)}")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Unsafe(f"{name!r} is not a number: {value[:40]!r}") from None
        repairs.append(f"{name} was a string")
    else:
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
    if not math.isfinite(number):
        raise _Unsafe(f"{name!r} is not a finite number")
    if not low <= number <= high:
        repairs.append(f"{name} {number:g} clamped to [{low:g}, {high:g}]")
        number = min(max(number, low), high)
    return number


def _topic_list(fields: dict[str, Any], repairs: list[str]) -> list[str]:
    value = _field(fields, "topics")
    if isinstance(value, str):
        repairs.append("topics were one comma-separated string")
        return value.split(",")
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise _Unsafe("'topics' must be a list of strings")


def _string(fields: dict[str, Any], name: str) -> str:
    value = _field(fields, name)
    if not isinstance(value, str):
        raise _Unsafe(f"{name!r} must be a string, got a JSON {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case _:
            return "object"
