"""Binding values to a prepared statement without the driver's per-value
costs that this service does not need.

`PreparedStatement.bind` builds a `ColDesc` named tuple for every value it
binds, to ask a column-encryption policy whether the column is encrypted,
even when there is none; and it serializes a timestamp through a time tuple
and floats (4 µs each). Together they took a third of the error-counter
flow's CPU, whose rows carry three timestamps each. `bind` here serializes
each value with its column's type as the driver's plain path does, a
timestamp by integer arithmetic, and gives the same BoundStatement: the
same bytes (tests/cql/test_binding.py holds it to the driver's bind).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cassandra.cqltypes import DateType
from cassandra.marshal import int64_pack
from cassandra.query import BoundStatement, PreparedStatement

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
# Up to here (the year 2109) the driver's float arithmetic is exact to the
# millisecond, so it and the integer floor agree; past it, or before 1970
# (where the driver truncates toward zero), its own serializer is used.
_EXACT_MS = 2**42


def _timestamp(value: Any, protocol_version: int) -> bytes:
    if isinstance(value, datetime):
        ms = (value - (_NAIVE_EPOCH if value.tzinfo is None else _EPOCH)) // _MS
        if 0 <= ms < _EXACT_MS:
            return int64_pack(ms)
    return DateType.serialize(value, protocol_version)


_FAST: dict[type, Callable[[Any, int], bytes]] = {DateType: _timestamp}
# Each prepared statement's serializers, by its id: the same for every row.
_SERIALIZERS: dict[bytes, list[Callable[[Any, int], bytes]]] = {}


def _serializers(prepared: PreparedStatement) -> list[Callable[[Any, int], bytes]]:
    found = _SERIALIZERS.get(prepared.query_id)
    if found is None:
        types = [column.type for column in prepared.column_metadata]
        found = _SERIALIZERS[prepared.query_id] = [_FAST.get(t, t.serialize) for t in types]
    return found


def bind(prepared: PreparedStatement, values: Sequence[Any]) -> BoundStatement:
    """`prepared.bind(values)` for a full row of values and no encryption."""
    serializers = _serializers(prepared)
    if prepared.column_encryption_policy is not None or len(values) != len(serializers):
        return prepared.bind(values)
    version = prepared.protocol_version
    bound = BoundStatement(prepared)
    bound.raw_values = values
    try:
        bound.values = [
            None if value is None else serialize(value, version)
            for value, serialize in zip(values, serializers, strict=True)
        ]
    except Exception:
        # A value the plain path cannot take (of a wrong type, or UNSET_VALUE):
        # the driver's own bind binds it or raises its error naming the column.
        return prepared.bind(values)
    return bound
