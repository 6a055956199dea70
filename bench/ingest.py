"""Section 2, "ingest": the real API (a dedicated granian with N workers)
taking new utterances through POST /v1/utterances (one per request) and
POST /v1/utterances/batch, every request with its own Idempotency-Key.
Single POSTs are measured both ways a client sends them: with an explicit
utterance_id (what a careful client and `ops/load` send) and with the key
only (the id derived from the key's claim).

What each utterance costs in Cassandra, so the figures can be read against
the raw LWT: a single POST with a key only makes one LWT (the key's claim)
and one logged batch (row, change feed, listing rows and the answer stored
on the key); with an explicit utterance_id, one more LWT (the id's claim).
A batch item makes one LWT (its id's claim), and the rows, feed entries and
answer go out in chunked logged batches, plus one LWT per batch request.

The section runs in rounds (three in a full run): each round measures the
raw LWT reference first (the same driver processes as section 1, at
section 1's best concurrency), then every API point. A last reference
after the final round measures Cassandra with the sweep's compaction debt.
Each point's ratio is to the reference of its own round, and the report
gives each figure's median over the rounds with its spread.

Before the rounds, the generator alone is measured against /health: a
figure near that ceiling measures the generator, not the API.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench import cpu, limit, loadgen
from bench.common import spread
from bench.loadgen import Workload


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


@dataclass(frozen=True)
class Plan:
    """What one ingest section measures, and how."""

    sweep: list[int]  # single POSTs in flight
    batch_sweep: list[int]  # batch requests in flight
    batch: int  # utterances per batch request
    warmup_s: float
    duration_s: float
    rounds: int
    generator: str
    reference_concurrency: int  # the raw LWT's, section 1's best
    driver_processes: int


def rounds(
    settings: Any,
    url: str,
    key: str,
    pairs: list[tuple[str, str]],
    plan: Plan,
    run: str,
    log: Any,
    api_pids: list[int],
) -> dict[str, Any]:
    """Every point of `plan`, `plan.rounds` times, each round after its own
    raw LWT reference, and one more reference at the end."""
    points: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    for r in range(1, plan.rounds + 1):
        references.append(_reference(settings, plan, f"{run}-ref{r}", r, log, api_pids))
        for mode, ids, c in _points(plan):
            point = _point(url, key, pairs, plan, mode, ids, c, f"{run}-r{r}", log, api_pids)
            point["round"] = r
            points.append(point)
    references.append(_reference(settings, plan, f"{run}-ref-end", "after", log, api_pids))
    return {"points": points, "references": references, "medians": medians(points, references)}


def _points(plan: Plan) -> list[tuple[str, bool, int]]:
    return [
        *(("single", True, c) for c in plan.sweep),
        *(("single", False, c) for c in plan.sweep),
        *(("batch", True, c) for c in plan.batch_sweep),
    ]


def _reference(
    settings: Any, plan: Plan, tag: str, when: int | str, log: Any, api_pids: list[int]
) -> dict[str, Any]:
    with cpu.Share(api_pids) as share:
        (point,) = limit.run(
            settings,
            [plan.reference_concurrency],
            plan.driver_processes,
            plan.warmup_s,
            plan.duration_s,
            tag,
            log,
            statements=("lwt",),
        )
    point["cpu_percent"] = share.result
    point["round"] = when
    return point


def _point(
    url: str,
    key: str,
    pairs: list[tuple[str, str]],
    plan: Plan,
    mode: str,
    ids: bool,
    c: int,
    run: str,
    log: Any,
    api_pids: list[int],
) -> dict[str, Any]:
    common = {"mode": mode, "url": url, "key": key, "concurrency": c, "pairs": pairs}
    common |= {"batch": plan.batch, "ids": ids}
    name = f"{run}-{mode}-{'id' if ids else 'key'}-{c}"
    measured_s = plan.duration_s
    if plan.warmup_s > 0:
        warm = loadgen.run(
            Workload(run=f"{name}-w", duration_s=plan.warmup_s, **common), plan.generator
        )
        # A closed loop loses the requests still in flight when the clock
        # stops: measure for at least 5 latencies (at most 3x as long).
        p50_s = (warm["latency_ms"].get("p50") or 0) / 1000
        measured_s = min(max(plan.duration_s, 5 * p50_s), 3 * plan.duration_s)
    with cpu.Share(api_pids) as share:
        r = loadgen.run(Workload(run=name, duration_s=measured_s, **common), plan.generator)
    r["cpu_percent"] = share.result
    r["reliable"] = (r["latency_ms"].get("p50") or 0) / 1000 <= r["duration_s"] / 5
    r["batch_size"] = plan.batch if mode == "batch" else 1
    r["utterances_in_flight"] = c * r["batch_size"]
    lat = r["latency_ms"]
    log(
        f"ingest {mode:>6} {'id ' if ids else 'key'} c={c:<4} {r['items_per_s']:>8.1f} utterances/s "
        f"({r['req_per_s']} req/s) p50 {lat['p50']} p99 {lat['p99']} ms "
        f"failures {r['failures']} {r['statuses']} cpu {share.result}"
    )
    return r


def medians(points: list[dict[str, Any]], references: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each point's figures over the rounds: median and spread (min, max) of
    its utterances/s, its ratio to its round's raw LWT, its p99, its CPU
    split, and the CPU milliseconds each utterance cost Cassandra and the API."""
    by_round = {ref["round"]: ref for ref in references}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["mode"], p["ids"], p["batch_size"], p["concurrency"]), []).append(p)
    out = []
    for (mode, ids, batch_size, c), group in groups.items():
        ratios = [
            p["items_per_s"] / by_round[p["round"]]["ops_per_s"]
            for p in group
            if by_round[p["round"]]["ops_per_s"]
        ]
        out.append(
            {
                "mode": mode,
                "ids": ids,
                "batch_size": batch_size,
                "concurrency": c,
                "rounds": len(group),
                "reliable": all(p["reliable"] for p in group),
                "items_per_s": spread([p["items_per_s"] for p in group]),
                "vs_lwt": spread(ratios, 3),
                "p99_ms": spread([p["latency_ms"]["p99"] for p in group]),
                "cpu_percent": _median_cpu(group),
                "cpu_ms_per_item": cpu.ms_per(group, "items_per_s"),
            }
        )
    return out


def reference_cost(references: list[dict[str, Any]]) -> dict[str, Any]:
    """The raw LWT's figures over its measurements, as `medians` gives a point's."""
    return {
        "ops_per_s": spread([r["ops_per_s"] for r in references]),
        "p99_ms": spread([r["latency_ms"]["p99"] for r in references]),
        "cpu_percent": _median_cpu(references),
        "cpu_ms_per_item": cpu.ms_per(references, "ops_per_s"),
    }


def _median_cpu(group: list[dict[str, Any]]) -> dict[str, Any]:
    parts = ("cassandra", "api", "bench", "other", "idle")
    found = {
        part: round(statistics.median(p["cpu_percent"].get(part, 0.0) for p in group), 1)
        for part in parts
    }
    names: dict[str, list[float]] = {}
    for p in group:
        for name, share in p["cpu_percent"].get("other_top", []):
            names.setdefault(name, []).append(share)
    top = sorted(names.items(), key=lambda item: -sum(item[1]))[:3]
    found["other_top"] = [(name, round(sum(s) / len(group), 1)) for name, s in top]
    return found
