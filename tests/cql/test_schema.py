"""One definition of each table: every row Struct equals its live table, and
migrations are recorded, idempotent and safe to run concurrently."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cql import (
    api_keys,
    change_feed,
    erasure,
    error_counts,
    insights,
    learners,
    learning,
    listings,
    utterances,
)
from cql.migrate import migrate, schema_files, statements
from cql.session import Db
from cql.table import Table
from runtime.settings import Settings
from tests.conftest import ROOT, settings_env

# Every Table defined by the module of each schema file.
ALL_TABLES: tuple[Table, ...] = tuple(
    value
    for module in (
        api_keys,
        erasure,
        learners,
        utterances,
        change_feed,
        error_counts,
        learning,
        insights,
        listings,
    )
    for value in vars(module).values()
    if isinstance(value, Table)
)


def live_columns(db: Db, table: str) -> dict[str, str]:
    rows = db.session.execute(
        "SELECT column_name, kind FROM system_schema.columns WHERE keyspace_name = %s AND table_name = %s",
        (db.keyspace, table),
    )
    return {name: kind for name, kind in rows}


@pytest.mark.parametrize("table", ALL_TABLES, ids=lambda t: t.name)
def test_struct_fields_are_the_live_columns(db: Db, table: Table) -> None:
    live = live_columns(db, table.name)
    assert set(live) == set(table.columns), f"{table.name}: Struct and schema differ"
    assert {c for c, k in live.items() if k == "partition_key"} == set(table.partition_key)
    assert {c for c, k in live.items() if k == "clustering"} == set(table.clustering)


def test_every_table_in_the_schema_has_a_struct(db: Db) -> None:
    rows = db.session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (db.keyspace,)
    )
    bookkeeping = {"schema_migrations", "schema_lock"}
    defined = {t.name for t in ALL_TABLES}
    assert {r[0] for r in rows} - bookkeeping == defined


def test_migrating_again_applies_nothing(migrated: Settings) -> None:
    assert migrate(migrated.cassandra) == []


def test_each_file_is_plain_cql_that_is_safe_twice() -> None:
    for path in schema_files():
        for cql in statements(path.read_text()):
            head = " ".join(cql.split()[:7]).upper()
            assert "IF NOT EXISTS" in head, f"{path.name}: {head} is not safe to apply twice"


def test_two_migrators_at_once_on_a_fresh_keyspace(settings: Settings) -> None:
    keyspace = "utterstream_migrate_race"
    env = settings_env(settings) | {"UTTERSTREAM_CASSANDRA_KEYSPACE": keyspace}
    db = Db.open(settings.cassandra)
    try:
        db.session.execute("DROP KEYSPACE IF EXISTS utterstream_migrate_race", timeout=60)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "cql.migrate"], cwd=ROOT, env=env, stderr=subprocess.PIPE
            )
            for _ in range(2)
        ]
        outcomes = [(p.wait(120), p.stderr.read().decode()) for p in procs]
        assert all(rc == 0 for rc, _ in outcomes), outcomes
        names = db.session.prepare("SELECT name FROM utterstream_migrate_race.schema_migrations")
        applied = db.session.execute(names)
        assert sorted(r[0] for r in applied) == [p.name for p in schema_files()]
    finally:
        db.session.execute("DROP KEYSPACE IF EXISTS utterstream_migrate_race", timeout=60)
        db.close()
