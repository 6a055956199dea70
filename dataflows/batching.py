"""How the counting flows batch a learner's items before writing them.

Nothing waits for an event-time window to close: a learner's items are
collected, then written, by one of two rules, chosen per item by how far
the feed read that produced it (its `as_of`) trails the present:
- a current item (within `CURRENT_WITHIN`: the flow is caught up) is
  written at most `dataflow.current_flush_s` after the first of the batch:
  a deadline, so a served number reflects an utterance within about the
  feed's reader lag plus that wait;
- an item of a flow catching up (a replay, a restart, a backlog) restarts a
  wait of `dataflow.flush_interval_s`, as Bytewax's `collect` does, so a
  learner's close-together items are written in batches of many, which is
  what keeps a replay fast.
Either way `dataflow.batch_max_items` ends a batch. The batch only routes
and groups: the writers recount every touched window from stored facts, so
a batch never carries a partial count.

The collect step is keyed by learner, so all of a learner's items reach the
one worker that owns the key, and the sink after it (a DynamicSink: no
exchange) writes them there: one writer per learner, which is what lets a
writer keep that learner's partitions in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import _CollectLogic, _CollectState

from cql.clock import to_stored_time
from dataflows.connectors.sinks import Stamped
from runtime.settings import DataflowSettings

T = TypeVar("T")

# An item whose feed read trails the present by less than this comes from a
# flow that keeps up: the sweep grid (0.5 s), the reader lag and a loaded
# machine's scheduling stay well within it, while a replay or a restart
# reads entries older than it.
CURRENT_WITHIN = timedelta(seconds=2)


@dataclass
class _Batching(_CollectLogic[Stamped[T]]):
    """Bytewax's collect logic with a deadline for current items. Its state
    is collect's, so a snapshot taken before either resumes in the other."""

    current_wait: timedelta

    def on_item(self, value: Stamped[T]) -> tuple[list[list[Stamped[T]]], bool]:
        now = self.now_getter()
        due = self.state.timeout_at
        if to_stored_time(now) - value.as_of >= CURRENT_WITHIN:
            return super().on_item(value)
        deadline = now + self.current_wait
        self.state.timeout_at = deadline if due is None else min(due, deadline)
        self.state.acc.append(value)
        if len(self.state.acc) >= self.max_size:
            return [self.state.acc], op.StatefulLogic.DISCARD
        return [], op.StatefulLogic.RETAIN


def batching_logic(
    settings: DataflowSettings, resume_state: _CollectState[Stamped[T]] | None
) -> _Batching[T]:
    return _Batching(
        "batching",
        lambda: datetime.now(UTC),
        timedelta(seconds=settings.flush_interval_s),
        settings.batch_max_items,
        resume_state or _CollectState(),
        timedelta(seconds=settings.current_flush_s),
    )


@operator
def _collect(
    step_id: str, up: Stream[tuple[str, Stamped[T]]], settings: DataflowSettings
) -> Stream[tuple[str, list[Stamped[T]]]]:
    # Named and nested as op.collect is ("stateful" inside), so the step's
    # recovery state keeps its id across the change.
    return op.stateful("stateful", up, lambda resume: batching_logic(settings, resume))


def batch_by_learner(
    keyed: Stream[tuple[str, Stamped[T]]], settings: DataflowSettings
) -> Stream[tuple[str, list[Stamped[T]]]]:
    return _collect("batch_by_learner", keyed, settings)
