"""Opaque page tokens of the listing endpoints (api/reads/listings.py).

A token is the position a walk continues after (an id, or a timestamp and
an id), with a digest of what it was issued for: the tenant, the listing
and its filters. A token sent with other filters, or one this API did not
issue, is a 400 naming `page_token`, never a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import msgspec

from api.edge.problems import BadRequest

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()

Position = tuple[Any, ...]


def digest(*selection: Any) -> bytes:
    """What a token belongs to: everything that selects rows, not the limit
    (a client may change it from page to page)."""
    return hashlib.blake2b(_encoder.encode(selection), digest_size=12).digest()


def encode(position: Position, belongs_to: bytes) -> str:
    raw = _encoder.encode([belongs_to, *position])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(token: str, belongs_to: bytes, shape: type) -> Any:
    """The position in `token`, converted to `shape` (a tuple type of its
    parts), after checking it was issued for `belongs_to`."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        issued_for, *position = _decoder.decode(raw)
        parsed = msgspec.convert(position, shape)
    except (binascii.Error, ValueError, TypeError, msgspec.MsgspecError):
        raise BadRequest(
            "`page_token` is not a token this API issued; send next_page_token as it came.",
            field="page_token",
        ) from None
    if issued_for != belongs_to:
        raise BadRequest(
            "`page_token` was issued for another listing or other filters; send the same "
            "path and filters as for the first page.",
            field="page_token",
        )
    return parsed
