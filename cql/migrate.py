"""Apply the CQL files in cql/schema/ in order, once each.

Each applied file is recorded with its checksum in `schema_migrations`; a file
edited after it was applied is refused (add a new file instead). A lock row
claimed with a lightweight transaction keeps two processes from migrating at
once; it carries a TTL so a migrator that died cannot hold it forever.
Keyspace replication comes from configuration, never from the files.

    python -m cql.migrate            # what ops/migrate runs
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from pathlib import Path

import structlog
from cassandra import Unavailable, WriteTimeout
from cassandra.cluster import Session
from cassandra.query import PreparedStatement

from cql.session import connect
from runtime.logs import configure_logging
from runtime.settings import CassandraSettings, Settings

SCHEMA_DIR = Path(__file__).parent / "schema"
LOCK_TTL_S = 120
log = structlog.get_logger("migrate")

_BOOTSTRAP = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " name text PRIMARY KEY, checksum text, applied_at timestamp)",
    "CREATE TABLE IF NOT EXISTS schema_lock (name text PRIMARY KEY, owner uuid, taken_at timestamp)",
)


class MigrationError(RuntimeError):
    pass


def replication_cql(spec: str) -> str:
    """'SimpleStrategy:1' or 'NetworkTopologyStrategy:dc1=3,dc2=3' as a CQL map.
    DDL cannot take bind markers, so every part is validated before use."""
    strategy, _, rest = spec.partition(":")
    if strategy == "SimpleStrategy" and rest.isdigit():
        return f"{{'class': 'SimpleStrategy', 'replication_factor': {int(rest)}}}"
    if strategy == "NetworkTopologyStrategy":
        pairs = [p.split("=") for p in rest.split(",") if p]
        if pairs and all(
            len(p) == 2 and re.fullmatch(r"[\w.-]+", p[0]) and p[1].isdigit() for p in pairs
        ):
            dcs = ", ".join(f"'{dc}': {int(rf)}" for dc, rf in pairs)
            return f"{{'class': 'NetworkTopologyStrategy', {dcs}}}"
    raise MigrationError(
        f"bad replication setting {spec!r}: use SimpleStrategy:N or NetworkTopologyStrategy:dc=N,..."
    )


def statements(cql_text: str) -> list[str]:
    without_comments = "\n".join(
        line for line in cql_text.splitlines() if not line.lstrip().startswith("--")
    )
    return [s.strip() for s in without_comments.split(";") if s.strip()]


def schema_files() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("*.cql"))


def migrate(settings: CassandraSettings) -> list[str]:
    """Bring the keyspace up to date; returns the names of the files applied now."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,47}", settings.keyspace):
        raise MigrationError(f"bad keyspace name {settings.keyspace!r}")
    cluster, session = connect(settings)
    try:
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {settings.keyspace} "
            f"WITH replication = {replication_cql(settings.replication)}"
        )
        session.set_keyspace(settings.keyspace)
        for cql in _BOOTSTRAP:
            session.execute(cql)
        owner = _take_lock(session)
        try:
            return [f.name for f in schema_files() if _apply(session, f)]
        finally:
            session.execute(
                "DELETE FROM schema_lock WHERE name = 'migrate' IF owner = %s", (owner,)
            )
    finally:
        cluster.shutdown()


def _take_lock(session: Session, deadline_s: float = LOCK_TTL_S) -> uuid.UUID:
    owner = uuid.uuid4()
    claim = session.prepare(
        "INSERT INTO schema_lock (name, owner, taken_at) VALUES ('migrate', ?, toTimestamp(now()))"
        f" IF NOT EXISTS USING TTL {LOCK_TTL_S}"
    )
    start = time.monotonic()
    while not _claimed(session, claim, owner):
        if time.monotonic() - start > deadline_s:
            raise MigrationError("another migration holds schema_lock; try again later")
        time.sleep(0.5)
    return owner


def _claimed(session: Session, claim: PreparedStatement, owner: uuid.UUID) -> bool:
    """One try at the lock. A CAS timeout (a cluster's nodes still settling
    after a start) is tried again: a claim of ours that did apply then
    comes back as the row in place, with our owner."""
    try:
        result = session.execute(claim, (owner,))
    except (WriteTimeout, Unavailable):
        return False
    row = dict(zip(result.column_names, result.one(), strict=True))
    return row["[applied]"] or row.get("owner") == owner


def _apply(session: Session, path: Path) -> bool:
    text = path.read_text()
    checksum = hashlib.sha256(text.encode()).hexdigest()
    row = session.execute(
        "SELECT checksum FROM schema_migrations WHERE name = %s", (path.name,)
    ).one()
    if row is not None:
        if row[0] != checksum:
            raise MigrationError(
                f"{path.name} changed after it was applied; add a new file instead"
            )
        return False
    for cql in statements(text):
        session.execute(cql, timeout=60)
    session.execute(
        "INSERT INTO schema_migrations (name, checksum, applied_at) VALUES (%s, %s, toTimestamp(now()))",
        (path.name, checksum),
    )
    log.info("schema_applied", file=path.name)
    return True


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log)
    applied = migrate(settings.cassandra)
    log.info("schema_up_to_date", applied=applied)


if __name__ == "__main__":
    main()
