"""The insights flow end to end: utterances and their change-feed entries
written into the real Cassandra, the flow run over them (in this process,
or as a real `python -m bytewax.run ... -w 2` process), the LLM a fake
OpenAI-compatible server on a real socket, the rate bucket in the real Redis.

Each test writes its feed entries at a random moment days back, where the
feed holds nothing but what it wrote, and reads only that stretch.
"""

from __future__ import annotations

import bisect
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
import structlog
from bytewax.recovery import init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from cassandra.query import BatchStatement, BatchType
from prometheus_client import REGISTRY

from cql.change_feed import CHANGE_FEED, FeedEntry, new_position
from cql.clock import DAY, HOUR, floor_to, month_start, utc_now
from cql.insights import FAILED_INSIGHTS, INSIGHTS, INSIGHTS_BY_HOUR, INSIGHTS_BY_USER, InsightRow
from cql.session import Db
from cql.utterances import UTTERANCES, UtteranceRow
from dataflows import insights
from dataflows.commands.run import bytewax_command
from dataflows.connectors.feed_source import FeedItem, FeedSource
from live.bus import entry_of, stream_key
from llm.analysis import PROMPT_VERSION
from llm.offline import OFFLINE_MODEL
from runtime.processes import launch, stop
from runtime.settings import Settings
from tests.conftest import ROOT, new_tenant, settings_env
from tests.dataflow_helpers import flow_settings
from tests.fakes.openai_server import FakeOpenAI, mix_policy

log = structlog.get_logger(__name__)

SENTENCES = [
    "I loved the trip to Rome but the hotel food was terrible.",
    "My boss was angry about the project deadline.",
    "We cooked pasta with my sister, it was delicious!",
    "Yesterday I goed to the market and buyed apples.",
    "The exam was difficult and I am tired.",
    "I am happy because my family visit me next week.",
]


# ---- utterances, the feed, and what the flow wrote


class Seeded(msgspec.Struct):
    tenant: str
    utterances: list[UtteranceRow]
    start: datetime  # the feed stretch holding them, naive UTC
    stop: datetime

    @property
    def ids(self) -> list[str]:
        return [u.utterance_id for u in self.utterances]


def seed(db: Db, settings: Settings, n: int, *, duplicates: int = 0, rng_seed: int = 0) -> Seeded:
    """n utterances of a fresh tenant, each with its feed entry, written at
    a random moment 2-5 days back; the first `duplicates` get a second feed
    entry after all the others (a client's retried request)."""
    rng = random.Random(rng_seed)
    tenant = new_tenant(db).name
    # Not from the seeded generator: a fixed offset from now would put a
    # later run's stretch onto an earlier run's, once in a while.
    back = random.SystemRandom().randrange(3 * 86_400_000)
    base = utc_now() - timedelta(days=2, milliseconds=back)
    insert_utterance = db.prepare(UTTERANCES.insert())
    insert_entry = db.prepare(CHANGE_FEED.insert())
    rows = []
    for i in range(n):
        ts = base - timedelta(milliseconds=rng.randrange(2 * 3_600_000))
        utterance_id, text = f"utt-{uuid.uuid4().hex[:12]}", f"{rng.choice(SENTENCES)} #{i}"
        row = UtteranceRow(
            tenant, utterance_id, f"u{i % 3}", "c", text, ts, [], 0, base, "pending", None, base
        )
        rows.append(row)
    written = [*rows, *rows[:duplicates]]
    for i, row in enumerate(written):
        moment = base + timedelta(milliseconds=20 * i)
        shard, bucket, feed_id = new_position(tenant, row.utterance_id, settings.feed, moment)
        entry = FeedEntry(
            shard, bucket, feed_id, tenant, row.utterance_id, row.user_id, row.conversation_id,
            row.text, row.ts, row.errors, row.words_learned,
        )  # fmt: skip
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.add(insert_utterance, UTTERANCES.values(row))
        batch.add(insert_entry, CHANGE_FEED.values(entry))
        db.session.execute(batch)
    stop = base + timedelta(milliseconds=20 * len(written) + 1000)
    return Seeded(tenant, rows, base - timedelta(seconds=1), stop)


class Stored(msgspec.Struct):
    """Everything the flow wrote for a tenant's utterances."""

    status: dict[str, tuple[str, str | None]]
    insights: dict[str, InsightRow]
    by_hour: list[str]
    by_user: list[str]
    failures: list[str]

    def outcome_counts(self) -> Counter[str]:
        return Counter(row.parse_status for row in self.insights.values())

    def ids_with(self, *statuses: str) -> set[str]:
        return {i for i, row in self.insights.items() if row.parse_status in statuses}


def stored(db: Db, settings: Settings, seeded: Seeded, failed_since: datetime) -> Stored:
    t = seeded.tenant
    s = db.session
    utterance_cql = db.prepare(
        UTTERANCES.select(columns=["utterance_id", "status", "status_reason"])
    )
    status = {r[0]: (r[1], r[2]) for i in seeded.ids for r in s.execute(utterance_cql, (t, i))}
    insight_cql = db.prepare(INSIGHTS.select())
    found = [r for i in seeded.ids for r in s.execute(insight_cql, (t, i))]
    rows = {r[1]: INSIGHTS.from_row(r) for r in found}
    by_hour_cql = db.prepare(INSIGHTS_BY_HOUR.select(columns=["utterance_id"]))
    hours = {floor_to(u.ts, HOUR) for u in seeded.utterances}
    by_hour = [
        r[0]
        for hour in hours
        for shard in range(settings.dataflow.insight_shards)
        for r in s.execute(by_hour_cql, (t, hour, shard))
    ]
    by_user_cql = db.prepare(INSIGHTS_BY_USER.select(columns=["utterance_id"]))
    months = {(u.user_id, month_start(u.ts)) for u in seeded.utterances}
    by_user = [r[0] for key in months for r in s.execute(by_user_cql, (t, *key))]
    failed_cql = db.prepare(
        FAILED_INSIGHTS.select("day = ? AND failed_at >= ?", columns=["tenant", "utterance_id"])
    )
    day, failures = floor_to(failed_since, DAY), []
    while day <= utc_now():
        failures += [r[1] for r in s.execute(failed_cql, (day, failed_since)) if r[0] == t]
        day += DAY
    return Stored(status, rows, sorted(by_hour), sorted(by_user), sorted(failures))


def assert_consistent(store: Stored, seeded: Seeded) -> None:
    """Every utterance ended completed or failed with a reason; each
    completed one is served once in both tables, each failed one listed
    once for redrive, and nothing else is anywhere."""
    assert set(store.insights) == set(seeded.ids)
    completed = store.ids_with("strict", "repaired")
    failed = store.ids_with("failed")
    assert completed | failed == set(seeded.ids)
    for utterance_id, row in store.insights.items():
        status, reason = store.status[utterance_id]
        if row.parse_status == "failed":
            # No attempt at all when the deadline passed waiting for the rate.
            assert status == "failed" and reason and reason == row.failure_reason
        else:
            assert (status, reason) == ("completed", None)
            assert row.sentiment is not None and row.failure_reason is None
            assert row.attempts >= 1
        assert row.prompt_version == PROMPT_VERSION and row.latency_ms >= 0
    assert store.by_hour == sorted(completed)
    assert store.by_user == sorted(completed)
    assert store.failures == sorted(failed)


# ---- running the flow


def llm_env(fake: FakeOpenAI, prefix: str, **changes: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_MODEL": "fake-model",
        "UTTERSTREAM_LLM_LIMITER_PREFIX": prefix,
        **changes,
    }


class FlowProcess:
    """`python -m bytewax.run "dataflows.insights:get_flow()" -w 2` over a
    seeded stretch of the feed, until it has read it all."""

    def __init__(
        self, settings: Settings, seeded: Seeded, recovery: Path, env: dict[str, str]
    ) -> None:
        self.log_path = ROOT / ".local" / "log" / f"test-insights-{uuid.uuid4().hex[:8]}.log"
        full_env = {
            **settings_env(settings),
            "UTTERSTREAM_DATAFLOW_START_AT": seeded.start.isoformat() + "Z",
            "UTTERSTREAM_DATAFLOW_STOP_AT": seeded.stop.isoformat() + "Z",
            "UTTERSTREAM_DATAFLOW_POLL_INTERVAL_S": "0.1",
            **env,
        }
        command = bytewax_command("insights", recovery, workers=2, snapshot_s=1)
        self.proc = launch(command, self.log_path, full_env)

    def wait(self, timeout_s: float) -> None:
        try:
            code = self.proc.wait(timeout_s)
        finally:
            stop(self.proc, grace_s=0)  # SIGKILL if it is still running
        assert code == 0, f"the flow exited with {code}; see {self.log_path}"

    def kill(self) -> None:
        stop(self.proc, grace_s=0)


@pytest.fixture
def recovery(tmp_path: Path) -> Path:
    init_db_dir(tmp_path, 2)
    return tmp_path


@pytest.fixture
def prefix(redis_client: Any) -> Iterator[str]:
    """A rate bucket of the test's own."""
    prefix = f"test:insights:{uuid.uuid4().hex}:"
    yield prefix
    for key in redis_client.scan_iter(match=f"{prefix}*"):
        redis_client.delete(key)


def in_process_settings(settings: Settings, **llm: Any) -> Settings:
    base = flow_settings(settings)
    return msgspec.structs.replace(base, llm=msgspec.structs.replace(base.llm, **llm))


def run_in_process(settings: Settings, seeded: Seeded, workers: int) -> None:
    source = FeedSource(
        f"test-insights-{uuid.uuid4().hex[:8]}", settings, start=seeded.start, stop_at=seeded.stop
    )
    flow = insights.get_flow(source=source, settings=settings)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)


def outcomes() -> Counter[str]:
    return Counter(
        {
            outcome: REGISTRY.get_sample_value("utterstream_insights_total", {"outcome": outcome})
            or 0
            for outcome in ("completed", "failed", "skipped")
        }
    )


def busiest_second(times: list[float]) -> int:
    """The most calls in any window [t, t + 1 s)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


# ---- steps


def test_a_learners_entries_meet_in_one_lane_and_one_batch_analyses_duplicates_once(
    migrated: Settings,
) -> None:
    seeded_like = [
        FeedItem(
            FeedEntry(0, datetime(2025, 1, 1), uuid.uuid1(), "t", f"a{i % 5}", f"u{i % 5 % 3}",
                      "c", f"x{i}", datetime(2025, 1, 1), [], 0),
            datetime(2025, 1, 1),
        )
        for i in range(40)
    ]  # fmt: skip
    out: list = []
    flow = insights.get_flow(TestingSource(seeded_like), TestingSink(out), migrated)
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    lanes: dict[str, set[str]] = {}
    for lane, batch in out:
        assert len(batch) <= migrated.dataflow.insight_batch_size
        for item in batch:
            lanes.setdefault(item.entry.user_id, set()).add(lane)
    # Every entry of a learner, duplicates and erase entries alike, reaches
    # one worker, which keeps the learner's erasures current.
    assert all(len(found) == 1 for found in lanes.values()) and len(lanes) == 3
    # Within a lane the feed order holds, so each keeps its first entry.
    subjects = insights.subjects(item for _lane, batch in out for item in batch)
    assert {s.utterance_id: s.text for s in subjects} == {f"a{k}": f"x{k}" for k in range(5)}


# ---- the offline analyzer, duplicates, reruns


@pytest.mark.parametrize("workers", [1, 2])
def test_without_a_model_the_offline_analyzer_completes_everything_once(
    db: Db, migrated: Settings, redis_client: redis.Redis, workers: int
) -> None:
    settings = in_process_settings(migrated, base_url="", model="")
    began = utc_now()
    seeded = seed(db, settings, 30, duplicates=5, rng_seed=workers)

    before = outcomes()
    run_in_process(settings, seeded, workers)
    first = stored(db, settings, seeded, began)
    assert_consistent(first, seeded)
    assert first.outcome_counts() == {"strict": 30}
    assert {row.model for row in first.insights.values()} == {OFFLINE_MODEL}
    # The duplicate entries were found analysed, not analysed again.
    first_run = outcomes() - before
    assert (first_run["completed"], first_run["failed"]) == (30, 0), first_run
    # Nothing waits for a model, so no utterance is ever `processing`: each
    # goes from pending to completed, and the live stream says so.
    events = [entry_of(i, f) for i, f in redis_client.xrange(stream_key(seeded.tenant))]
    statuses = Counter(
        msgspec.json.decode(e.data)["status"] for e in events if e.type == "utterance"
    )
    assert set(statuses) == {"completed"}, statuses

    # A client's retried request puts an utterance back to pending; a rerun
    # over the same feed analyses nothing again and completes it again.
    db.session.execute(
        db.prepare(UTTERANCES.update(["status"])), ("pending", seeded.tenant, seeded.ids[0])
    )
    before = outcomes()
    run_in_process(settings, seeded, workers)
    assert stored(db, settings, seeded, began) == first
    rerun = outcomes() - before
    assert set(rerun) == {"skipped"} and 30 <= rerun["skipped"] <= 35


# ---- a faulty model, two workers, one shared rate


@pytest.mark.slow
def test_two_workers_survive_a_fault_mix_within_the_shared_rate(
    db: Db, migrated: Settings, recovery: Path, prefix: str
) -> None:
    rate = 5
    began = utc_now()
    seeded = seed(db, migrated, 60, duplicates=6, rng_seed=7)
    with FakeOpenAI(policy=mix_policy(0.33, seed=7), hang_s=4) as fake:
        env = llm_env(
            fake,
            prefix,
            UTTERSTREAM_LLM_RATE_PER_S=str(rate),
            UTTERSTREAM_LLM_TIMEOUT_S="2",
            UTTERSTREAM_LLM_MAX_ATTEMPTS="4",
            UTTERSTREAM_LLM_MAX_CONCURRENCY="4",
        )
        started = time.monotonic()
        FlowProcess(migrated, seeded, recovery, env).wait(timeout_s=240)
        seconds = time.monotonic() - started
        arrivals = fake.arrivals

    result = stored(db, migrated, seeded, began)
    assert_consistent(result, seeded)

    times = [a.at for a in arrivals]
    busiest = busiest_second(times)
    average = (len(times) - 1) / (times[-1] - times[0])
    faults = Counter(a.kind for a in arrivals)
    log.info(
        "insights.fault_mix",
        calls=len(times), busiest_second=busiest, average_per_s=round(average, 2),
        limit=rate, outcomes=dict(result.outcome_counts()), served=dict(faults),
        failures=sorted(r.failure_reason for r in result.insights.values() if r.failure_reason),
        flow_seconds=round(seconds, 1),
    )  # fmt: skip
    # The rate holds across both workers: GCRA with a burst of one.
    assert busiest <= rate + 1
    assert average <= rate * 1.05
    # The mix was served, and survived: every fault kind turned up, and
    # most utterances still completed.
    assert sum(n for kind, n in faults.items() if kind != "valid") >= len(times) // 5
    assert len(result.ids_with("strict", "repaired")) >= 45
    # Attempts recorded are the calls made: no utterance analysed twice
    # unseen (a first entry's calls are not hidden behind its duplicate's).
    texts = {u.text: u.utterance_id for u in seeded.utterances}
    calls = Counter(texts[_utterance_of(a.body)] for a in arrivals)
    for utterance in seeded.utterances[6:]:  # those without a duplicate entry
        assert calls[utterance.utterance_id] == result.insights[utterance.utterance_id].attempts


def _utterance_of(body: dict[str, Any]) -> str:
    return msgspec.json.decode(body["messages"][-1]["content"])["utterance"]


# ---- kill -9 mid-stream


@pytest.mark.slow
def test_a_flow_killed_mid_stream_finishes_everything_on_restart(
    db: Db, migrated: Settings, recovery: Path, prefix: str
) -> None:
    began = utc_now()
    seeded = seed(db, migrated, 40, rng_seed=3)
    with FakeOpenAI() as fake:
        env = llm_env(fake, prefix, UTTERSTREAM_LLM_RATE_PER_S="5")
        flow = FlowProcess(migrated, seeded, recovery, env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = stored(db, migrated, seeded, began)
            if sum(s == "completed" for s, _ in done.status.values()) >= 10:
                break
            assert flow.proc.poll() is None, f"the flow ended early; see {flow.log_path}"
            time.sleep(0.2)
        flow.kill()
        at_kill = Counter(s for s, _ in stored(db, migrated, seeded, began).status.values())
        assert at_kill["completed"] < 40 and at_kill["processing"] > 0, at_kill

        FlowProcess(migrated, seeded, recovery, env).wait(timeout_s=180)

    result = stored(db, migrated, seeded, began)
    assert_consistent(result, seeded)
    assert result.outcome_counts() == {"strict": 40}
    log.info("insights.crash", at_kill=dict(at_kill), calls=len(fake.arrivals))
