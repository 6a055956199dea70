"""cql.binding.bind against the driver's own PreparedStatement.bind: the same
bytes for every value, the same routing key, and the driver's errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cassandra.query import UNSET_VALUE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cql.binding import bind
from cql.error_counts import ERROR_COUNTS, ERROR_POINTS
from cql.learning import LEARNING_BUCKETS, LEARNING_EVENTS

TABLES = [ERROR_POINTS, ERROR_COUNTS, LEARNING_EVENTS, LEARNING_BUCKETS]

# Naive and aware; before 1970 and past 2109 too, where bind leaves them to
# the driver.
timestamps = st.one_of(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [
                UTC,
                timezone(timedelta(hours=5, minutes=30)),
                # The driver takes a sub-second offset's microseconds as they are.
                timezone(timedelta(hours=-3, microseconds=500_000)),
            ]
        ),
    ),
)
# Values of a column by its type's name in the driver.
VALUES = {
    "DateType": timestamps,
    "VarcharType": st.text(max_size=20),
    "Int32Type": st.integers(-(2**31), 2**31 - 1),
    "LongType": st.integers(-(2**63), 2**63 - 1),
    "BooleanType": st.booleans(),
}


def row_values(draw: Any, prepared: Any) -> list[Any]:
    values = []
    for index, column in enumerate(prepared.column_metadata):
        value = draw(VALUES.get(column.type.__name__, st.text(max_size=5)))
        in_key = prepared.is_routing_key_index(index)
        values.append(None if not in_key and draw(st.integers(0, 3)) == 0 else value)
    return values


@pytest.fixture(scope="module")
def prepared(db) -> list[Any]:
    return [db.prepare(table.insert(), idempotent=True) for table in TABLES]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_bind_gives_the_driver_s_bytes_and_routing_key(prepared, data) -> None:
    statement = data.draw(st.sampled_from(prepared))
    values = row_values(data.draw, statement)
    ours, theirs = bind(statement, values), statement.bind(values)
    assert ours.values == theirs.values
    assert ours.raw_values == theirs.raw_values
    assert ours.routing_key == theirs.routing_key
    assert ours.is_idempotent is theirs.is_idempotent is True
    assert ours.keyspace == theirs.keyspace


def test_a_value_of_the_wrong_type_gets_the_driver_s_error(prepared) -> None:
    statement = prepared[0]
    values = ["t", "u", datetime(2026, 1, 1), "not a time", "x", 0, "c", "s", datetime.now(UTC)]
    with pytest.raises(TypeError, match="Received an argument of invalid type") as theirs:
        statement.bind(values)
    with pytest.raises(TypeError) as ours:
        bind(statement, values)
    assert str(ours.value) == str(theirs.value)


def test_unset_short_and_named_rows_are_bound_as_the_driver_binds_them(prepared) -> None:
    statement = prepared[1]
    first = ["t", "u", "minute", datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 1), "c", "s", 1, 0]
    names = [column.name for column in statement.column_metadata]
    named = dict(zip(names, [*first, datetime(2026, 1, 2)], strict=True))
    for values in ([*first, UNSET_VALUE], first, named):
        assert bind(statement, values).values == statement.bind(values).values
    with pytest.raises(ValueError, match="routing key"):
        bind(statement, None)


def test_a_remembered_timestamp_is_not_answered_for_an_equal_one_the_driver_packs_apart(
    prepared,
) -> None:
    """bind remembers the bytes of naive and UTC timestamps; an equal
    instant with a sub-second offset, which the driver packs from its own
    microseconds, still gets the driver's bytes, and so does a naive time
    equal in wall-clock terms to a remembered UTC one."""
    statement = prepared[2]  # learning_events: day, ts and written_at
    utc = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    odd = utc.astimezone(timezone(timedelta(hours=-3, microseconds=500_000)))
    assert odd == utc
    for moment in (utc, odd, utc.replace(tzinfo=None), utc, odd):
        values = ["t", "u", moment, moment, "id", 3, moment]
        assert bind(statement, values).values == statement.bind(values).values
