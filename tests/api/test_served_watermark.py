"""A worker reuses the watermark it read last for WATERMARK_REUSE_S: the GET
endpoints then skip a sequential read, and `as_of` stays true because any
watermark read before the rows is one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.reads import served as served_module
from api.reads.served import ServedReads
from cql.learning import DATAFLOW_PROGRESS, ProgressRow
from cql.session import Db

FIRST = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def record(db: Db, flow: str, position: datetime) -> None:
    statement = db.prepare(DATAFLOW_PROGRESS.insert())
    db.session.execute(
        statement, DATAFLOW_PROGRESS.values(ProgressRow(flow, 0, position, position))
    )


class Counting(ServedReads):
    """The real reads, counted."""

    reads = 0

    async def _read_watermark(self, flow: str) -> datetime | None:
        self.reads += 1
        return await super()._read_watermark(flow)


@pytest.fixture
def flow() -> str:
    return f"test-watermark-{uuid.uuid4().hex[:8]}"


async def test_a_watermark_is_reused_until_it_is_old_then_read_again(
    db: Db, flow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = Counting(db, timedelta(minutes=1))
    record(db, flow, FIRST)
    monkeypatch.setattr(served_module, "WATERMARK_REUSE_S", 60.0)
    assert await served.watermark(flow) == FIRST
    later = FIRST + timedelta(seconds=5)
    record(db, flow, later)
    assert await served.watermark(flow) == FIRST
    assert served.reads == 1
    monkeypatch.setattr(served_module, "WATERMARK_REUSE_S", 0.0)
    await asyncio.sleep(0.01)
    assert await served.watermark(flow) == later
    assert served.reads == 2


async def test_requests_at_once_share_one_read(
    db: Db, flow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = Counting(db, timedelta(minutes=1))
    monkeypatch.setattr(served_module, "WATERMARK_REUSE_S", 60.0)  # a pause must not expire it
    record(db, flow, FIRST)
    got = await asyncio.gather(*(served.watermark(flow) for _ in range(50)))
    assert set(got) == {FIRST}
    assert served.reads == 1


async def test_each_flow_has_its_own(db: Db, flow: str) -> None:
    served = Counting(db, timedelta(minutes=1))
    other = flow + "-other"
    record(db, flow, FIRST)
    record(db, other, FIRST + timedelta(hours=1))
    assert await served.watermark(flow) != await served.watermark(other)
