"""Run one dataflow with Bytewax's own runner and a recovery folder:

    python -m dataflows run error_counters --recovery .local/recovery/error_counters [--workers 2]

It creates the recovery partitions the first time (a folder with none), then
replaces itself with `python -m bytewax.run "dataflows.<flow>:get_flow()"`,
so a restart on the same folder resumes from the last snapshot. Used by
ops/dataflow (ops/up) and docker-compose.yml.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

FLOWS = ("error_counters", "learning", "insights")
# Recovery partitions are fixed once created; more than the workers we run
# leaves room to scale up later without a fresh replay.
RECOVERY_PARTITIONS = 4
SNAPSHOT_INTERVAL_S = 10


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dataflows run")
    parser.add_argument("flow", choices=FLOWS)
    parser.add_argument("--recovery", required=True, type=Path, help="recovery folder of this flow")
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("UTTERSTREAM_DATAFLOW_WORKERS", "2"))
    )
    args = parser.parse_args(argv)
    if not any(args.recovery.glob("*.sqlite3")):
        args.recovery.mkdir(parents=True, exist_ok=True)
        from bytewax.recovery import init_db_dir

        init_db_dir(args.recovery, RECOVERY_PARTITIONS)
    command = [
        sys.executable,
        "-m",
        "bytewax.run",
        f"dataflows.{args.flow}:get_flow()",
        "-w",
        str(args.workers),
        "-r",
        str(args.recovery),
        "-s",
        str(SNAPSHOT_INTERVAL_S),
        "-b",
        "0",
    ]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
