"""Where the machine's CPU went during one measured point: Cassandra, the
API workers, and everything else (mostly the load generator). On a small
machine all of them share the same cores, so this is what says whether the
API or Cassandra is the limit of a figure."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def cassandra_pid() -> int | None:
    """The local CassandraDaemon, when this machine runs one: the oldest,
    when there are several (tests start short-lived ones of their own)."""
    found: list[tuple[int, int]] = []  # (start time in ticks since boot, pid)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"CassandraDaemon" in (proc / "cmdline").read_bytes():
                started = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[19])
                found.append((started, int(proc.name)))
        except (OSError, ValueError, IndexError):
            continue
    return min(found)[1] if found else None


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


class Share:
    """`with Share(api_pids) as share: ...` then `share.result`: each part's
    CPU as a percentage of the whole machine (all cores) over the block.
    `bench` is this process with the children it reaped in the block (the
    load generator, the driver processes); `other` is the rest, and
    `other_top` names its busiest processes, so "other" is never a mystery."""

    def __init__(self, api_pids: list[int]) -> None:
        self.parts = {"cassandra": [p for p in [cassandra_pid()] if p], "api": api_pids}
        self.result: dict[str, Any] = {}

    def _part_cpu(self) -> dict[str, float]:
        found = {name: sum(map(_cpu_s, pids)) for name, pids in self.parts.items()}
        found["bench"] = own_cpu_s(os.getpid())
        return found

    def __enter__(self) -> Share:
        self._start = time.monotonic()
        self._cpu = self._part_cpu()
        self._each = _every_process_cpu_s()
        self._busy = _machine_busy_s()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        capacity = (time.monotonic() - self._start) * (os.cpu_count() or 1)
        busy = _machine_busy_s() - self._busy
        now = self._part_cpu()
        used = {name: max(0.0, s - self._cpu[name]) for name, s in now.items()}
        used["other"] = max(0.0, busy - sum(used.values()))
        self.result = {name: round(100 * s / capacity, 1) for name, s in used.items()}
        self.result["idle"] = round(max(0.0, 100 - 100 * busy / capacity), 1)
        self.result["other_top"] = self._other_top(capacity)

    def _other_top(self, capacity: float) -> list[tuple[str, float]]:
        """The five busiest processes outside Cassandra, the API and the
        bench's own tree, by name (% of the machine)."""
        known = {os.getpid()} | {p for pids in self.parts.values() for p in pids}
        by_name: dict[str, float] = {}
        for pid, (name, seconds) in _every_process_cpu_s().items():
            if pid in known or pid not in self._each:
                continue
            by_name[name] = by_name.get(name, 0.0) + seconds - self._each[pid][1]
        top = sorted(by_name.items(), key=lambda item: -item[1])[:5]
        return [(name, round(100 * s / capacity, 1)) for name, s in top if s > 0]


def _every_process_cpu_s() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds (its own, not its children's)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                name = _name(proc)
            except OSError:
                continue
            found[int(proc.name)] = (name, _cpu_s(int(proc.name)))
    return found


def _name(proc: Path) -> str:
    """The command, and for a Python or Java process what it runs: every
    flow and tool here is a `python -m <module> ...`."""
    comm = (proc / "comm").read_text().strip()
    if not comm.startswith(("python", "java")):
        return comm
    args = (proc / "cmdline").read_bytes().split(b"\0")
    if b"-m" in args[:-1]:
        module = args[args.index(b"-m") + 1 : args.index(b"-m") + 4]
        return f"{comm} -m " + " ".join(a.decode(errors="replace") for a in module if a)
    return comm


def _machine_busy_s() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and everything under it: its
    live descendants, and the children each of them has reaped. 0 once it is
    gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in tree:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue  # ended meanwhile: its parent's children_* have it once reaped
        total += t.user + t.system + t.children_user + t.children_system
    return total


def own_cpu_s(pid: int) -> float:
    """CPU seconds of a process and the children it has reaped (no scan for
    live descendants: cheap enough to call often)."""
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system + t.children_user + t.children_system


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its live descendants, MiB."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in tree:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return round(total / 2**20, 1)


class CoreShare:
    """`with CoreShare(cpu_s, rss_mib) as share: ...` then `share.result`:
    for each name `cpu_s()` gives (its CPU seconds so far, e.g. `tree_cpu_s`
    of its process), the CPU over the block as % of one core (200 = two cores
    busy all the time), and its RSS from `rss_mib()` at the end."""

    def __init__(
        self, cpu_s: Callable[[], dict[str, float]], rss_mib: Callable[[], dict[str, float]]
    ) -> None:
        self._read_cpu, self._read_rss = cpu_s, rss_mib
        self.result: dict[str, dict[str, float]] = {}
        self.seconds = 0.0

    def __enter__(self) -> CoreShare:
        self._start, self._cpu = time.monotonic(), self._read_cpu()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.seconds = time.monotonic() - self._start
        used, rss = self._read_cpu(), self._read_rss()
        self.result = {
            name: {
                "cpu_percent_of_core": round(
                    100 * (used[name] - self._cpu[name]) / self.seconds, 1
                ),
                "rss_mib": rss.get(name, 0.0),
            }
            for name in used
        }


class OwnShare:
    """`with OwnShare() as share: ...` then `share.result`: this process's
    CPU over the block (every thread, no children) as % of one core."""

    def __enter__(self) -> OwnShare:
        self._start, self._cpu = time.monotonic(), time.process_time()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        seconds = time.monotonic() - self._start
        self.result = round(100 * (time.process_time() - self._cpu) / seconds, 1)


def ms_per(group: list[dict[str, Any]], rate: str) -> dict[str, float | None]:
    """CPU milliseconds per utterance, LWT or request of Cassandra, the API, the
    bench's load generator or driver, and the whole machine: a part's share
    of all cores over the rate."""
    cores = os.cpu_count() or 1
    out = {}
    for part in ("cassandra", "api", "bench", "machine"):
        per = []
        for p in group:
            c = p["cpu_percent"]
            share = 100 - c["idle"] if part == "machine" else c.get(part, 0.0)
            if p[rate]:
                per.append(1000 * share / 100 * cores / p[rate])
        out[part] = round(statistics.median(per), 2) if per else None
    return out
