"""How the counting flows batch a learner's items before writing them.

Nothing waits for an event-time window to close: a learner's items are
collected until `dataflow.flush_interval_s` passes without another (Bytewax's
`collect` restarts its timeout at each item), or until
`dataflow.batch_max_items`, and then written. So a served number reflects an
utterance within about the feed's reader lag plus that interval, however
old the utterance is, for a learner whose utterances come further apart
than the interval; a replay, whose items come close together, writes
batches of many. The batch only routes and groups: the writers recount
every touched window from stored facts, so a batch never carries a partial
count.

The collect step is keyed by learner, so all of a learner's items reach the
one worker that owns the key, and the sink after it (a DynamicSink: no
exchange) writes them there: one writer per learner, which is what lets a
writer keep that learner's partitions in memory.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream

from runtime.settings import DataflowSettings

T = TypeVar("T")


def batch_by_learner(
    keyed: Stream[tuple[str, T]], settings: DataflowSettings
) -> Stream[tuple[str, list[T]]]:
    return op.collect(
        "batch_by_learner",
        keyed,
        timeout=timedelta(seconds=settings.flush_interval_s),
        max_size=settings.batch_max_items,
    )
