"""What the dataflow tests share: sending utterances through a real API
process, simulating a retried request's second feed entry, running a flow
over test items or to the end of the feed, and reading (or wiping) a
tenant's served rows."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import httpx
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from cassandra.util import uuid_from_time
from hypothesis import strategies as st

from api.writes.store import Store
from cql.change_feed import FeedEntry, bucket_of
from cql.clock import utc_now
from cql.error_counts import (
    ERROR_COUNTS,
    ERROR_POINTS,
    ERROR_TOTALS,
    FACT_COLUMNS,
    STORED_KINDS,
    minute_counts,
)
from cql.learning import DATAFLOW_PROGRESS, LEARNING_BUCKETS, LEARNING_EVENTS
from cql.session import Db
from cql.utterances import UtteranceRow
from dataflows.commands import replay
from dataflows.connectors.feed_source import FeedItem
from runtime.settings import Settings
from tests.conftest import ApiProcess, Tenant, new_tenant
from tests.oracle import ErrorKey

PAIRS = [
    ("grammar", "past tense"),
    ("grammar", "articles"),
    ("vocabulary", "word choice"),
    ("spelling", "double letters"),
]


def flow_settings(settings: Settings) -> Settings:
    """The test settings for flows run in this process: every write is
    acknowledged before a flow starts, so the reader lag can be short."""
    return msgspec.structs.replace(
        settings,
        feed=msgspec.structs.replace(settings.feed, reader_lag_s=0.2),
        dataflow=msgspec.structs.replace(settings.dataflow, poll_interval_s=0.1),
    )


def run(dataflow: Dataflow, workers: int = 1) -> None:
    """Run a dataflow in this process until its input ends, with `workers` workers."""
    if workers == 1:
        run_main(dataflow)
    else:
        cluster_main(dataflow, [], 0, worker_count_per_proc=workers)


def run_to_end(flow: ModuleType, settings: Settings, start: datetime, workers: int = 1) -> None:
    """Run a flow module's flow over the feed from `start` to now, until it ends."""
    source = flow.feed_source(settings, start=start, stop_at=utc_now())
    run(flow.get_flow(source=source, settings=settings), workers)


def feed_item(
    tenant: str, user_id: str, utterance_id: str, ts: datetime, errors: list, words: int = 0
) -> FeedItem:
    """A feed entry (read now, at once) as a flow's source would give it."""
    now = utc_now()
    entry = FeedEntry(
        0, bucket_of(now, 60), uuid_from_time(now), tenant, utterance_id, user_id, "c", "x", ts,
        errors, words,
    )  # fmt: skip
    return FeedItem(entry, now)


def learner_batches(
    flow: ModuleType, items: list[FeedItem], settings: Settings, workers: int, tenant: str = "t"
) -> list[list[Any]]:
    """Run a flow module's flow over `items` in place of the feed, into a
    testing sink: the batches that reach it, each of which must be keyed by
    `tenant` and its one learner."""
    out: list = []
    run(
        flow.get_flow(source=TestingSource(items), sink=TestingSink(out), settings=settings),
        workers,
    )
    for key, batch in out:
        assert {f"{tenant}\x1f{e.row.user_id}" for e in batch} == {key}
    return [batch for _, batch in out]


# ---- end to end


FATES = ("once", "posted_twice", "retried")


def drawn_specs(
    ages_ms: st.SearchStrategy[int], errors: st.SearchStrategy, words: st.SearchStrategy
) -> st.SearchStrategy[list[tuple]]:
    """1 to 40 utterances to send, each drawn as (learner 0-2, age in ms,
    errors, words, fate) for send_drawn."""
    spec = st.tuples(st.integers(0, 2), ages_ms, errors, words, st.sampled_from(FATES))
    return st.lists(spec, min_size=1, max_size=40)


@dataclass
class Sent:
    """What an end-to-end test sent through the API: with the flow settings,
    a tenant of its own and a feed position from before any of it."""

    settings: Settings
    tenant: Tenant
    start: datetime
    learners: list[tuple[str, str]]
    ids: list[str]


@contextmanager
def _sending(api: ApiProcess, db: Db, migrated: Settings) -> Iterator[tuple[Sent, httpx.Client]]:
    tenant = new_tenant(db)
    sent = Sent(flow_settings(migrated), tenant, utc_now() - timedelta(seconds=1), [], [])
    with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=30) as http:
        yield sent, http


def send_drawn(api: ApiProcess, db: Db, migrated: Settings, specs: list[tuple]) -> Sent:
    """For each drawn (learner 0-2, age in ms, errors, words, fate) an
    utterance posted in the order drawn (so timestamps out of order); a
    "posted_twice" one is posted again, a "retried" one written again as a
    retry would."""
    with _sending(api, db, migrated) as (sent, http):
        sent.learners = create_learners(http, 3)
        now = now_utc()
        items = [
            utterance(sent.learners[who], now - timedelta(milliseconds=age), errors, words)
            for who, age, errors, words, _ in specs
        ]
        post_all(http, items)
        post_all(http, [i for i, s in zip(items, specs, strict=True) if s[4] == "posted_twice"])
    sent.ids = [i["utterance_id"] for i in items]
    retried = [i for i, s in zip(sent.ids, specs, strict=True) if s[4] == "retried"]
    write_again_as_retry(db, sent.settings, sent.tenant.name, retried)
    return sent


def send_random(api: ApiProcess, db: Db, migrated: Settings, rng_seed: int) -> Sent:
    """400 random utterances of six learners, every tenth then written again
    as a retry would."""
    with _sending(api, db, migrated) as (sent, http):
        sent.learners = create_learners(http, 6)
        items = random_utterances(random.Random(rng_seed), sent.learners, 400, now_utc())
        post_all(http, items)
    sent.ids = [item["utterance_id"] for item in items]
    write_again_as_retry(db, sent.settings, sent.tenant.name, sent.ids[::10])
    return sent


def one_and_two_workers_and_a_replay(
    flow: ModuleType,
    sent: Sent,
    tables: Callable[[], Any],
    wipe_tables: Callable[[], None],
    expected: Any,
    empty: Any,
) -> int:
    """The flow run with one worker writes `expected` into `tables()`; wiped
    (`empty` then) and run with two, then replayed with two, it writes the
    same. Returns how many feed entries the replay read."""
    run_to_end(flow, sent.settings, sent.start, workers=1)
    one_worker = tables()
    assert one_worker == expected
    wipe_tables()
    assert tables() == empty
    run_to_end(flow, sent.settings, sent.start, workers=2)
    assert tables() == one_worker
    entries = replay.replay(flow.FLOW, sent.settings, start=sent.start, workers=2)
    assert tables() == one_worker
    return entries


# ---- sending utterances


class PatientApiProcess(ApiProcess):
    """A real API process that waits longer to be ready (a CI machine running
    Cassandra and other suites at once can take over 30 s to start one)."""

    ready_deadline_s = 120.0


def create_learners(http: httpx.Client, n: int) -> list[tuple[str, str]]:
    """n learners, each with a conversation: [(user_id, conversation_id)]."""
    learners = []
    for _ in range(n):
        user_id = f"u-{uuid.uuid4().hex[:8]}"
        r = http.post(
            "/v1/users", json={"user_id": user_id, "email": f"{user_id}@example.com", "name": "Ana"}
        )
        assert r.status_code == 201, r.text
        r = http.post("/v1/conversations", json={"user_id": user_id})
        assert r.status_code == 201, r.text
        learners.append((user_id, r.json()["conversation_id"]))
    return learners


def utterance(
    learner: tuple[str, str], ts: datetime, errors: Iterable[tuple[str, str]], words: int
) -> dict[str, Any]:
    user_id, conversation_id = learner
    return {
        "utterance_id": f"utt-{uuid.uuid4().hex}",
        "conversation_id": conversation_id,
        "user_id": user_id,
        "text": "Yesterday I goed to the market.",
        "timestamp": ts.isoformat(),
        "errors": [{"category": c, "subcategory": s} for c, s in errors],
        "words_learned": words,
    }


def post_all(http: httpx.Client, items: list[dict[str, Any]], batch: int = 500) -> None:
    for i in range(0, len(items), batch):
        r = http.post("/v1/utterances/batch", json={"utterances": items[i : i + batch]})
        assert r.status_code == 202, r.text
        bad = [res for res in r.json()["results"] if res["status"] >= 400]
        assert not bad, bad


def random_utterances(
    rng: random.Random, learners: list[tuple[str, str]], n: int, now: datetime
) -> list[dict[str, Any]]:
    """n utterances at times from a little ahead of now to three days old."""
    items = []
    for _ in range(n):
        age = rng.choice([rng.uniform(-20, 180), rng.uniform(0, 7200), rng.uniform(0, 3 * 86400)])
        errors = rng.choices(PAIRS, k=rng.randint(0, 3))
        items.append(
            utterance(
                rng.choice(learners), now - timedelta(seconds=age), errors, rng.randint(0, 25)
            )
        )
    return items


def write_again_as_retry(db: Db, settings: Settings, tenant: str, utterance_ids: list[str]) -> None:
    """What a request that died after writing leaves once its retry finishes:
    the same utterance written again, received anew with a fresh feed entry
    (see cql/change_feed.py), through the API's own Store."""

    async def rewrite() -> None:
        store = Store(db, 16, feed=settings.feed)
        for utterance_id in utterance_ids:
            row = await store.utterance(tenant, utterance_id)
            assert row is not None
            await store.write_utterance(row)

    asyncio.run(rewrite())


# ---- reading and wiping served rows


def _partitions(utterances: Iterable[UtteranceRow]) -> dict[str, set[tuple[Any, ...]]]:
    """Every partition key the flows can have written for these utterances."""
    keys: dict[str, set[tuple[Any, ...]]] = {
        "days": set(), "minute": set(), "hour": set(), "day": set(), "month": set(), "learner": set()
    }  # fmt: skip
    for u in utterances:
        day = u.ts.replace(hour=0, minute=0, second=0, microsecond=0)
        keys["days"].add((u.user_id, day))
        keys["minute"].add((u.user_id, "minute", day))
        keys["hour"].add((u.user_id, "hour", day.replace(day=1)))
        keys["day"].add((u.user_id, "day", day.replace(month=1, day=1)))
        keys["month"].add((u.user_id, "month", datetime(1970, 1, 1)))
        keys["learner"].add((u.user_id,))
    return keys


def served_error_counts(
    db: Db, tenant: str, utterances: list[UtteranceRow], late_after_s: float
) -> dict[ErrorKey, tuple[int, int]]:
    """The stored windows, and the minute windows as the API counts them
    from the facts (with the flows' `late_after_s`)."""
    served = {
        (r.user_id, r.window, r.bucket, r.window_start, r.category, r.subcategory): (
            r.count,
            r.late_events,
        )
        for r in _error_count_rows(db, tenant, utterances)
    }
    statement = db.prepare(ERROR_POINTS.select(columns=FACT_COLUMNS), idempotent=True)
    late_after = timedelta(seconds=late_after_s)
    for user_id, day in _partitions(utterances)["days"]:
        facts = db.session.execute(statement, (tenant, user_id, day))
        for start, category, subcategory, count, late, _ in minute_counts(facts, late_after):
            served[(user_id, "minute", day, start, category, subcategory)] = (count, late)
    return served


def served_count_rows(db: Db, tenant: str, utterances: list[UtteranceRow]) -> list[Any]:
    return _error_count_rows(db, tenant, utterances)


def _error_count_rows(db: Db, tenant: str, utterances: list[UtteranceRow]) -> list[Any]:
    statement = db.prepare(ERROR_COUNTS.select(), idempotent=True)
    keys = _partitions(utterances)
    return [
        ERROR_COUNTS.from_row(values)
        for kind in STORED_KINDS
        for key in keys[kind]
        for values in db.session.execute(statement, (tenant, *key))
    ]


def served_error_totals(
    db: Db, tenant: str, utterances: list[UtteranceRow]
) -> dict[tuple[str, str, str], int]:
    statement = db.prepare(ERROR_TOTALS.select(), idempotent=True)
    return {
        (row.user_id, row.category, row.subcategory): row.count
        for (user_id,) in _partitions(utterances)["learner"]
        for row in map(ERROR_TOTALS.from_row, db.session.execute(statement, (tenant, user_id)))
    }


def error_facts(db: Db, tenant: str, utterances: list[UtteranceRow]) -> set[tuple[str, str, int]]:
    statement = db.prepare(ERROR_POINTS.select(), idempotent=True)
    return {
        (row.user_id, row.utterance_id, row.point)
        for key in _partitions(utterances)["days"]
        for row in map(ERROR_POINTS.from_row, db.session.execute(statement, (tenant, *key)))
    }


def served_quarter_hours(
    db: Db, tenant: str, utterances: list[UtteranceRow]
) -> dict[tuple[str, datetime, datetime], tuple[int, int, int]]:
    statement = db.prepare(LEARNING_BUCKETS.select(), idempotent=True)
    months = {(user_id, day.replace(day=1)) for user_id, day in _partitions(utterances)["days"]}
    served = {}
    for key in months:
        for row in map(LEARNING_BUCKETS.from_row, db.session.execute(statement, (tenant, *key))):
            assert row.as_of is not None
            served[(row.user_id, row.month, row.bucket_start)] = (
                row.entry_count,
                row.words,
                row.late_events,
            )
    return served


def wipe(db: Db, tenant: str, utterances: list[UtteranceRow]) -> None:
    """Delete every fact and served row the flows wrote for these utterances,
    so a rerun starts from nothing."""
    keys = _partitions(utterances)
    deletes = [
        (ERROR_POINTS, "days"), (LEARNING_EVENTS, "days"), (ERROR_TOTALS, "learner"),
        *((ERROR_COUNTS, kind) for kind in ("minute", "hour", "day", "month")),
    ]  # fmt: skip
    for table, kind in deletes:
        statement = db.prepare(f"DELETE FROM {table.name} WHERE {table.key_where()}")
        for key in keys[kind]:
            db.session.execute(statement, (tenant, *key))
    statement = db.prepare(
        f"DELETE FROM {LEARNING_BUCKETS.name} WHERE {LEARNING_BUCKETS.key_where()}"
    )
    for user_id, day in keys["days"]:
        db.session.execute(statement, (tenant, user_id, day.replace(day=1)))


def now_utc() -> datetime:
    return datetime.now(UTC)


def progress_of(db: Db, flow: str) -> datetime | None:
    """The position `flow` recorded in dataflow_progress, if any."""
    rows = db.session.execute(db.prepare(DATAFLOW_PROGRESS.select()), (flow,))
    return next((DATAFLOW_PROGRESS.from_row(row).position for row in rows), None)


def progress_becomes(
    db: Db, flow: str, expected: datetime, within_s: float = 2.0
) -> datetime | None:
    """The position `flow` recorded, once it is `expected` or `within_s`
    has passed: a worker that finds a publication in flight leaves its
    sweep to the publisher thread, which publishes it right after."""
    deadline = time.monotonic() + within_s
    while (found := progress_of(db, flow)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return found
