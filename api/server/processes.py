"""The processes of the API server: granian's main process (the server),
the app each of its workers serves, and what the supervisor learns about
processes from the kernel and /proc."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Any

import structlog

log = structlog.get_logger("api.serve")

# What every granian worker serves (api.app.app_from_env, in a worker bound
# to its server), and how.
TARGET = "api.server.processes:worker_app"
BACKLOG = 2048
# Workers that have not stopped this long after SIGTERM are killed.
WORKERS_KILL_TIMEOUT_S = 10
PR_SET_PDEATHSIG = 1


def serve(host: str, port: int, workers: int) -> None:
    """granian's main process, in this process: the one definition of how
    the API is served."""
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    Server(
        TARGET,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        # uvloop, not asyncio's own loop: less CPU per request (README, Performance).
        loop=Loops.uvloop,
        workers=workers,
        backlog=BACKLOG,
        factory=True,
        respawn_failed_workers=True,
        workers_kill_timeout=WORKERS_KILL_TIMEOUT_S,
    ).serve()


def worker_app() -> Any:
    """The app a granian worker serves: api.app.app_from_env, in a worker that
    dies with its server, so no worker outlives a server killed with -9."""
    parent = multiprocessing.parent_process()
    die_with_parent(signal.SIGKILL, parent.pid if parent is not None else None)
    from api.app import app_from_env

    return app_from_env()


def die_with_parent(sig: int, parent: int | None) -> None:
    """On Linux, have the kernel send this process `sig` when its parent dies
    (PR_SET_PDEATHSIG); if the parent is gone already (ours is no longer
    `parent`), send it now. Elsewhere the supervisor's process-group kill is
    what remains."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            log.warning("pdeathsig_not_set", errno=ctypes.get_errno())
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


def kill_group(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """The live (not zombie) children of `pid`, from /proc; none elsewhere."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
            if int(ppid) == pid and state != "Z":
                found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    if not os.path.isdir("/proc/self"):  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def ended(status: int) -> str:
    """How a reaped child ended, in words (its wait status)."""
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"
