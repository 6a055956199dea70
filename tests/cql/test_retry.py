"""Which timed-out writes the driver sends again: idempotent ones, at most
twice; never a lightweight transaction, whose timeout only a SERIAL read
can settle, nor a counter update, which would count twice."""

from __future__ import annotations

import pytest
from cassandra import ConsistencyLevel, WriteType
from cassandra.cluster import EXEC_PROFILE_DEFAULT
from cassandra.policies import RetryPolicy
from cassandra.query import SimpleStatement

from cql.session import WRITE_RETRIES, IdempotentWriteRetry

QUORUM = ConsistencyLevel.LOCAL_QUORUM


def decision(statement, write_type: int, retry_num: int = 0):
    return IdempotentWriteRetry().on_write_timeout(statement, QUORUM, write_type, 1, 0, retry_num)


def test_an_idempotent_write_is_sent_again_at_most_twice() -> None:
    write = SimpleStatement("INSERT ...", is_idempotent=True)
    for retry_num in range(WRITE_RETRIES):
        assert decision(write, WriteType.SIMPLE, retry_num) == (RetryPolicy.RETRY, QUORUM)
    assert decision(write, WriteType.SIMPLE, WRITE_RETRIES)[0] == RetryPolicy.RETHROW


@pytest.mark.parametrize("write_type", [WriteType.CAS, WriteType.COUNTER])
def test_a_conditional_or_counter_write_is_never_sent_again(write_type: int) -> None:
    assert (
        decision(SimpleStatement("...", is_idempotent=True), write_type)[0] == RetryPolicy.RETHROW
    )


def test_a_write_not_marked_idempotent_is_not_sent_again() -> None:
    assert decision(SimpleStatement("INSERT ..."), WriteType.SIMPLE)[0] == RetryPolicy.RETHROW


def test_the_mark_reaches_the_bound_statements_the_flows_execute(db) -> None:
    """Db.prepare's flag is what the policy reads, on each bound statement."""
    marked = db.prepare("SELECT position FROM dataflow_progress WHERE flow = ?", idempotent=True)
    plain = db.prepare("SELECT position FROM dataflow_progress WHERE flow = ?")
    assert marked.bind(("x",)).is_idempotent and not plain.bind(("x",)).is_idempotent
    assert isinstance(
        db.session.get_execution_profile(EXEC_PROFILE_DEFAULT).retry_policy, IdempotentWriteRetry
    )
