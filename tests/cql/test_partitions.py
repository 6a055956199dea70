"""The partition rules of the served tables: the writer's fast paths agree
with the one definition the readers use."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from cql import clock
from cql.error_counts import PARTITION_SPAN, error_windows
from cql.insights import hour_of, month_of

moments = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1))


@given(moments)
def test_error_windows_lie_in_the_partition_span_of_their_kind(ts: datetime) -> None:
    for window in error_windows(ts):
        assert window.bucket == clock.span_start(ts, PARTITION_SPAN[window.kind])
        assert window.start <= ts < window.end
        assert window.end - window.start == {"minute": clock.MINUTE, "hour": clock.HOUR,
                                             "day": clock.DAY}[window.kind]  # fmt: skip


@given(moments)
def test_clock_spans_agree_for_naive_and_aware_times(ts: datetime) -> None:
    aware = ts.replace(tzinfo=UTC)
    for span in ("day", "month", "year"):
        start = clock.span_start(ts, span)
        assert clock.span_start(aware, span) == start.replace(tzinfo=UTC)
        assert start <= ts < clock.next_span(start, span)
    assert clock.floor_to(aware, clock.HOUR) == hour_of(ts).replace(tzinfo=UTC)
    assert month_of(ts) == clock.span_start(ts, "month")
    assert clock.from_ms(clock.to_ms(ts)) == clock.to_stored_time(ts)
