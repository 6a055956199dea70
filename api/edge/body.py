"""Strict request bodies.

Litestar converts bodies with msgspec's lax rules (`"3"` becomes 3); the
SPEC wants wrong types refused. This DTO decodes the raw bytes straight into
the handler's Struct with msgspec's strict decoder (one pass, no
intermediate dict) and keeps the Struct as the OpenAPI request schema.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from litestar.dto import MsgspecDTO
from litestar.typing import FieldDefinition

from api.edge.problems import BadRequest
from api.shapes import PATTERN_MEANINGS, Batch, BatchIn, RejectedItem, UtteranceIn

T = TypeVar("T", bound=msgspec.Struct)
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]+)`")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")
_REGEX = re.compile(r"^Expected `str` matching regex (?P<regex>'.*')$", re.DOTALL)


class StrictBody(MsgspecDTO[T]):
    def decode_bytes(self, value: bytes) -> Any:
        try:
            return msgspec.json.decode(value, type=self.model_type, strict=True)
        except msgspec.ValidationError as exc:
            raise invalid(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise BadRequest(f"The body is not valid JSON ({exc}); send one JSON object.") from None

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Any:
        # The body is decoded into the Struct itself, so document the Struct
        # itself. Litestar's generated transfer model moves `Meta(pattern=...)`
        # of an optional field (`Id | None`) onto the union, which msgspec
        # refuses to inspect, and /schema/openapi.json answered 500.
        return schema_creator.for_field_definition(
            FieldDefinition.from_annotation(
                cls.model_type, kwarg_definition=field_definition.kwarg_definition
            )
        )


class BatchBody(StrictBody[BatchIn]):
    """A batch: refused whole only when it is not a batch; each item is
    decoded on its own, and one that is not an utterance becomes a
    RejectedItem, answered in its result while the others are stored."""

    def decode_bytes(self, value: bytes) -> Any:
        batch: BatchIn = super().decode_bytes(value)
        return Batch([_item(raw) for raw in batch.utterances])


def _item(raw: msgspec.Raw) -> UtteranceIn | RejectedItem:
    try:
        return msgspec.json.decode(raw, type=UtteranceIn, strict=True)
    except msgspec.ValidationError as exc:
        refused = invalid(str(exc))
        return RejectedItem(raw, refused.field, refused.detail)


def invalid(message: str) -> BadRequest:
    """A BadRequest naming the field msgspec points at (`errors[0].category`)."""
    at = _AT.search(message)
    field = at["path"] if at else None
    text = _AT.sub("", message)
    if named := _UNKNOWN.search(text) or _MISSING.search(text):
        field = f"{field}.{named['name']}" if field else named["name"]
        if named.re is _MISSING:
            text = "is required"
    if regex := _REGEX.match(text):
        text = _MEANINGS.get(regex["regex"], "is not in the allowed form")
    return BadRequest(f"{field}: {text}" if field else text, field=field or None)


# msgspec names a pattern by its repr; a refusal says what the pattern allows.
_MEANINGS = {repr(pattern): meaning for pattern, meaning in PATTERN_MEANINGS.items()}
