"""Child processes: a free port to give one, starting one with its output in
a log file (and waiting until it says it is ready), and stopping it.

The tests, the benchmark and the API supervisor all start API servers and
dataflows as real OS processes; doing it in one place means every child is
reaped, none outlives a failed start, and a server's workers go down with
it even when it ignores SIGTERM."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at this moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    command: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    *,
    append: bool = False,
    ready: Callable[[subprocess.Popen[bytes]], bool] | None = None,
    deadline_s: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start `command` in the project folder, its stdout and stderr going to
    `log` (truncated first unless `append`). With `ready`, poll
    `ready(process)` until it returns True: if the process exits first, or
    `deadline_s` passes, it is stopped and RuntimeError names the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab" if append else "wb") as out:  # the child keeps its own copy
        proc = subprocess.Popen(
            list(command), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if ready is None:
        return proc
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{log.stem} exited with {proc.returncode}; see {log}")
        if ready(proc):
            return proc
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"{log.stem} not ready after {deadline_s}s; see {log}")


def stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> int:
    """SIGTERM, then after `grace_s` (at once if 0: a crash, nothing flushed)
    SIGKILL to its children and to it. Returns its exit status once reaped."""
    if proc.poll() is None and grace_s > 0:
        proc.terminate()
        try:
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        # Children first: once the parent is gone they belong to init.
        subprocess.run(["pkill", "-9", "-P", str(proc.pid)], check=False)
        proc.kill()
    return proc.wait()
