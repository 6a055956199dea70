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

T = TypeVar("T", bound=msgspec.Struct)
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]+)`")


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


def invalid(message: str) -> BadRequest:
    """A BadRequest naming the field msgspec points at (`errors[0].category`)."""
    at = _AT.search(message)
    field = at["path"] if at else None
    text = _AT.sub("", message)
    if unknown := _UNKNOWN.search(text):
        field = f"{field}.{unknown['name']}" if field else unknown["name"]
    return BadRequest(f"{field}: {text}" if field else text, field=field or None)
