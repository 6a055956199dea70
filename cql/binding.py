"""Binding values to a prepared statement without the driver's per-value
costs that this service does not need.

`PreparedStatement.bind` builds a `ColDesc` named tuple for every value it
binds, to ask a column-encryption policy whether the column is encrypted,
even when there is none; and it serializes a timestamp through a time tuple
and floats (4 µs each). In a py-spy profile of an error-counter replay,
whose rows carry three timestamps each, binding took a sixth of the
samples. `bind` here serializes each value with its column's type as the
driver's plain path does, a timestamp by integer arithmetic, and gives the
same BoundStatement: the same bytes (tests/cql/test_binding.py holds it to
the driver's bind).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from cassandra.cqltypes import DateType
from cassandra.marshal import int64_pack
from cassandra.query import BoundStatement, PreparedStatement

Serializer = Callable[[Any, int], bytes]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
# The driver adds the milliseconds to the whole seconds as floats and
# truncates. Below 2**42 ms (the year 2109) the sum's rounding error stays
# under the 0.001 that could carry it to the next millisecond, so it equals
# the integer floor; past it, or before 1970 (where truncating is not
# flooring), the driver's serializer is used.
_EXACT_MS = 2**42


# Recent naive or UTC timestamps, serialized: the rows of a batch repeat a
# few window starts, buckets, days and acceptance times many times, and a
# lookup costs a tenth of serializing one. Equal keys are one instant (no
# key has a sub-second offset), and so the same bytes.
_PACKED: dict[datetime, bytes] = {}
_PACKED_MAX = 4096


def _timestamp(value: Any, protocol_version: int) -> bytes:
    if isinstance(value, datetime) and (value.tzinfo is None or value.tzinfo is UTC):
        packed = _PACKED.get(value)
        if packed is None:
            if len(_PACKED) >= _PACKED_MAX:
                _PACKED.clear()
            packed = _PACKED[value] = _serialized(value, protocol_version)
        return packed
    return _serialized(value, protocol_version)


def _serialized(value: Any, protocol_version: int) -> bytes:
    if isinstance(value, datetime) and _whole_second_offset(value):
        ms = (value - (_NAIVE_EPOCH if value.tzinfo is None else _EPOCH)) // _MS
        if 0 <= ms < _EXACT_MS:
            return int64_pack(ms)
    return DateType.serialize(value, protocol_version)


def _whole_second_offset(value: datetime) -> bool:
    # The driver keeps a value's own microseconds beside its UTC seconds, so
    # an offset with a fraction of a second is not one instant to it.
    offset = value.utcoffset()
    return offset is None or offset.microseconds == 0


_FAST: dict[type, Serializer] = {DateType: _timestamp}
# Each prepared statement's serializers: the same for every row it binds.
_SERIALIZERS: WeakKeyDictionary[PreparedStatement, list[Serializer]] = WeakKeyDictionary()


def _serializers(prepared: PreparedStatement) -> list[Serializer]:
    found = _SERIALIZERS.get(prepared)
    if found is None:
        types = [column.type for column in prepared.column_metadata]
        found = _SERIALIZERS[prepared] = [_FAST.get(t, t.serialize) for t in types]
    return found


def bind(prepared: PreparedStatement, values: Sequence[Any]) -> BoundStatement:
    """`prepared.bind(values)`, cheaper for a full row of values (a sequence)
    and no encryption; anything else is the driver's own bind."""
    serializers = _serializers(prepared)
    plain = isinstance(values, list | tuple) and len(values) == len(serializers)
    if not plain or prepared.column_encryption_policy is not None:
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
        # A value a column's type cannot take (UNSET_VALUE among them): the
        # driver's bind binds it as it does, or raises its error naming the column.
        return prepared.bind(values)
    return bound
