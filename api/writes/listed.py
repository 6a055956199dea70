"""The listing rows (cql/schema/010_listings.cql) of what the API writes:
statements prepared once, each call returning (statement, values) pairs for
the caller to run or to add to its logged batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cassandra.query import PreparedStatement

from cql.learners import ConversationRow, UserRow
from cql.listings import (
    CONVERSATIONS_BY_USER,
    LEARNERS_BY_BUCKET,
    UTTERANCE_DAYS,
    UTTERANCES_BY_CONVERSATION,
    UTTERANCES_BY_USER_DAY,
    ListedConversationRow,
    ListedLearnerRow,
    learner_bucket,
    utterance_rows,
)
from cql.utterances import UtteranceRow

Write = tuple[PreparedStatement, tuple[Any, ...]]


class ListingWrites:
    def __init__(self, prepare: Callable[..., PreparedStatement]) -> None:
        self._learner = prepare(LEARNERS_BY_BUCKET.insert(), idempotent=True)
        self._conversation = prepare(CONVERSATIONS_BY_USER.insert(), idempotent=True)
        self._tables = (UTTERANCES_BY_USER_DAY, UTTERANCE_DAYS, UTTERANCES_BY_CONVERSATION)
        self._utterance = [prepare(t.insert(), idempotent=True) for t in self._tables]

    def learner(self, user: UserRow, idem_key: str | None) -> Write:
        row = ListedLearnerRow(
            user.tenant, learner_bucket(user.user_id), user.user_id, user.email, user.name,
            user.created_at, idem_key,
        )  # fmt: skip
        return self._learner, LEARNERS_BY_BUCKET.values(row)

    def conversation(self, conversation: ConversationRow, idem_key: str | None) -> Write:
        c = conversation
        row = ListedConversationRow(
            c.tenant, c.user_id, c.conversation_id, c.title, c.started_at, idem_key
        )
        return self._conversation, CONVERSATIONS_BY_USER.values(row)

    def utterance(self, utterance: UtteranceRow, idem_key: str | None) -> list[Write]:
        rows = utterance_rows(utterance, idem_key)
        return [
            (statement, table.values(row))
            for statement, table, row in zip(self._utterance, self._tables, rows, strict=True)
        ]
