"""The supervisor: runs the API server as its child, starts a new one when
it dies, counts every restart (the server's and its workers'), and stops it
gracefully on SIGTERM or SIGINT (see api/server/__init__.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import structlog

from api.server.processes import alive, children_of, die_with_parent, ended, kill_group, serve
from api.server.state import read_state, timestamp, write_state

log = structlog.get_logger("api.serve")

# After forwarding SIGTERM, the supervisor waits this long, then kills the group.
STOP_GRACE_S = 15.0
# A server that ran this long was not failing to start: restart it at once.
STABLE_S = 10.0
MAX_BACKOFF_S = 4.0
POLL_S = 0.05
WATCH_WORKERS_S = 0.25


class Supervisor:
    def __init__(self, host: str, port: int, workers: int, state_path: Path | None) -> None:
        self.host, self.port, self.workers = host, port, workers
        self.state_path = state_path
        self.pid = os.getpid()
        self.started_at = timestamp()
        self.server: int | None = None
        self.server_since = 0.0
        self.server_started_at = ""
        self.worker_pids: set[int] = set()
        self.vanished: set[int] = set()
        self.restarts = {"server": 0, "worker": 0, "supervisor": 0}
        self.last_restart: dict[str, Any] | None = None
        self.succeeds: dict[str, Any] | None = None
        previous = read_state(state_path) if state_path is not None else None
        if previous is not None:
            # A supervisor that died without stopping (kill -9), restarted by
            # ops/api's loop: carry its counts on, and count it. (A file it
            # cannot read starts the counts afresh.)
            with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
                dead = int(previous["supervisor"]["pid"])
                if previous["state"] != "stopped" and not alive(dead):
                    self.restarts.update({k: int(n) for k, n in previous["restarts"].items()})
                    self.succeeds = {"pid": dead, "how": "died", "at": timestamp()}
        self.quick_exits = 0
        # Set by SIGTERM/SIGINT; the loop passes it on to each server once.
        self.stopping: int | None = None
        self.stop_deadline = 0.0
        self.stopped_server: int | None = None

    # ---- the loop

    def run(self) -> int:
        from api.edge.metrics import RESTARTS

        self._restarts = RESTARTS
        for process in self.restarts:
            RESTARTS.labels(process)  # present at 0 from the start
        if self.succeeds is not None:
            self._count("supervisor", self.succeeds["pid"], self.succeeds["how"])
            log.error("api_supervisor_died", pid=self.succeeds["pid"], restarts=self.restarts)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        log.info(
            "api_supervisor_started",
            pid=self.pid,
            listen=f"{self.host}:{self.port}",
            workers=self.workers,
        )
        self._start_server()
        next_watch = 0.0
        while True:
            self._reap()
            if self.server is None:
                if self.stopping is not None:
                    break
                self._wait(self._backoff_s())
                if self.stopping is not None:
                    break
                self._start_server()
            now = time.monotonic()
            if now >= next_watch:
                self._watch_workers()
                next_watch = now + WATCH_WORKERS_S
            if self.stopping is not None:
                self._stop_server(now)
            time.sleep(POLL_S)
        self._write_state("stopped")
        log.info("api_supervisor_stopped", pid=self.pid, restarts=self.restarts)
        return 0

    def _on_stop(self, signum: int, _frame: Any) -> None:
        if self.stopping is None:
            self.stopping = signum
            self.stop_deadline = time.monotonic() + STOP_GRACE_S

    def _stop_server(self, now: float) -> None:
        """SIGTERM to the server once (it stops its workers gracefully), and
        SIGKILL to its group if it is still there after STOP_GRACE_S."""
        if self.server is None:
            return
        if self.stopped_server != self.server:
            self.stopped_server = self.server
            assert self.stopping is not None
            log.info("api_supervisor_stopping", signal=signal.Signals(self.stopping).name)
            self._write_state("stopping")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.server, signal.SIGTERM)
        elif now > self.stop_deadline:
            log.warning("api_server_killed", pid=self.server, after_s=STOP_GRACE_S)
            kill_group(self.server)
            self.stop_deadline = float("inf")

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        if self.server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.server, signal.SIGHUP)

    def _wait(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while self.stopping is None and time.monotonic() < until:
            time.sleep(POLL_S)

    def _backoff_s(self) -> float:
        """0 unless servers keep dying soon after starting: then 0.5, 1, 2, 4 s."""
        if self.quick_exits <= 1:
            return 0.0
        return min(MAX_BACKOFF_S, 0.25 * 2 ** (self.quick_exits - 1))

    # ---- the server

    def _start_server(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns here
            self._become_server()
        with contextlib.suppress(OSError):  # the child does it too; whichever is first
            os.setpgid(pid, pid)
        self.server = pid
        self.server_since = time.monotonic()
        self.server_started_at = timestamp()
        self.worker_pids, self.vanished = set(), set()
        log.info("api_server_started", pid=pid, listen=f"{self.host}:{self.port}")
        self._write_state("running")

    def _become_server(self) -> None:
        code = 1
        try:
            os.setpgid(0, 0)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            die_with_parent(signal.SIGTERM, self.pid)
            serve(self.host, self.port, self.workers)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _reap(self) -> None:
        """Reap every child that ended: the server, or (when this is PID 1 in
        a container) an orphan handed to us."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.server:
                self._server_ended(status)

    def _server_ended(self, status: int) -> None:
        pid = self.server
        assert pid is not None
        uptime = time.monotonic() - self.server_since
        self.server = None
        kill_group(pid)  # its workers, should any have outlived it
        self.worker_pids, self.vanished = set(), set()
        how = ended(status)
        if self.stopping is not None:
            log.info("api_server_stopped", pid=pid, how=how)
            return
        self.quick_exits = self.quick_exits + 1 if uptime < STABLE_S else 1
        self._count("server", pid, how)
        log.error(
            "api_server_died",
            pid=pid,
            how=how,
            uptime_s=round(uptime, 1),
            restart_in_s=self._backoff_s(),
            restarts=self.restarts,
        )

    def _watch_workers(self) -> None:
        """Workers that died while their server lives: granian respawns
        them; count them. Also keeps the state file's pids current.

        Workers seen gone are counted a tick later, once their server has
        outlived them: when the whole server is killed, its workers may
        vanish a moment before it does, and that is one server restart."""
        if self.server is None or not alive(self.server):
            return
        if self.vanished and self.stopping is None:
            for pid in sorted(self.vanished):
                self._count("worker", pid, "died")
            log.error(
                "api_worker_died",
                pids=sorted(self.vanished),
                server=self.server,
                respawned_by="granian",
                restarts=self.restarts,
            )
        current = set(children_of(self.server))
        self.vanished = self.worker_pids - current
        if current != self.worker_pids:
            self.worker_pids = current
            self._write_state("running" if self.stopping is None else "stopping")

    def _count(self, process: str, pid: int, how: str) -> None:
        self.restarts[process] += 1
        self._restarts.labels(process).inc()
        self.last_restart = {"process": process, "pid": pid, "how": how, "at": timestamp()}
        self._write_state("running")

    # ---- the state file

    def _write_state(self, state: str) -> None:
        if self.state_path is None:
            return
        record = {
            "state": state,
            "listen": f"{self.host}:{self.port}",
            "workers_wanted": self.workers,
            "supervisor": {"pid": self.pid, "started_at": self.started_at},
            "server": None
            if self.server is None
            else {
                "pid": self.server,
                "started_at": self.server_started_at,
                "workers": sorted(self.worker_pids),
            },
            "restarts": self.restarts,
            "last_restart": self.last_restart,
        }
        write_state(self.state_path, record)
