"""`python -m bench.live [--quick] [--seconds S] [--rate R]`: the live section
of `ops/bench`, also runnable alone.

An API of its own (2 workers) and, unless --no-flows, the dataflows, on the
bench keyspace. 100 SSE clients each follow one learner (`user_id`, types
utterance and errors), 50 WebSocket clients each send for one learner of
their own, while utterances flow at --rate (REST POSTs for the SSE
learners, WebSocket messages for the others). During the run every SSE
client drops its connection now and then and resumes with Last-Event-ID,
one API worker is killed with -9 half-way, and 10 % more SSE connections
are stalled (opened, never read). Measured:

- write -> client: from the 202 (the write is durable before it) to the
  `utterance` event at the client; negative when the event wins the race;
  apart, the events whose client was connected at the 202, as the others
  came on resuming after the client's own drop;
- POST -> `errors` event that counts it (its minute window's count);
- events lost and duplicated: per client, `utterance` events of its
  learner received vs posted, after reconnects and the kill, counted once
  the owed events stopped coming (`_Clients._drain`), so that a late event
  is not taken for a lost one;
- API memory (RSS of the server and its workers) sampled over the run;
- the clients' own lag: every client runs on this one process's event
  loop, so its CPU and how late its event loop wakes up say how much of a
  latency is the client's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from api.commands.keys import create
from bench import cpu
from bench.common import ApiServer, bench_settings, make_learners, summarize
from bench.live_clients import (
    SSE_CLIENTS,
    WS_CLIENTS,
    Ledger,
    poster,
    sse_client,
    stall,
    ws_client,
)
from cql.migrate import migrate
from cql.session import Db
from runtime.logs import configure_logging
from runtime.settings import Settings

# After the load, the clients wait for the events still owed until none has
# come for DRAIN_QUIET_S, DRAIN_MAX_S at most: an event later than that
# counts as lost.
DRAIN_QUIET_S = 30.0
DRAIN_MAX_S = 300.0


def _lost_and_duplicated(
    ledger: Ledger, users: list[str], killed_at: float | None, ended_at: float
) -> dict[str, Any]:
    """Per client, its learner's utterances acknowledged and never seen;
    when they were acknowledged says why: around the kill, or so late that
    the run ended before their event came."""
    lost: list[tuple[int, str]] = []
    duplicated = 0
    for client, user in enumerate(users):
        received = ledger.seen[client]
        lost += [(client, uid) for uid in ledger.unseen(client, user)]
        duplicated += len(received) - len(set(received))
    when = {"within 15 s of the kill": 0, "in the last 10 s of posting": 0, "elsewhere": 0}
    for _client, uid in lost:
        acked = ledger.acked[uid]
        if killed_at is not None and abs(acked - killed_at) <= 15:
            when["within 15 s of the kill"] += 1
        elif acked >= ended_at - 10:
            when["in the last 10 s of posting"] += 1
        else:
            when["elsewhere"] += 1
    return {
        "lost": len(lost), "duplicated": duplicated, "lost_acked": when, "lost_sample": lost[:10]
    }  # fmt: skip


def _latencies(ledger: Ledger) -> dict[str, Any]:
    from_ack = [
        (t - ledger.acked[u]) * 1000 for u, t in ledger.first_seen.items() if u in ledger.acked
    ]
    # Those whose follower was connected at the 202: the others waited for
    # the follower's own reconnect (it drops every 5-20 s) and came on resume.
    connected = [
        (t - ledger.acked[u]) * 1000
        for u, t in ledger.first_seen.items()
        if u in ledger.acked and ledger.first_seen_since[u] <= ledger.acked[u]
    ]
    from_post = [
        (t - ledger.sent[u]) * 1000 for u, t in ledger.errors_seen.items() if u in ledger.sent
    ]
    return {
        "write_to_client_ms": summarize(from_ack),
        "write_to_connected_client_ms": summarize(connected),
        "events_to_connected": len(connected),
        "events_on_resume": len(from_ack) - len(connected),
        "post_to_errors_event_ms": summarize(from_post),
        "errors_events_measured": len(from_post),
        "utterances_posted": len(ledger.acked),
    }


class _Clients:
    """Every client of a run, started together and stopped in order."""

    def __init__(self, api: ApiServer, key: str, learners: list[tuple[str, str]]) -> None:
        self.ledger = Ledger()
        self.sse_learners, self.ws_learners = learners[:SSE_CLIENTS], learners[SSE_CLIENTS:]
        self.listening, self.posting = asyncio.Event(), asyncio.Event()
        self.sending = asyncio.Event()
        self.sending.set()
        self.api, self.key = api, key
        # When the last POST was answered, and how long the events owed then took.
        self.posted_at, self.drained_s = 0.0, 0.0

    async def start(self, rate: float) -> None:
        api, key, ledger = self.api, self.key, self.ledger
        self.sse = [
            asyncio.create_task(sse_client(api.url, key, user, i, ledger, self.listening))
            for i, (user, _conv) in enumerate(self.sse_learners)
        ]
        ws_rate = min(1.0, rate / 4 / WS_CLIENTS)
        self.ws = [
            asyncio.create_task(
                ws_client(api.url, key, learner, i, ledger, ws_rate, self.listening, self.sending)
            )
            for i, learner in enumerate(self.ws_learners)
        ]
        self.stalled = stall(api.port, key, SSE_CLIENTS // 10)
        await self._opened()
        rest = rate - ws_rate * WS_CLIENTS
        self.poster = asyncio.create_task(
            poster(api.url, key, self.sse_learners, rest, ledger, self.posting)
        )

    async def _opened(self, within_s: float = 30.0) -> None:
        """Until every SSE client is connected: an event published before
        a client's first connection was answered is not owed to it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ledger.all_opened.wait(), within_s)
        await asyncio.sleep(1)  # the WebSocket clients connect meanwhile

    async def stop(self) -> None:
        """Stop posting, wait for the events still owed (`_drain`), then
        close every client."""
        self.posting.set()
        self.sending.clear()
        await self.poster
        self.posted_at = time.monotonic()
        await self._drain()
        self.listening.set()
        await asyncio.gather(*self.sse, *self.ws, return_exceptions=True)
        for s in self.stalled:
            s.close()

    async def _drain(self) -> None:
        """Until every client has the `utterance` event of each of its
        learner's acknowledged utterances, or none arrived for DRAIN_QUIET_S
        (at most DRAIN_MAX_S): a late event is then told from a lost one."""
        await asyncio.sleep(8)  # events in flight, the errors flow's last batches
        heard, quiet_since = self._received(), time.monotonic()
        while self._owed() and time.monotonic() - quiet_since < DRAIN_QUIET_S:
            if time.monotonic() - self.posted_at >= DRAIN_MAX_S:
                break
            await asyncio.sleep(1)
            if (now_heard := self._received()) != heard:
                heard, quiet_since = now_heard, time.monotonic()
        self.drained_s = time.monotonic() - self.posted_at

    def _received(self) -> int:
        return sum(len(seen) for seen in self.ledger.seen.values())

    def _owed(self) -> int:
        return sum(len(self.ledger.unseen(c, user)) for c, user in enumerate(self.users()))

    def users(self) -> list[str]:
        return [u for u, _c in self.sse_learners] + [u for u, _c in self.ws_learners]


async def _watch(
    api: ApiServer, seconds: float, log: Any, kill: bool
) -> tuple[list[Any], float | None, list[float]]:
    """API memory every 5 s; one worker killed with -9 half-way (when it
    was); how late this process's event loop wakes up (ms), every 0.1 s."""
    memory: list[tuple[float, float]] = []
    lag: list[float] = []
    began, killed, next_memory = time.monotonic(), not kill, 0.0
    killed_at = None
    while (elapsed := time.monotonic() - began) < seconds:
        if elapsed >= next_memory:
            memory.append((round(elapsed, 1), round(cpu.tree_rss_mib(api.proc.pid), 1)))
            next_memory += 5
        if not killed and elapsed > seconds / 2:
            victim = api.worker_pids()[0]
            log(f"live: kill -9 of API worker {victim}")
            os.kill(victim, signal.SIGKILL)
            killed, killed_at = True, time.monotonic()
        asleep = time.monotonic()
        await asyncio.sleep(0.1)
        lag.append((time.monotonic() - asleep - 0.1) * 1000)
    return memory, killed_at, lag


async def _drive(
    api: ApiServer, key: str, learners: list[tuple[str, str]], rate: float, seconds: float,
    log: Any, kill: bool,
) -> dict[str, Any]:  # fmt: skip
    clients = _Clients(api, key, learners)
    with cpu.OwnShare() as own, cpu.Share(api.worker_pids()) as machine:
        await clients.start(rate)
        memory, killed_at, lag = await _watch(api, seconds, log, kill)
    ended_at = time.monotonic()
    await clients.stop()
    ledger = clients.ledger
    return {
        **_latencies(ledger),
        "client_cpu_percent_of_core": own.result, "client_loop_lag_ms": summarize(lag),
        "cpu_percent": machine.result,
        "acked_per_s": round(len(ledger.acked) / seconds, 1),
        "sse_clients": len(clients.sse), "ws_clients": len(clients.ws),
        "stalled_clients": len(clients.stalled), "rate_per_s": rate, "seconds": seconds,
        "reconnects": ledger.reconnects, "worker_killed": killed_at is not None,
        "failures": dict(ledger.failures),
        "drained_s": round(clients.drained_s, 1),
        "late_after_8_s": sum(
            1 for t in ledger.first_seen.values() if t > clients.posted_at + 8
        ),
        **_lost_and_duplicated(ledger, clients.users(), killed_at, ended_at),
        "api_rss_mib": memory,
    }  # fmt: skip


def _key(settings: Any, tenant: str) -> str:
    """A key without a practical rate limit whose live cap fits every client."""
    db = Db.open(settings.cassandra)
    try:
        return create(db, tenant, 1_000_000.0, 1_000_000, None, 10 * SSE_CLIENTS)[1]
    finally:
        db.close()


def run(
    quick: bool,
    log: Any,
    seconds: float | None = None,
    rate: float = 200.0,
    flows: bool = True,
    kill: bool = True,
) -> dict[str, Any]:
    from bench.freshness import Flows

    settings = bench_settings()
    migrate(settings.cassandra)
    seconds = seconds or (60.0 if quick else 600.0)
    tenant = f"bench-live-{os.getpid()}"
    key = _key(settings, tenant)
    api = ApiServer(settings, workers=2)
    running = None
    try:
        if flows:
            running = Flows(settings, Path(tempfile.mkdtemp(prefix="bench-live-")))
            db = Db.open(settings.cassandra)
            try:
                running.wait_swept(db, settings.feed.shards)
            finally:
                db.close()
        learners = make_learners(api.url, key, SSE_CLIENTS + WS_CLIENTS, tenant)
        log(f"live: {SSE_CLIENTS} SSE + {WS_CLIENTS} WebSocket clients, {rate}/s for {seconds} s")
        result = uvloop.run(_drive(api, key, learners, rate, seconds, log, kill))
    finally:
        if running is not None:
            running.stop()
        api.stop()
    rss = [mib for _t, mib in result["api_rss_mib"]]
    settled = rss[len(rss) // 3 :] or rss
    result["api_rss_growth_pct"] = round(100 * (settled[-1] - settled[0]) / settled[0], 1)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="60 s instead of 600 s")
    p.add_argument("--seconds", type=float, help="how long utterances flow")
    p.add_argument("--rate", type=float, default=200.0, help="utterances per second")
    p.add_argument(
        "--no-flows", action="store_true", help="without the dataflows (no errors events)"
    )
    p.add_argument("--no-kill", action="store_true", help="no API worker killed half-way")
    args = p.parse_args(argv)
    configure_logging(Settings.from_env().log)  # to stderr: stdout is the result
    result = run(
        args.quick,
        lambda m: sys.stderr.write(m + "\n"),
        args.seconds,
        args.rate,
        not args.no_flows,
        not args.no_kill,
    )
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
