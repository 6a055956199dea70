"""How the counting flows batch a learner's items before writing them.

Nothing waits for an event-time window to close: a learner's items are
collected, then written, by one of two rules, chosen per item by whether
the feed read that produced it had reached the present: its `as_of` (the
shard's newest complete sweep when it was read) within `current_within` of
now when the item comes.
- A current item (the flow keeps up) makes the batch due at most
  `dataflow.current_flush_s` after it comes: a deadline that later current
  items do not put off, so a served number reflects an utterance within
  about the feed's reader lag plus that wait.
- An item of a flow catching up (a replay, a restart: its reads are cut
  short by `dataflow.feed_batch_size` or by the span one poll covers, and
  keep the previous sweep's `as_of`) restarts a wait of
  `dataflow.flush_interval_s`, as Bytewax's `collect` does, so a learner's
  close-together items go in batches of many, which keeps a replay fast.
  The last read of a backlog completes a sweep, and its items are current;
  an item of a catching-up read after a current one restarts the wait.
Either way `dataflow.batch_max_items` ends a batch. The batch only routes
and groups: the writers recount every touched window from stored facts, so
a batch never carries a partial count.

The collect step is keyed by learner, so all of a learner's items reach the
one worker that owns the key, and the sink after it (a DynamicSink: no
exchange) writes them there: one writer per learner, which is what lets a
writer keep that learner's partitions in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

# Bytewax's own collect logic and state (0.21.1 is pinned and its last
# release): a snapshot of either step resumes in the other.
from bytewax.operators import _CollectLogic, _CollectState

from cql.clock import to_stored_time
from dataflows.connectors.sinks import Stamped
from runtime.settings import Settings

T = TypeVar("T")

# What a current item's as_of may trail by beyond the reader lag and the
# sweep interval (the most it trails by in a flow that keeps up): a loaded
# machine's scheduling. With the defaults, 2 s.
_SLACK = timedelta(seconds=1.25)


@dataclass
class _Batching(_CollectLogic[Stamped[T]]):
    current_wait: timedelta
    current_within: timedelta

    def on_item(self, value: Stamped[T]) -> tuple[Iterable[list[Stamped[T]]], bool]:
        now = self.now_getter()
        due = self.state.timeout_at
        # collect's own: append, end a full batch, restart the wait.
        written = super().on_item(value)
        if to_stored_time(now) - value.as_of < self.current_within:
            deadline = now + self.current_wait
            self.state.timeout_at = deadline if due is None else min(due, deadline)
        return written


def batching_logic(
    step_id: str, settings: Settings, resume_state: _CollectState[Stamped[T]] | None
) -> _Batching[T]:
    d = settings.dataflow
    return _Batching(
        step_id,
        lambda: datetime.now(UTC),
        timedelta(seconds=d.flush_interval_s),
        d.batch_max_items,
        resume_state if resume_state is not None else _CollectState(),
        timedelta(seconds=d.current_flush_s),
        timedelta(seconds=settings.feed.reader_lag_s + d.sweep_interval_s) + _SLACK,
    )


@operator
def _collect(
    step_id: str, up: Stream[tuple[str, Stamped[T]]], settings: Settings
) -> Stream[tuple[str, list[Stamped[T]]]]:
    # Named and nested as op.collect is ("stateful" inside), so the step's
    # recovery state keeps its id.
    return op.stateful("stateful", up, lambda resume: batching_logic(step_id, settings, resume))


def batch_by_learner(
    keyed: Stream[tuple[str, Stamped[T]]], settings: Settings
) -> Stream[tuple[str, list[Stamped[T]]]]:
    return _collect("batch_by_learner", keyed, settings)
