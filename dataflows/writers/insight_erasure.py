"""Erasure in the insights flow (see dataflows/writers/erasure.py): erase
entries delete the insights the flow served for the learner's erased days,
and the utterances of an erased learner accepted before its erasure are
not analysed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cql.change_feed import shard_of
from cql.clock import month_start
from cql.erasure import erased_before
from cql.insights import INSIGHTS, INSIGHTS_BY_HOUR, INSIGHTS_BY_USER, hour_of
from cql.session import Db
from cql.utterances import UTTERANCES
from dataflows.connectors.feed_source import FeedItem
from dataflows.connectors.sinks import execute_all
from dataflows.writers.erasure import Deleter, ErasedLearners, Erasure, erasure_of
from runtime.settings import Settings


class InsightErasure:
    def __init__(self, db: Db, settings: Settings) -> None:
        self._session = db.session
        self._concurrency = settings.cassandra.max_in_flight
        self._shards = settings.dataflow.insight_shards
        self._erased = ErasedLearners(db, settings)
        self._deleter = Deleter(db, settings, ())
        self._served = db.prepare(
            INSIGHTS_BY_USER.select(columns=("ts", "utterance_id")), idempotent=True
        )
        self._received = db.prepare(UTTERANCES.select(columns=("received_at",)), idempotent=True)
        self._delete_row = {
            t.name: db.prepare(t.delete(t.primary_key), idempotent=True)
            for t in (INSIGHTS, INSIGHTS_BY_HOUR, INSIGHTS_BY_USER, UTTERANCES)
        }
        self._done: set[Erasure] = set()

    def live(self, items: Sequence[FeedItem]) -> list[FeedItem]:
        """The items to analyse: erase entries carried out and left out, as
        are utterances of learners erased after accepting them."""
        marks = [m.row for item in items if (m := erasure_of(item)) is not None]
        new = [e for e in dict.fromkeys(marks) if e not in self._done]
        if new:
            self._erase(new)
        for erasure in marks:
            self._erased.note(erasure)
        entries = [item.entry for item in items if item.entry.erased_at is None]
        erased = self._erased.load((e.tenant, e.user_id) for e in entries)
        return [
            item
            for item in items
            if item.entry.erased_at is None
            and not erased_before(
                erased[(item.entry.tenant, item.entry.user_id)], item.entry.feed_time
            )
        ]

    def _erase(self, erasures: list[Erasure]) -> None:
        """The insights served in each erased month, with their hour rows and
        records, of the utterances accepted before the erasure only: a
        replay carries the erase entry out again after the id may have been
        created anew, and what the new learner wrote stays."""
        partitions = [
            (e, (e.tenant, e.user_id, month))
            for e, days in zip(erasures, self._deleter.days(erasures), strict=True)
            for month in sorted({month_start(day) for day in days})
        ]
        served = execute_all(
            self._session, ((self._served, key) for _e, key in partitions), self._concurrency
        )
        found = [
            (erasure, key, ts, utterance_id)
            for (erasure, key), rows in zip(partitions, served, strict=True)
            for ts, utterance_id in rows
        ]
        accepted = execute_all(
            self._session,
            ((self._received, (key[0], utterance_id)) for _e, key, _ts, utterance_id in found),
            self._concurrency,
        )
        rows = []
        for (erasure, key, ts, utterance_id), record in zip(found, accepted, strict=True):
            received = next((at for (at,) in record), None)
            if received is not None and not erased_before(erasure.erased_at, received):
                continue  # the learner's again, after the erasure
            rows += self._deletes(key, ts, utterance_id)
        execute_all(self._session, rows, self._concurrency)
        self._done.update(erasures)

    def _deletes(self, key: tuple, ts: datetime, utterance_id: str) -> list[tuple]:
        tenant = key[0]
        shard = shard_of(tenant, utterance_id, self._shards)
        by_id = (tenant, utterance_id)
        return [
            (self._delete_row[INSIGHTS_BY_USER.name], (*key, ts, utterance_id)),
            (
                self._delete_row[INSIGHTS_BY_HOUR.name],
                (tenant, hour_of(ts), shard, ts, utterance_id),
            ),
            (self._delete_row[INSIGHTS.name], by_id),
            (self._delete_row[UTTERANCES.name], by_id),
        ]
