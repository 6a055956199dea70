"""Request and response shapes of the v1 API: what a client sends (`...In`)
and what it gets back, with the limits that make bad input a 400 naming the
field. Unknown fields are rejected, so a typo never passes silently.

Schema evolution: new fields get defaults and go last; types never change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from runtime.settings import ApiSettings

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
Id = Annotated[
    str,
    Meta(
        pattern=ID_PATTERN,
        description="1-128 characters: letters, digits and . _ : @ -, starting with a letter or digit",
    ),
]
# Whitespace as the server's checks (Python's `\s`) see it, spelled out in the
# patterns: `\s`, `\S` and `.` mean other characters to JSON Schema (ECMA 262)
# and to the clients and fuzzers that read the document.
SPACE = r"\x09-\x0d\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
LABEL_PATTERN = rf"^[^{SPACE}]([^\n]*[^{SPACE}])?$"
Label = Annotated[str, Meta(min_length=1, max_length=64, pattern=LABEL_PATTERN)]
# At least one character that is not whitespace (a search, not anchored).
TEXT_PATTERN = rf"[^{SPACE}]"
EMAIL_PATTERN = rf"^[^@{SPACE}]+@[^@{SPACE}]+$"
# What each pattern allows, in words: a refusal says this, not the regex.
PATTERN_MEANINGS = {
    ID_PATTERN: "must be 1-128 characters: letters, digits and . _ : @ -, "
    "starting with a letter or digit (no spaces)",
    LABEL_PATTERN: "must be one line of 1-64 characters, not starting or ending with a space",
    TEXT_PATTERN: "must hold something other than whitespace",
    EMAIL_PATTERN: "must be an email address such as ana@example.com: one @, no spaces",
}
AwareTime = Annotated[
    datetime, Meta(tz=True, description="RFC 3339 with an offset, e.g. 2026-01-31T09:30:00+05:30")
]


class Struct(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    pass


class UserIn(Struct):
    email: Annotated[str, Meta(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    user_id: Id | None = None


class User(Struct):
    user_id: str
    email: str
    name: str
    created_at: datetime


class ConversationIn(Struct):
    user_id: Id
    conversation_id: Id | None = None
    title: Annotated[str, Meta(max_length=200)] | None = None
    started_at: AwareTime | None = None


class Conversation(Struct):
    conversation_id: str
    user_id: str
    title: str | None
    started_at: datetime


# Labels are case-insensitive: GRAMMAR and grammar are one category.
LABEL_CASE = (
    "Case-insensitive: lower-cased when accepted, so GRAMMAR and grammar are one label "
    "(labels stored before this rule keep their case)"
)
CaseLabel = Annotated[
    str, Meta(min_length=1, max_length=64, pattern=LABEL_PATTERN, description=LABEL_CASE)
]


class ErrorPointIn(Struct):
    category: CaseLabel
    subcategory: CaseLabel

    def __post_init__(self) -> None:
        # Here rather than in the handlers: every way in (a POST, a batch
        # item, a comparison with what is stored) sees one spelling.
        self.category = self.category.lower()
        self.subcategory = self.subcategory.lower()


class ErrorPoint(Struct):
    """An error point as stored: lower case since labels are case-insensitive."""

    category: str
    subcategory: str


class UtteranceIn(Struct):
    conversation_id: Id
    user_id: Id
    text: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=10_000,
            pattern=TEXT_PATTERN,
            description="1-10,000 characters, not only whitespace",
        ),
    ]
    timestamp: AwareTime
    errors: Annotated[list[ErrorPointIn], Meta(max_length=100)] = []
    words_learned: Annotated[int, Meta(ge=0, le=100_000)] = 0
    utterance_id: Id | None = None


UtteranceStatus = Literal["pending", "processing", "completed", "failed"]


class Accepted(Struct):
    utterance_id: str
    status: Annotated[
        UtteranceStatus,
        Meta(description="pending when first accepted; a duplicate's status as stored"),
    ] = "pending"
    duplicate: bool = False


# The batch limit is the setting api.max_batch_items, which the batch handler
# checks (400 naming `utterances`); a msgspec constraint would fix it at import.
# The OpenAPI document states the default (Litestar reads `extra` into the schema).
MAX_BATCH_ITEMS = ApiSettings().max_batch_items


class BatchIn(Struct):
    """A batch as sent. Only a body that is not a batch (not an object with
    1 to api.max_batch_items `utterances`) is refused whole: each item is
    checked on its own (api.edge.body.BatchBody), so the document admits any
    item and says what is refused in the item's result."""

    utterances: Annotated[
        list[msgspec.Raw],
        Meta(
            min_length=1,
            extra_json_schema={
                "extra": {
                    "maxItems": MAX_BATCH_ITEMS,
                    "items": {
                        "description": "An utterance as POST /v1/utterances takes it. An item "
                        "that is not one is refused in its own result (status 400, `field`, "
                        "`detail`) and the others are still stored",
                        "anyOf": [
                            {"$ref": "#/components/schemas/UtteranceIn"},
                            {"description": "Anything else: refused in its result"},
                        ],
                    },
                }
            },
        ),
    ]


class RejectedItem(Struct):
    """A batch item that is not a valid utterance, kept as sent (never
    documented: the handler answers it in its result)."""

    item: msgspec.Raw
    field: str | None
    detail: str


class Batch(Struct):
    """A decoded batch: each item an utterance or the reason it is not one."""

    utterances: list[UtteranceIn | RejectedItem]


class ItemResult(Struct):
    """One item's outcome: 201 stored, 200 already stored (`duplicate`), or
    a 4xx problem's `status`, `error` (its type), `field` and `detail`."""

    index: int
    status: int
    utterance_id: str | None = None
    duplicate: bool = False
    error: Annotated[str | None, Meta(description="The problem type of a refused item")] = None
    detail: Annotated[str | None, Meta(description="Why the item was refused")] = None
    field: Annotated[
        str | None, Meta(description="The refused item's field at fault, e.g. timestamp")
    ] = None


class BatchResult(Struct):
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]
