"""The counting flows' batching: a deadline from the first item while a
flow keeps up, a wait restarted by each item while it catches up, and a
recovery state that Bytewax's own collect step can resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bytewax.operators import StatefulLogic, _CollectState

from cql.clock import to_stored_time
from dataflows.batching import CURRENT_WITHIN, _Batching, batching_logic
from dataflows.connectors.sinks import Stamped
from runtime.settings import DataflowSettings

SETTINGS = DataflowSettings(current_flush_s=0.1, flush_interval_s=0.25, batch_max_items=3)
START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def logic(state: _CollectState[Stamped[str]] | None = None) -> tuple[_Batching[str], Clock]:
    clock = Clock()
    batching = batching_logic(SETTINGS, state)
    batching.now_getter = clock
    return batching, clock


def item(clock: Clock, behind: timedelta) -> Stamped[str]:
    return Stamped("fact", to_stored_time(clock.now - behind))


def written(result: tuple[object, bool]) -> tuple[list[object], bool]:
    batches, keep = result
    return list(batches), keep


CURRENT = timedelta(seconds=0.7)
CATCHING_UP = CURRENT_WITHIN + timedelta(seconds=1)


def test_current_items_are_written_a_wait_after_the_first_however_often_they_come() -> None:
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


def test_a_current_item_brings_a_waiting_batch_forward_and_a_late_one_delays_it() -> None:
    batching, clock = logic()
    batching.on_item(item(clock, CATCHING_UP))
    batching.on_item(item(clock, CURRENT))
    assert batching.notify_at() == START + timedelta(seconds=0.1)
    batching.on_item(item(clock, CATCHING_UP))
    assert batching.notify_at() == START + timedelta(seconds=0.25)


def test_a_full_batch_is_written_at_once_and_the_rest_at_its_time() -> None:
    batching, clock = logic()
    items = [item(clock, CURRENT) for _ in range(4)]
    assert batching.on_item(items[0])[1] == StatefulLogic.RETAIN
    assert batching.on_item(items[1])[1] == StatefulLogic.RETAIN
    assert written(batching.on_item(items[2])) == ([items[:3]], StatefulLogic.DISCARD)
    fresh, _ = logic()
    fresh.on_item(items[3])
    assert written(fresh.on_notify()) == ([[items[3]]], StatefulLogic.DISCARD)


def test_a_collect_steps_snapshot_resumes_with_its_items_and_deadline() -> None:
    waiting = [Stamped("fact", to_stored_time(START))]
    batching, clock = logic(_CollectState(list(waiting), START + timedelta(seconds=0.2)))
    assert batching.notify_at() == START + timedelta(seconds=0.2)
    batching.on_item(extra := item(clock, CURRENT))
    assert batching.notify_at() == START + timedelta(seconds=0.1)
    assert written(batching.on_notify()) == ([[*waiting, extra]], StatefulLogic.DISCARD)
