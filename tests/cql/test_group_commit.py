"""Group commit (cql/group_commit.py) against the real Cassandra: callers
that wait while the lanes are busy go out in one logged batch, their rows
built when it is sent; a batch lands or fails for all its callers alike,
and a caller whose rows cannot be built fails alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from cassandra import InvalidRequest
from prometheus_client import REGISTRY

from cql.clock import utc_now
from cql.group_commit import GroupCommit, Rows
from cql.session import Db
from cql.utterances import UTTERANCES, UtteranceRow


class Rig:
    def __init__(self, db: Db) -> None:
        self.db = db
        self.tenant = f"t-{uuid.uuid4().hex[:12]}"
        self.insert = db.prepare(UTTERANCES.insert(), idempotent=True)
        self.select = db.prepare(UTTERANCES.select(), idempotent=True)

        # A row Cassandra itself refuses: an empty single-column partition key.
        self.refused = db.prepare("INSERT INTO dataflow_progress (flow, shard) VALUES ('', 0)")

    def rows(self, utterance_id: str, *, refused: bool = False) -> Callable[[], Rows]:
        def build() -> Rows:
            now = utc_now()
            row = UtteranceRow(
                self.tenant, utterance_id, "learner", "c", "text", now, [], 1, now, "pending",
                None, now,
            )  # fmt: skip
            return [(self.insert, UTTERANCES.values(row))] + (
                [(self.refused, ())] if refused else []
            )

        return build

    def stored(self, utterance_id: str) -> bool:
        return bool(self.db.session.execute(self.select, (self.tenant, utterance_id)).one())


def batches_and_callers() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("utterstream_group_commit_callers_count") or 0.0
    total = REGISTRY.get_sample_value("utterstream_group_commit_callers_sum") or 0.0
    return count, total


@pytest.fixture
def rig(db: Db) -> Rig:
    return Rig(db)


async def test_callers_waiting_for_a_lane_go_out_in_one_batch_built_when_it_is_sent(
    rig: Rig,
) -> None:
    group = GroupCommit(rig.db.session, lanes=1, max_bytes=10_000)
    seen_first: list[bool] = []

    def after_first(utterance_id: str) -> Callable[[], Rows]:
        build = rig.rows(utterance_id)

        def built_late() -> Rows:
            seen_first.append(rig.stored("u-0"))
            return build()

        return built_late

    before = batches_and_callers()
    await asyncio.gather(
        group.commit(100, rig.rows("u-0")),
        *(group.commit(100, after_first(f"u-{i}")) for i in range(1, 6)),
    )
    count, total = batches_and_callers()
    assert (count - before[0], total - before[1]) == (2, 6)
    assert seen_first == [True] * 5  # built once the batch ahead had landed
    assert all(rig.stored(f"u-{i}") for i in range(6))


@pytest.mark.parametrize(
    ("lanes", "max_bytes", "batches"),
    [
        # The first alone (a lane was free), then two and two.
        (1, 250, 3),
        # No lanes: each caller alone, at once.
        (0, 10_000, 5),
    ],
)
async def test_batches_hold_no_more_than_max_bytes_and_no_lanes_means_alone(
    rig: Rig, lanes: int, max_bytes: int, batches: int
) -> None:
    group = GroupCommit(rig.db.session, lanes=lanes, max_bytes=max_bytes)
    before = batches_and_callers()
    await asyncio.gather(*(group.commit(100, rig.rows(f"u-{i}")) for i in range(5)))
    count, total = batches_and_callers()
    assert (count - before[0], total - before[1]) == (batches, 5)
    assert all(rig.stored(f"u-{i}") for i in range(5))


async def test_a_refused_row_fails_every_caller_of_its_batch_and_only_those(rig: Rig) -> None:
    group = GroupCommit(rig.db.session, lanes=1, max_bytes=10_000)
    outcomes = await asyncio.gather(
        group.commit(100, rig.rows("alone")),
        group.commit(100, rig.rows("refused", refused=True)),
        group.commit(100, rig.rows("beside-it")),
        return_exceptions=True,
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], InvalidRequest)
    assert outcomes[2] is outcomes[1]
    assert rig.stored("alone")
    # One logged batch: none of it landed.
    assert not rig.stored("refused") and not rig.stored("beside-it")


async def test_a_caller_whose_rows_cannot_be_built_fails_alone(rig: Rig) -> None:
    group = GroupCommit(rig.db.session, lanes=1, max_bytes=10_000)

    def broken() -> Rows:
        raise ValueError("no rows")

    outcomes = await asyncio.gather(
        group.commit(100, rig.rows("first")),
        group.commit(100, broken),
        group.commit(100, rig.rows("second")),
        return_exceptions=True,
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], ValueError)
    assert rig.stored("first") and rig.stored("second")


async def test_a_caller_that_gives_up_waiting_writes_nothing(rig: Rig) -> None:
    group = GroupCommit(rig.db.session, lanes=1, max_bytes=10_000)
    built: list[str] = []

    def noted(utterance_id: str) -> Callable[[], Rows]:
        build = rig.rows(utterance_id)

        def note() -> Rows:
            built.append(utterance_id)
            return build()

        return note

    first = asyncio.create_task(group.commit(100, noted("first")))
    await asyncio.sleep(0)  # its batch is in flight
    quitter = asyncio.create_task(group.commit(100, noted("quitter")))
    last = asyncio.create_task(group.commit(100, noted("last")))
    await asyncio.sleep(0)
    quitter.cancel()
    await asyncio.gather(first, last)
    assert quitter.cancelled()
    assert built == ["first", "last"]
    assert not rig.stored("quitter")
