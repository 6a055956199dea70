"""The live benchmark's ledger tells an event its client got while
connected from one it got on resuming after its own drop: the write ->
client target is about the first."""

import time

from bench.live import _latencies
from bench.live_clients import Ledger


def _utterance(uid: str) -> dict[str, str]:
    return {"utterance_id": uid, "status": "pending"}


def test_an_event_missed_while_reconnecting_is_told_apart():
    ledger = Ledger()
    ledger.open(0)
    time.sleep(0.002)
    ledger.posted("u-1", "live", "2026-12-02T10:00", time.monotonic())
    ledger.event(0, "utterance", _utterance("live"))
    ledger.disconnected(0)
    ledger.posted("u-1", "missed", "2026-12-02T10:00", time.monotonic())
    time.sleep(0.05)  # the client's reconnect
    ledger.open(0)
    ledger.event(0, "utterance", _utterance("missed"))
    # The event wins the race with the 202 on a connection open before it.
    ledger.event(0, "utterance", _utterance("raced"))
    ledger.posted("u-1", "raced", "2026-12-02T10:00", time.monotonic())

    got = _latencies(ledger)
    assert (got["events_to_connected"], got["events_on_resume"]) == (2, 1)
    assert got["write_to_connected_client_ms"]["max"] < 50 <= got["write_to_client_ms"]["max"]
    assert got["write_to_connected_client_ms"]["p50"] <= 0  # the race: negative
