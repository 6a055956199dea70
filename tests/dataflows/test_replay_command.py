"""`python -m dataflows replay FLOW` for every flow it names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cql.clock import utc_now
from dataflows.commands import replay


@pytest.mark.parametrize("name", sorted(replay.FLOWS))
def test_every_flow_replays(migrated, name: str) -> None:
    """A replay over a stretch of feed with nothing in it (older than the
    feed's TTL, overlap included, so no other test's writes) reads nothing
    and ends; `insights` once had no feed source to replay with."""
    until = utc_now() - timedelta(days=30)
    assert replay.replay(name, migrated, start=until - timedelta(seconds=1), until=until) == 0
