"""A session and the keyspace its statements are prepared in, against the
real Cassandra: a statement executed on a connection in another keyspace
than it was prepared in makes Cassandra log an error and warn the client,
so a session uses its keyspace (cql/session.py `use_keyspace`)."""

from __future__ import annotations

from contextlib import closing
from datetime import datetime

import msgspec

from cql.learning import LEARNING_EVENTS
from cql.session import Db
from runtime.settings import Settings


def test_statements_run_without_a_keyspace_warning(migrated: Settings) -> None:
    with closing(Db.open(migrated.cassandra)) as db:
        assert db.session.keyspace == migrated.cassandra.keyspace
        select = db.prepare(LEARNING_EVENTS.select() + " LIMIT 1")
        for _ in range(3):  # a warning comes once per connection
            result = db.session.execute(select, ("nobody", "nobody", datetime(2026, 1, 1)))
            assert not result.response_future.warnings


def test_a_keyspace_made_after_the_session_is_passed_with_each_statement(
    migrated: Settings,
) -> None:
    later = msgspec.structs.replace(migrated.cassandra, keyspace="utterstream_later")
    with closing(Db.open(later)) as db:
        assert db.session.keyspace is None
        try:
            db.session.execute(
                "CREATE KEYSPACE utterstream_later WITH replication = "
                "{'class': 'SimpleStrategy', 'replication_factor': 1}",
                timeout=60,
            )
            db.session.execute(
                "CREATE TABLE utterstream_later.t (k int PRIMARY KEY, v int)", timeout=60
            )
            insert = db.prepare("INSERT INTO t (k, v) VALUES (?, ?)")
            db.session.execute(insert, (1, 2))
            assert list(db.session.execute("SELECT k, v FROM utterstream_later.t")) == [(1, 2)]
        finally:
            db.session.execute("DROP KEYSPACE IF EXISTS utterstream_later", timeout=60)
