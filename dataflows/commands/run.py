"""Run one dataflow with Bytewax's own runner and a recovery folder:

    python -m dataflows run error_counters --recovery .local/recovery/error_counters \
        [--workers 2] [--processes 2]

It creates the recovery partitions the first time (a folder with none), then
replaces itself with `python -m bytewax.run "dataflows.<flow>:get_flow()"`,
so a restart on the same folder resumes from the last snapshot. Used by
ops/dataflow (ops/up) and docker-compose.yml.

With `--processes N` (N > 1) it starts N Bytewax processes that form one
Bytewax cluster (`-i`/`-a`, on free local ports) and waits. A Bytewax cluster
cannot go on without a member, so when any one exits, the others are
stopped too and this exits with its status: the supervisor (ops/dataflow)
then starts the whole group again, and it resumes from the recovery folder.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import structlog

from cql.learning import FLOWS
from runtime.logs import configure_logging
from runtime.processes import free_port, launch, stop
from runtime.settings import Settings

# Recovery partitions are fixed once created; more than the workers we run
# leaves room to scale up later without a fresh replay.
RECOVERY_PARTITIONS = 4
SNAPSHOT_INTERVAL_S = 10
log = structlog.get_logger("dataflows.run")


def bytewax_command(
    flow: str,
    recovery: Path,
    workers: int,
    snapshot_s: int = SNAPSHOT_INTERVAL_S,
    member: tuple[int, list[str]] | None = None,
) -> list[str]:
    """`python -m bytewax.run "dataflows.<flow>:get_flow()"` with `workers`
    workers, resuming from (and snapshotting every `snapshot_s` into) the
    recovery folder, keeping no older snapshots: what operators, the
    benchmark and the crash tests all run. `member` = (process id, every
    process's address) makes it one process of a Bytewax cluster."""
    cluster = [] if member is None else ["-i", str(member[0]), "-a", ";".join(member[1])]
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
        *cluster,
    ]


def run_group(flow: str, recovery: Path, workers: int, processes: int, log_dir: Path) -> int:
    """Run `processes` members of one Bytewax cluster until one exits; stop
    the rest and return that one's exit status."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(processes)]
    members = [
        launch(
            bytewax_command(flow, recovery, workers, member=(i, addresses)),
            log_dir / f"dataflow-{flow}-{i}.log",
            append=True,
        )
        for i in range(processes)
    ]
    log.info("dataflow.group_started", flow=flow, pids=[m.pid for m in members])
    # SIGTERM to this runner (ops/dataflow stop, ops/down) stops the group.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        while (ended := next((m for m in members if m.poll() is not None), None)) is None:
            time.sleep(0.2)
        log.warning("dataflow.member_exited", flow=flow, pid=ended.pid, status=ended.returncode)
        return ended.returncode
    finally:
        for m in members:
            stop(m)


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
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Bytewax processes forming one cluster, each with --workers workers (default 1)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path(".local/log"),
        help="folder of each process's log with --processes above 1 (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not any(args.recovery.glob("*.sqlite3")):
        args.recovery.mkdir(parents=True, exist_ok=True)
        from bytewax.recovery import init_db_dir

        init_db_dir(args.recovery, RECOVERY_PARTITIONS)
    if args.processes > 1:
        configure_logging(Settings.from_env().log)
        sys.exit(run_group(args.flow, args.recovery, args.workers, args.processes, args.log_dir))
    os.execv(sys.executable, bytewax_command(args.flow, args.recovery, args.workers))


if __name__ == "__main__":
    main()
