"""Connecting to Cassandra: one Cluster and Session per process, opened at
start-up (connect() blocks), with token-aware, DC-aware routing: each
statement goes to a replica of its partition in the local data centre, so
a node's loss costs only the requests it was serving at that moment.
Consistency levels: cql/consistency.py.

No statement that timed out is retried or speculatively executed by the
driver unless it is marked idempotent; lightweight transactions never are,
because a CAS timeout is an unknown outcome that only a SERIAL read can
settle. An idempotent write whose replicas timed out is sent again (twice at
most): writing the same row again gives the same row, and a dataflow that
stopped on it would replay from its snapshot, which costs far more under the
load that caused the timeout. Any statement whose connection failed before
its answer (a node killed mid-request) is sent again on the next node, as the
driver's policy does: that keeps requests going when a node dies, and no
table has a counter or list whose write would add twice; the API's LWTs
tell a second send that finds the first one's row from someone else's
(api/writes/store.py).
"""

from __future__ import annotations

from cassandra import ProtocolVersion, WriteType
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    TokenAwarePolicy,
)
from cassandra.query import PreparedStatement, tuple_factory

from cql import consistency
from runtime.settings import CassandraSettings

# Times an idempotent write that timed out is sent again.
WRITE_RETRIES = 2


class IdempotentWriteRetry(RetryPolicy):
    """The driver's policy, and a timed-out idempotent write sent again."""

    def on_write_timeout(
        self, query, consistency, write_type, required_responses, received_responses, retry_num
    ):
        again = (
            getattr(query, "is_idempotent", False)
            and write_type not in (WriteType.CAS, WriteType.COUNTER)
            and retry_num < WRITE_RETRIES
        )
        if again:
            return self.RETRY, consistency
        return super().on_write_timeout(
            query, consistency, write_type, required_responses, received_responses, retry_num
        )


def connect(settings: CassandraSettings) -> tuple[Cluster, Session]:
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_dc)),
        retry_policy=IdempotentWriteRetry(),
        consistency_level=consistency.QUORUM,
        serial_consistency_level=consistency.SERIAL,
        request_timeout=settings.request_timeout_s,
        # Rows as plain tuples: Table.from_row builds the Struct positionally.
        row_factory=tuple_factory,
    )
    cluster = Cluster(
        contact_points=list(settings.hosts),
        port=settings.port,
        protocol_version=ProtocolVersion.V5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=settings.connect_timeout_s,
        idle_heartbeat_interval=10,
        # Back within seconds of Cassandra's return, not the default's
        # doubling up to 10 minutes.
        reconnection_policy=ExponentialReconnectionPolicy(0.5, 5.0),
    )
    session = cluster.connect()
    return cluster, session


def use_keyspace(session: Session, keyspace: str) -> None:
    """Make `keyspace` the session's own when it exists. Cassandra logs an
    error (about once a minute under load) for a prepared statement executed
    on a connection whose keyspace is not the one it was prepared in, and a
    warning for each keyspace passed with a PREPARE: a session in its
    keyspace gives neither."""
    if keyspace in session.cluster.metadata.keyspaces:
        session.set_keyspace(keyspace)


def prepare_in(session: Session, cql: str, keyspace: str) -> PreparedStatement:
    """`cql` prepared in `keyspace`: the session's own (see use_keyspace),
    or passed with the statement (protocol v5) when the keyspace was created
    after the session connected."""
    return session.prepare(cql, keyspace=None if session.keyspace == keyspace else keyspace)


class Db:
    """The session plus the keyspace every statement is prepared in.

    Statements name tables without a keyspace; the session uses the keyspace
    (`use_keyspace`), or, for one made after it connected, each statement
    carries it (protocol v5).
    """

    def __init__(self, cluster: Cluster, session: Session, keyspace: str) -> None:
        self.cluster = cluster
        self.session = session
        self.keyspace = keyspace

    @classmethod
    def open(cls, settings: CassandraSettings) -> Db:
        cluster, session = connect(settings)
        use_keyspace(session, settings.keyspace)
        return cls(cluster, session, settings.keyspace)

    def prepare(self, cql: str, *, idempotent: bool = False) -> PreparedStatement:
        statement = prepare_in(self.session, cql, self.keyspace)
        # Only idempotent statements may be retried by the driver; LWTs never are.
        statement.is_idempotent = idempotent
        return statement

    def close(self) -> None:
        self.cluster.shutdown()
