"""Where the machine's CPU went during one measured point: Cassandra, the
API workers, and everything else (mostly the load generator). On a small
machine all of them share the same cores, so this is what says whether the
API or Cassandra is the limit of a figure."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def cassandra_pid() -> int | None:
    """The local CassandraDaemon, when this machine runs one."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"CassandraDaemon" in (proc / "cmdline").read_bytes():
                return int(proc.name)
        except OSError:
            continue
    return None


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


class Share:
    """`with Share(api_pids) as share: ...` then `share.result`: each part's
    CPU as a percentage of the whole machine (all cores) over the block."""

    def __init__(self, api_pids: list[int]) -> None:
        self.parts = {"cassandra": [p for p in [cassandra_pid()] if p], "api": api_pids}
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Share:
        self._start = time.monotonic()
        self._cpu = {name: sum(map(_cpu_s, pids)) for name, pids in self.parts.items()}
        self._busy = _machine_busy_s()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        capacity = (time.monotonic() - self._start) * (os.cpu_count() or 1)
        used = {name: sum(map(_cpu_s, pids)) - self._cpu[name] for name, pids in self.parts.items()}
        busy = _machine_busy_s() - self._busy
        used["other"] = max(0.0, busy - sum(used.values()))
        self.result = {name: round(100 * s / capacity, 1) for name, s in used.items()}
        self.result["idle"] = round(max(0.0, 100 - 100 * busy / capacity), 1)


def _machine_busy_s() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK
