"""How far behind each dataflow is, per feed shard, from dataflow_progress,
and how many learners hold open window state, from its recovery folder:

    python -m dataflows status [FLOW ...]

Each shard's row holds its watermark: the read position less how long the
flow may hold an entry in an open window before writing it (about 77 s for
the error counters, 16 min for learning). "Read lag" is now minus the read
position (the watermark plus that hold): a few seconds by design (the
feed's reader lag); one that keeps growing means the flow is down or cannot
keep up. "As-of lag" is how far behind the `as_of` the API reports is.
"""

from __future__ import annotations

import argparse
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cql.clock import MINUTE, QUARTER_HOUR, utc_now
from cql.learning import DATAFLOW_PROGRESS, ProgressRow
from cql.session import Db
from dataflows import error_counters, insights, learning
from dataflows.windows import window_hold
from runtime.logs import configure_logging
from runtime.settings import Settings

DEFAULT_FLOWS = (error_counters.FLOW, learning.FLOW, insights.FLOW)
# Each counting flow's window: its step (as named in recovery snapshots) and length.
WINDOWS = {
    error_counters.FLOW: ("batch_by_minute", MINUTE),
    learning.FLOW: ("batch_by_quarter_hour", QUARTER_HOUR),
}


def progress(db: Db, flows: list[str]) -> list[ProgressRow]:
    """Every shard's progress row of the named flows (one partition each)."""
    statement = db.prepare(DATAFLOW_PROGRESS.select(), idempotent=True)
    return [
        DATAFLOW_PROGRESS.from_row(row)
        for flow in flows
        for row in db.session.execute(statement, (flow,))
    ]


def open_window_keys(recovery: Path, step: str) -> int:
    """How many keys (learners) hold window state in the latest snapshot of
    a flow's window step, from its recovery folder. Bytewax drops a key's
    state once all its windows have closed, so this stays near the number of
    learners active within the last window plus its wait."""
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
        window = WINDOWS.get(row.flow)
        hold = window_hold(window[1], settings.dataflow) if window else timedelta(0)
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
    parser.add_argument("flows", nargs="*", default=list(DEFAULT_FLOWS))
    args = parser.parse_args(argv)
    configure_logging()
    settings = Settings.from_env()
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
        if flow in WINDOWS and any(recovery.glob("*.sqlite3")):
            keys = open_window_keys(recovery, WINDOWS[flow][0])
            console.print(
                f"{flow}: {keys} learners with open windows (last snapshot in {recovery})"
            )


if __name__ == "__main__":
    main()
