"""How far behind each dataflow is, per feed shard, from dataflow_progress,
and how many learners have items waiting to be written, from its recovery
folder:

    python -m dataflows status [FLOW ...]

Each shard's row holds its watermark: the position of its newest complete
sweep of the feed whose entries the flow has also written (the API's
`as_of` is the slowest shard's). "As-of lag" is now minus that watermark:
about the feed's reader lag, plus the time to the next sweep, plus the
flow's write of what it read (its flush and the write itself); one
that keeps growing means the flow is down or cannot keep up. "Updated" is
how long ago the row was written: a flow that stopped stops updating it.
"""

from __future__ import annotations

import argparse
import sqlite3
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cql.clock import utc_now
from cql.learning import DATAFLOW_PROGRESS, FLOWS, ProgressRow
from cql.session import Db
from dataflows import error_counters, learning
from runtime.logs import configure_logging
from runtime.settings import Settings

# The counting flows: they collect items for a flush before writing.
COUNTING = (error_counters.FLOW, learning.FLOW)


def progress(db: Db, flows: list[str]) -> list[ProgressRow]:
    """Every shard's progress row of the named flows (one partition each)."""
    statement = db.prepare(DATAFLOW_PROGRESS.select(), idempotent=True)
    return [
        DATAFLOW_PROGRESS.from_row(row)
        for flow in flows
        for row in db.session.execute(statement, (flow,))
    ]


def held_keys(recovery: Path, step: str = "batch_by_learner") -> int:
    """How many keys (learners) hold state in the latest snapshot of a
    flow's step, from its recovery folder. The collect step drops a key's
    state once it has written its items, so this stays near the number of
    learners active within the last flush."""
    live = 0
    for part in recovery.glob("*.sqlite3"):
        with sqlite3.connect(part) as conn:
            live += conn.execute(
                """SELECT count(*) FROM snaps s
                   WHERE step_id LIKE ? AND ser_change IS NOT NULL
                   AND snap_epoch = (SELECT max(snap_epoch) FROM snaps l
                                     WHERE l.step_id = s.step_id AND l.state_key = s.state_key)""",
                (f"%.{step}.%",),
            ).fetchone()[0]
    return live


COLUMNS = """\
  watermark    the flow's as_of for that shard: every utterance accepted before it
               is written to the flow's tables (the API answers with the slowest shard's)
  as-of lag    now minus the watermark: about the feed's reader lag, the wait for the
               next sweep and the flow's write of what it read; a second or two at most
               while the flow keeps up, growing when it is down or cannot keep up
  updated      how long ago the shard last published: a stopped flow stops updating"""


def lag_table(rows: list[ProgressRow], now: datetime) -> Table:
    table = Table("flow", "shard", "watermark (UTC)", "as-of lag s", "updated s ago")
    for row in rows:
        table.add_row(
            row.flow,
            str(row.shard),
            row.position.isoformat(timespec="seconds"),
            f"{(now - row.position).total_seconds():.1f}",
            f"{(now - row.updated_at).total_seconds():.1f}",
        )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dataflows status", description=__doc__)
    parser.add_argument("flows", nargs="*", default=list(FLOWS))
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log)
    db = Db.open(settings.cassandra)
    try:
        rows = progress(db, args.flows)
    finally:
        db.close()
    console = Console()
    if not console.is_terminal:
        console.width = 120  # piped or logged: do not squeeze the table to 80 columns
    if rows:
        console.print(lag_table(rows, utc_now()))
        console.print(COLUMNS, highlight=False)
    else:
        console.print(f"no progress recorded for {', '.join(args.flows)}")
    for flow in args.flows:
        recovery = Path(settings.dataflow.recovery_dir) / flow
        if flow in COUNTING and any(recovery.glob("*.sqlite3")):
            keys = held_keys(recovery)
            console.print(
                f"{flow}: {keys} learners with items waiting in the collect step, written "
                f"within a flush (last snapshot in {recovery})"
            )


if __name__ == "__main__":
    main()
