"""The counting flows' batching: a deadline set by the first item while a
flow keeps up, a wait restarted by each item while it catches up, and the
step id and state of Bytewax's own collect step, so its snapshots resume."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic, _CollectState
from bytewax.testing import TestingSource
from msgspec.structs import replace

from cql.clock import to_stored_time, utc_now
from dataflows.batching import _Batching, batch_by_learner, batching_logic
from dataflows.connectors.sinks import Stamped
from runtime.sections import DataflowSettings, FeedSettings
from runtime.settings import Settings

SETTINGS = Settings(
    feed=FeedSettings(reader_lag_s=0.25),
    dataflow=DataflowSettings(
        current_flush_s=0.1, flush_interval_s=0.25, sweep_interval_s=0.5, batch_max_items=3
    ),
)
# The reader lag, a sweep interval and the slack for a loaded machine.
CURRENT_WITHIN = timedelta(seconds=2)
START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CURRENT = timedelta(seconds=0.7)
CATCHING_UP = CURRENT_WITHIN + timedelta(seconds=1)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def logic(
    state: _CollectState[Stamped[str]] | None = None, settings: Settings = SETTINGS
) -> tuple[_Batching[str], Clock]:
    clock = Clock()
    batching = batching_logic("batching", settings, state)
    batching.now_getter = clock
    return batching, clock


def item(clock: Clock, behind: timedelta) -> Stamped[str]:
    return Stamped("fact", to_stored_time(clock.now - behind))


def written(result: tuple[Iterable[list[Stamped[str]]], bool]) -> tuple[list[Any], bool]:
    batches, discard = result
    return list(batches), discard


def test_current_items_are_due_a_wait_after_the_first_however_often_they_come() -> None:
    batching, clock = logic()
    for _ in range(2):
        assert written(batching.on_item(item(clock, CURRENT))) == ([], StatefulLogic.RETAIN)
        clock.now += timedelta(seconds=0.06)
    assert batching.notify_at() == START + timedelta(seconds=0.1)


def test_items_of_a_flow_catching_up_restart_the_wait() -> None:
    batching, clock = logic()
    for _ in range(2):
        batching.on_item(item(clock, CATCHING_UP))
        clock.now += timedelta(seconds=0.2)
    assert batching.notify_at() == START + timedelta(seconds=0.2 + 0.25)


@pytest.mark.parametrize(
    ("sweep_interval_s", "behind_s", "due_s"),
    [(0.5, 1.999, 0.1), (0.5, 2.0, 0.25), (2.0, 3.4, 0.1), (2.0, 3.5, 0.25)],
)
def test_an_item_is_current_within_the_reader_lag_a_sweep_interval_and_a_slack(
    sweep_interval_s: float, behind_s: float, due_s: float
) -> None:
    dataflow = replace(SETTINGS.dataflow, sweep_interval_s=sweep_interval_s)
    batching, clock = logic(settings=replace(SETTINGS, dataflow=dataflow))
    batching.on_item(item(clock, timedelta(seconds=behind_s)))
    assert batching.notify_at() == START + timedelta(seconds=due_s)


def test_a_current_item_brings_a_waiting_batch_forward_and_a_catching_up_one_puts_it_off() -> None:
    batching, clock = logic()
    batching.on_item(item(clock, CATCHING_UP))
    batching.on_item(item(clock, CURRENT))
    assert batching.notify_at() == START + timedelta(seconds=0.1)
    batching.on_item(item(clock, CATCHING_UP))
    assert batching.notify_at() == START + timedelta(seconds=0.25)


def test_a_full_batch_is_written_at_once() -> None:
    batching, clock = logic()
    items = [item(clock, CURRENT) for _ in range(3)]
    assert written(batching.on_item(items[0]))[1] == StatefulLogic.RETAIN
    assert written(batching.on_item(items[1]))[1] == StatefulLogic.RETAIN
    assert written(batching.on_item(items[2])) == ([items], StatefulLogic.DISCARD)


def test_a_collect_steps_snapshot_resumes_with_its_items_and_deadline() -> None:
    waiting = [Stamped("fact", to_stored_time(START))]
    batching, clock = logic(_CollectState(list(waiting), START + timedelta(seconds=0.2)))
    assert batching.notify_at() == START + timedelta(seconds=0.2)
    batching.on_item(extra := item(clock, CURRENT))
    assert batching.notify_at() == START + timedelta(seconds=0.1)
    assert written(batching.on_notify()) == ([[*waiting, extra]], StatefulLogic.DISCARD)


def test_on_the_real_clock_a_fresh_item_is_due_one_wait_after_it_came() -> None:
    batching = batching_logic("batching", SETTINGS, None)
    before = datetime.now(UTC)
    batching.on_item(Stamped("fact", utc_now()))
    after = datetime.now(UTC)
    due = batching.notify_at()
    assert due is not None
    assert before + timedelta(seconds=0.1) <= due <= after + timedelta(seconds=0.1)


def step_ids(steps: list[Any]) -> Iterator[str]:
    for step in steps:
        yield step.step_id
        yield from step_ids(step.substeps)


def test_the_step_ids_are_bytewaxs_collects_so_its_recovery_state_is_found() -> None:
    def flow(batch: Any) -> list[str]:
        dataflow = Dataflow("f")
        keyed = op.input("read", dataflow, TestingSource([("learner", Stamped("f", START))]))
        batch(keyed)
        return list(step_ids(dataflow.substeps))

    ours = flow(lambda keyed: batch_by_learner(keyed, SETTINGS))
    bytewaxs = flow(lambda keyed: op.collect("batch_by_learner", keyed, timedelta(1), 3))
    assert ours == bytewaxs
    assert "f.batch_by_learner.stateful.stateful_batch" in ours
