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

from cql.learning import FLOWS
from runtime.settings import Settings

# Recovery partitions are fixed once created; more than the workers we run
# leaves room to scale up later without a fresh replay.
RECOVERY_PARTITIONS = 4
SNAPSHOT_INTERVAL_S = 10


def bytewax_command(
    flow: str, recovery: Path, workers: int, snapshot_s: int = SNAPSHOT_INTERVAL_S
) -> list[str]:
    """`python -m bytewax.run "dataflows.<flow>:get_flow()"` with `workers`
    workers, resuming from (and snapshotting every `snapshot_s` into) the
    recovery folder, keeping no older snapshots: what operators, the
    benchmark and the crash tests all run."""
    return [
        sys.executable,
        "-m",
        "bytewax.run",
        f"dataflows.{flow}:get_flow()",
        "-w",
        str(workers),
        "-r",
        str(recovery),
        "-s",
        str(snapshot_s),
        "-b",
        "0",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dataflows run")
    parser.add_argument("flow", choices=FLOWS)
    parser.add_argument("--recovery", required=True, type=Path, help="recovery folder of this flow")
    parser.add_argument(
        "--workers",
        type=int,
        default=Settings.from_env().dataflow.workers,
        help="Bytewax workers (default %(default)s: the setting UTTERSTREAM_DATAFLOW_WORKERS)",
    )
    args = parser.parse_args(argv)
    if not any(args.recovery.glob("*.sqlite3")):
        args.recovery.mkdir(parents=True, exist_ok=True)
        from bytewax.recovery import init_db_dir

        init_db_dir(args.recovery, RECOVERY_PARTITIONS)
    os.execv(sys.executable, bytewax_command(args.flow, args.recovery, args.workers))


if __name__ == "__main__":
    main()
