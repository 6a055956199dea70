"""`python -m dataflows status` (what ops/status prints of the flows): each
shard's watermark and lags, with what each column means."""

from __future__ import annotations

import uuid
from datetime import timedelta

from cql.clock import utc_now
from cql.learning import DATAFLOW_PROGRESS, ProgressRow
from dataflows.commands import status


def test_it_lists_each_shard_and_explains_the_columns(db, migrated, monkeypatch, capsys):
    flow = f"status-test-{uuid.uuid4().hex[:6]}"
    now = utc_now()
    row = ProgressRow(flow, 3, now - timedelta(seconds=42), now - timedelta(seconds=7))
    db.session.execute(db.prepare(DATAFLOW_PROGRESS.insert()), DATAFLOW_PROGRESS.values(row))
    monkeypatch.setenv("UTTERSTREAM_CASSANDRA_KEYSPACE", migrated.cassandra.keyspace)

    status.main([flow])

    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if flow in line]
    cells = [cell.strip() for cell in line.split("│") if cell.strip()]
    assert cells[1] == "3"
    assert float(cells[3]) >= 42.0 and 7.0 <= float(cells[4]) < 30.0
    for column in ("watermark", "as-of lag", "updated"):
        assert f"  {column}" in out  # the legend under the table
    assert "every utterance accepted before it" in out


def test_a_flow_without_progress_says_so(migrated, monkeypatch, capsys):
    monkeypatch.setenv("UTTERSTREAM_CASSANDRA_KEYSPACE", migrated.cassandra.keyspace)
    status.main(["never-ran"])
    assert "no progress recorded for never-ran" in capsys.readouterr().out
