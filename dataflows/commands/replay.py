"""Replay a dataflow over the change feed, from a point in time until it has
caught up, then exit:

    python -m dataflows replay error_counters [--from 2026-01-01T00:00:00Z] [--workers 2]

Every partition reads its shard from `--from` (default: the feed's TTL ago,
i.e. everything still in the feed) up to the moment the replay started,
minus the reader lag; then the flow ends, closing its open windows. The
flows write facts and absolute recounts, so a replay rewrites the served
tables with the values they already have (running it twice gives the same
tables) and repairs any that are wrong.

It runs with a fresh recovery directory, taking snapshots like the live flow
does, and throws it away at the end: the live flow's own recovery state
(where it resumes) is never touched. Stop the live flow while a replay of
the same flow runs: two writers recounting one learner's windows at once can
leave a count that misses the other's latest facts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import structlog
from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir
from prometheus_client import REGISTRY

from cql.clock import utc_now
from dataflows import error_counters, insights, learning, passthrough
from dataflows.connectors.progress import forget_progress
from dataflows.resources import acquire_db, release_db
from runtime import pauses
from runtime.logs import configure_logging
from runtime.settings import Settings

log = structlog.get_logger("dataflows.commands.replay")

FLOWS: dict[str, ModuleType] = {
    m.FLOW: m for m in (error_counters, insights, learning, passthrough)
}


def replay(
    name: str,
    settings: Settings,
    *,
    start: datetime | None = None,
    until: datetime | None = None,
    workers: int = 1,
) -> int:
    """Run flow `name` over the feed from `start` until caught up (or until
    `until`); return how many feed entries it read. Its progress is recorded
    as `<name>-replay`."""
    progress_name = f"{name}-replay"
    _forget(settings, progress_name)
    stop_at = until or utc_now() - timedelta(seconds=settings.feed.reader_lag_s)
    module = FLOWS[name]
    source = module.feed_source(settings, progress_name, start=start, stop_at=stop_at)
    flow = module.get_flow(source=source, settings=settings)
    before = _entries_read(progress_name, settings.feed.shards)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"replay-{name}-") as recovery:
        init_db_dir(Path(recovery), workers)
        cli_main(
            flow,
            workers_per_process=workers,
            epoch_interval=timedelta(seconds=10),
            recovery_config=RecoveryConfig(recovery),
        )
    seconds = time.monotonic() - began
    entries = _entries_read(progress_name, settings.feed.shards) - before
    log.info(
        "replay_done",
        flow=name,
        entries=entries,
        seconds=round(seconds, 2),
        entries_per_s=round(entries / seconds, 1),
        until=stop_at.isoformat(),
    )
    return entries


def _forget(settings: Settings, progress_name: str) -> None:
    """A replay starts afresh: an earlier one's progress means nothing to it."""
    db = acquire_db(settings.cassandra)
    try:
        forget_progress(db, progress_name)
    finally:
        release_db(settings.cassandra)


def _entries_read(flow: str, shards: int) -> int:
    return int(
        sum(
            REGISTRY.get_sample_value(
                "utterstream_feed_entries_read_total", {"flow": flow, "shard": str(shard)}
            )
            or 0
            for shard in range(shards)
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dataflows replay", description=__doc__)
    parser.add_argument("flow", choices=sorted(FLOWS))
    parser.add_argument(
        "--from",
        dest="start",
        type=datetime.fromisoformat,
        help="RFC 3339 instant to read the feed from (default: the feed's TTL ago)",
    )
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log)
    pauses.spaced()
    replay(args.flow, settings, start=args.start, workers=args.workers)


if __name__ == "__main__":
    main()
