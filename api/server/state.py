"""The supervisor's state file (`--state`): its processes and restarts, as
JSON, rewritten whole on every change, and read back by the next supervisor
and by ops/status (`python -m api serve --show`)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from api.server.processes import alive

log = structlog.get_logger("api.serve")


def write_state(path: Path, record: dict[str, Any]) -> None:
    # Written aside and renamed over, so a reader never sees half a file.
    scratch = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(scratch, path)
    except OSError as exc:  # the API goes on; only ops/status misses it
        log.warning("api_state_not_written", path=str(path), error=repr(exc))


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def describe(path: Path) -> list[str]:
    """The state file in words, for ops/status."""
    record = read_state(path)
    if record is None:
        return [f"no supervisor state in {path}"]
    supervisor = record["supervisor"]
    running = alive(supervisor["pid"])
    lines = [
        f"supervisor pid {supervisor['pid']} "
        + (f"since {supervisor['started_at']}" if running else "(not running)")
        + f", {record['listen']}"
    ]
    server = record["server"]
    if running and server is not None:
        workers = " ".join(map(str, server["workers"])) or "none yet"
        lines.append(
            f"server pid {server['pid']} since {server['started_at']}, "
            f"workers {workers} (of {record['workers_wanted']})"
        )
    restarts = record["restarts"]
    line = ", ".join(f"{process} {n}" for process, n in restarts.items())
    line = f"restarts: {line}"
    if (last := record["last_restart"]) is not None:
        line += f" (last: {last['process']} {last['pid']} {last['how']} at {last['at']})"
    lines.append(line)
    return lines


def timestamp() -> str:
    """The state file's timestamps: UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
