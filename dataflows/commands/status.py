"""How far behind each dataflow is, per feed shard, from dataflow_progress,
and how many learners have items waiting to be written, from its recovery
folder:

    python -m dataflows status [FLOW ...]

Each shard's row holds its watermark: the position of its last complete
sweep of the feed less how long the flow may hold an entry before writing
it (the counting flows' flush interval plus an allowance, under a second).
"Read lag" is now minus that sweep position: about the feed's reader lag
plus the sweep interval, under a second by design; one that keeps growing
means the flow is down or cannot keep up. "As-of lag" is how far behind the
`as_of` the API reports is.
"""

from __future__ import annotations

import argparse
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cql.clock import utc_now
from cql.learning import DATAFLOW_PROGRESS, FLOWS, ProgressRow
from cql.session import Db
from dataflows import error_counters, learning
from dataflows.batching import write_hold
from runtime.logs import configure_logging
from runtime.settings import Settings

# The counting flows: they hold items for a flush interval before writing.
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
    learners active within the last flush interval."""
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


def lag_table(rows: list[ProgressRow], settings: Settings, now: datetime) -> Table:
    table = Table("flow", "shard", "watermark (UTC)", "read lag s", "as-of lag s", "updated s ago")
    for row in rows:
        hold = write_hold(settings.dataflow) if row.flow in COUNTING else timedelta(0)
        lag = now - row.position
        table.add_row(
            row.flow,
            str(row.shard),
            row.position.isoformat(timespec="seconds"),
            f"{(lag - hold).total_seconds():.1f}",
            f"{lag.total_seconds():.1f}",
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
        console.print(lag_table(rows, settings, utc_now()))
    else:
        console.print(f"no progress recorded for {', '.join(args.flows)}")
    for flow in args.flows:
        recovery = Path(settings.dataflow.recovery_dir) / flow
        if flow in COUNTING and any(recovery.glob("*.sqlite3")):
            keys = held_keys(recovery)
            console.print(
                f"{flow}: {keys} learners with items waiting (last snapshot in {recovery})"
            )


if __name__ == "__main__":
    main()
