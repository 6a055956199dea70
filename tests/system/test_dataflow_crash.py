"""The error-counter flow as operators run it (`python -m bytewax.run ... -r`,
two workers, one-second snapshots), killed with SIGKILL three times while a
stream of utterances comes in through a real API process, and restarted on
the same recovery folder each time. Once the stream is over and the flow
has caught up, every served count equals the recount from the base table
and every error point is a fact: nothing skipped, nothing counted twice.

It also probes window state: the recovery folder holds each key's latest
window state per snapshot, and once the windows have closed no learner's
state is left (Bytewax drops the state of a key whose windows are all
closed), however many minutes of event time the stream covered.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from bytewax.recovery import init_db_dir

from cql.clock import utc_now
from dataflows.commands.run import bytewax_command
from dataflows.commands.status import held_keys
from runtime.processes import launch, stop
from runtime.settings import Settings
from tests import oracle
from tests.conftest import ROOT, new_tenant, settings_env
from tests.dataflow_helpers import (
    PAIRS,
    PatientApiProcess,
    create_learners,
    error_facts,
    now_utc,
    post_all,
    served_error_counts,
    served_error_totals,
    utterance,
)

KILLS = 3


class FlowProcess:
    """`python -m bytewax.run "dataflows.error_counters:get_flow()"`, 2 workers."""

    def __init__(self, recovery: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        command = bytewax_command("error_counters", recovery, workers=2, snapshot_s=1)
        self.proc = launch(command, log, env, append=True)

    def kill(self) -> None:
        stop(self.proc, grace_s=0)  # SIGKILL: no snapshot, no close, nothing flushed

    def assert_running(self) -> None:
        assert self.proc.poll() is None, (
            f"the flow exited with {self.proc.returncode}; see {self.log}"
        )


def stream(
    http: httpx.Client, learners: list[tuple[str, str]], sent: list[dict], stop: threading.Event
) -> None:
    """Batches of utterances, mostly current, some minutes to days old, and
    some sent twice, until `stop`."""
    rng = random.Random(17)
    while not stop.is_set():
        now = now_utc()
        batch = []
        for _ in range(25):
            age = rng.choices(
                [rng.uniform(-5, 30), rng.uniform(60, 7200), rng.uniform(0, 3 * 86400)],
                weights=[7, 2, 1],
            )[0]
            errors = rng.choices(PAIRS, k=rng.randint(1, 3))
            batch.append(utterance(rng.choice(learners), now - timedelta(seconds=age), errors, 1))
        if sent and rng.random() < 0.3:
            batch.append(rng.choice(sent))  # an explicit utterance_id again: stored once
        post_all(http, batch)
        sent.extend(batch)
        time.sleep(0.25)


def newest_execution(recovery: Path) -> int:
    return max(_query(recovery, "SELECT max(ex_num) FROM exs"), default=-1)


def committed_epoch(recovery: Path) -> int:
    return max(_query(recovery, "SELECT max(commit_epoch) FROM commits"), default=0)


def _query(recovery: Path, sql: str) -> list[int]:
    values = []
    for part in recovery.glob("*.sqlite3"):
        with sqlite3.connect(part) as conn:
            value = conn.execute(sql).fetchone()[0]
        if value is not None:
            values.append(value)
    return values


def wait_until_processing(flow: FlowProcess, recovery: Path, resumed_at: int) -> None:
    """Until this incarnation has committed a snapshot past the epoch it
    resumed from: it is up and working through the stream."""
    deadline = time.monotonic() + 90
    while committed_epoch(recovery) <= resumed_at:
        flow.assert_running()
        assert time.monotonic() < deadline, "the flow never committed a snapshot"
        time.sleep(0.2)


@pytest.mark.slow
def test_kill_9_three_times_mid_stream_then_counts_equal_the_recount(
    db, migrated: Settings, tmp_path
):
    tenant = new_tenant(db)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 2)
    env = {
        **settings_env(migrated),
        "UTTERSTREAM_DATAFLOW_START_AT": (utc_now() - timedelta(seconds=1)).isoformat() + "+00:00",
        "UTTERSTREAM_DATAFLOW_WINDOW_WAIT_S": "1",
        "UTTERSTREAM_DATAFLOW_POLL_INTERVAL_S": "0.2",
    }
    log = ROOT / ".local" / "log" / f"test-dataflow-crash-{tenant.name}.log"
    api = PatientApiProcess(migrated)
    flow = FlowProcess(recovery, env, log)
    sent: list[dict] = []
    try:
        with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=30) as http:
            learners = create_learners(http, 8)
            stop = threading.Event()
            producer = threading.Thread(target=stream, args=(http, learners, sent, stop))
            producer.start()
            rng = random.Random(5)
            resumed_at = 0
            for _ in range(KILLS):
                wait_until_processing(flow, recovery, resumed_at)
                # Mid-epoch, with items in windows and writes in flight.
                time.sleep(rng.uniform(0.3, 1.5))
                flow.kill()
                resumed_at = committed_epoch(recovery)
                flow = FlowProcess(recovery, env, log)
            wait_until_processing(flow, recovery, resumed_at)
            time.sleep(3)
            stop.set()
            producer.join()
        assert newest_execution(recovery) == KILLS  # every restart resumed this folder

        utterances = oracle.load_utterances(
            db, tenant.name, [item["utterance_id"] for item in sent]
        )
        expected = (
            oracle.error_counts(utterances, migrated.dataflow.late_after_s),
            oracle.error_totals(utterances),
            oracle.error_points(utterances),
        )

        def served():
            return (
                served_error_counts(db, tenant.name, utterances, migrated.dataflow.late_after_s),
                served_error_totals(db, tenant.name, utterances),
                error_facts(db, tenant.name, utterances),
            )

        # The last current minute closes about a minute after the stream ends.
        deadline = time.monotonic() + 150
        while (got := served()) != expected and time.monotonic() < deadline:
            flow.assert_running()
            time.sleep(3)
        assert got[2] == expected[2], "error points missing from the facts"
        assert got == expected

        deadline = time.monotonic() + 30
        while (live := held_keys(recovery)) and time.monotonic() < deadline:
            time.sleep(1)
        assert live == 0, "window state left after every window closed"
    finally:
        flow.kill()
        api.stop()
