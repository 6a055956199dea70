"""Rounds: concurrent items are written together, nothing waits forever,
and a failed round fails exactly its own items."""

from __future__ import annotations

import asyncio

import pytest

from dataflows.writers.rounds import Rounds


class Recorder:
    """A write that records each round, optionally slow or failing."""

    def __init__(self, pause_s: float = 0.0, fail_on: object = None) -> None:
        self.rounds: list[list[object]] = []
        self.pause_s = pause_s
        self.fail_on = fail_on

    async def write(self, items: list[object]) -> None:
        self.rounds.append(items)
        await asyncio.sleep(self.pause_s)
        if self.fail_on in items:
            raise RuntimeError(f"round with {self.fail_on} failed")


async def test_items_finished_together_are_one_round() -> None:
    recorder = Recorder()
    rounds = Rounds(recorder.write)
    await asyncio.gather(*(rounds.put(i) for i in range(32)))
    assert recorder.rounds == [list(range(32))]


async def test_items_that_come_during_a_write_go_in_the_next_round() -> None:
    recorder = Recorder(pause_s=0.05)
    rounds = Rounds(recorder.write)

    async def later(item: int) -> None:
        await asyncio.sleep(0.01)
        await rounds.put(item)

    await asyncio.gather(rounds.put(0), later(1), later(2))
    assert recorder.rounds == [[0], [1, 2]]
    # Idle again: the next item is written at once, in a round of its own.
    await rounds.put(3)
    assert recorder.rounds[-1] == [3]


async def test_a_failed_round_fails_its_own_items_only() -> None:
    recorder = Recorder(pause_s=0.05, fail_on=1)
    rounds = Rounds(recorder.write)

    async def later(item: int) -> None:
        await asyncio.sleep(0.01)
        await rounds.put(item)

    first = await asyncio.gather(rounds.put(0), rounds.put(1), return_exceptions=True)
    assert [type(outcome) for outcome in first] == [RuntimeError, RuntimeError]
    await asyncio.gather(rounds.put(2), later(3))
    assert recorder.rounds == [[0, 1], [2], [3]]


async def test_a_cancelled_put_leaves_the_others_written() -> None:
    recorder = Recorder(pause_s=0.05)
    rounds = Rounds(recorder.write)
    cancelled = asyncio.create_task(rounds.put("gone"))
    kept = asyncio.create_task(rounds.put("kept"))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert recorder.rounds == [["gone", "kept"]]
