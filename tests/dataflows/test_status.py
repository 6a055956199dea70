"""`python -m dataflows status` (what ops/status prints of the flows): each
shard's watermark and lags, with what each column means. Run as a command,
as ops/status runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import timedelta

from cql.clock import utc_now
from cql.learning import DATAFLOW_PROGRESS, ProgressRow


def status(keyspace: str, *flows: str) -> str:
    env = {**os.environ, "UTTERSTREAM_CASSANDRA_KEYSPACE": keyspace}
    done = subprocess.run(
        [sys.executable, "-m", "dataflows", "status", *flows],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


def test_it_lists_each_shard_and_explains_the_columns(db, migrated):
    flow = f"status-test-{uuid.uuid4().hex[:6]}"
    now = utc_now()
    row = ProgressRow(flow, 3, now - timedelta(seconds=42), now - timedelta(seconds=7))
    db.session.execute(db.prepare(DATAFLOW_PROGRESS.insert()), DATAFLOW_PROGRESS.values(row))

    out = status(migrated.cassandra.keyspace, flow)

    (line,) = [line for line in out.splitlines() if flow in line]
    cells = [cell.strip() for cell in line.split("│") if cell.strip()]
    assert cells[1] == "3"
    assert float(cells[3]) >= 42.0 and 7.0 <= float(cells[4]) < 60.0
    for column in ("watermark", "as-of lag", "updated"):
        assert f"  {column}" in out  # the legend under the table
    assert "every utterance accepted before it" in out


def test_a_flow_without_progress_says_so(migrated):
    out = status(migrated.cassandra.keyspace, "never-ran")
    assert "no progress recorded for never-ran" in out
