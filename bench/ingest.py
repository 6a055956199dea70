"""Section 2, "ingest": the real API (a dedicated granian with N workers)
taking new utterances through POST /v1/utterances (one per request) and
POST /v1/utterances/batch, every request with its own Idempotency-Key and
every utterance with its own explicit utterance_id (what a careful client
and `ops/load` send).

What each utterance costs in Cassandra, so the figures can be read against
section 1: a single POST makes two LWTs (the Idempotency-Key claim and the
utterance_id claim) and one logged batch (row, change feed, listing rows
and the answer stored on the key); a batch item makes one LWT and one
logged batch, plus one LWT and one update per batch request.

Before the sweep, the generator alone is measured against /health: a
figure near that ceiling measures the generator, not the API.
"""

from __future__ import annotations

from typing import Any

from bench import cpu, loadgen
from bench.loadgen import Workload

# Cassandra operations per accepted utterance (see the module docstring).
COST = {
    "single": {"lwt": 2, "logged_batch": 1},
    "batch": {"lwt_per_item": 1, "logged_batch": 1, "lwt_per_request": 1, "update_per_request": 1},
}


def generator_ceiling(
    url: str,
    key: str,
    concurrency: int,
    duration_s: float,
    generators: list[str],
    run: str,
    log: Any,
) -> list[dict[str, Any]]:
    results = []
    for generator in generators:
        w = Workload(
            mode="get",
            url=url,
            key=key,
            run=f"{run}-health-{generator}",
            concurrency=concurrency,
            duration_s=duration_s,
            paths=["/health"],
        )
        r = loadgen.run(w, generator)
        log(
            f"generator {generator:>5} alone on /health c={concurrency}: {r['req_per_s']} req/s, p99 {r['latency_ms']['p99']} ms"
        )
        results.append(r)
    return results


def sweep(
    url: str,
    key: str,
    pairs: list[tuple[str, str]],
    mode: str,
    concurrencies: list[int],
    batch: int,
    warmup_s: float,
    duration_s: float,
    generator: str,
    run: str,
    log: Any,
    api_pids: list[int],
) -> list[dict[str, Any]]:
    results = []
    for c in concurrencies:
        common = {"mode": mode, "url": url, "key": key, "concurrency": c, "pairs": pairs}
        common["batch"] = batch
        measured_s = duration_s
        if warmup_s > 0:
            warm = loadgen.run(
                Workload(run=f"{run}-{mode}-{c}-w", duration_s=warmup_s, **common), generator
            )
            # A closed loop loses the requests still in flight when the clock
            # stops: measure for at least 5 latencies (at most 3x as long).
            p50_s = (warm["latency_ms"].get("p50") or 0) / 1000
            measured_s = min(max(duration_s, 5 * p50_s), 3 * duration_s)
        with cpu.Share(api_pids) as share:
            r = loadgen.run(
                Workload(run=f"{run}-{mode}-{c}", duration_s=measured_s, **common), generator
            )
        r["cpu_percent"] = share.result
        r["reliable"] = (r["latency_ms"].get("p50") or 0) / 1000 <= r["duration_s"] / 5
        r["batch_size"] = batch if mode == "batch" else 1
        r["utterances_in_flight"] = c * r["batch_size"]
        lat = r["latency_ms"]
        log(
            f"ingest {mode:>6} c={c:<4} {r['items_per_s']:>8.1f} utterances/s "
            f"({r['req_per_s']} req/s) p50 {lat['p50']} p99 {lat['p99']} p99.9 {lat['p999']} ms "
            f"failures {r['failures']} {r['statuses']} cpu {share.result}"
        )
        results.append(r)
    return results
