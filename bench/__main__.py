"""`ops/bench [--quick] [options]`: every benchmark section once, one report.

    ops/bench                  # the full run, about 85 minutes on 2 cores (three rounds of
                               # ingest and reads; 10 minutes each the soak, the live clients
                               # at 200/s and at 30/s, and the cluster drill)
    ops/bench --quick          # a smoke run, about 14 minutes (7 of them the short cluster drill)
    ops/bench --only limit,ingest --duration 20

Writes bench/results/<stamp>.{json,md,png} and bench/results/latest.md.
A section that fails is recorded in the report and the others still run;
the exit status is 1 when any section failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    cluster,
    common,
    cpu,
    dataflow,
    ingest,
    limit,
    live,
    loadgen,
    memory,
    profile,
    reads,
    report,
    soak,
)

SECTIONS = ("limit", "ingest", "reads", "profile", "soak", "dataflow", "live", "cluster")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ops/bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="short smoke run (~12 minutes, 7 of them the short cluster drill)",
    )
    p.add_argument(
        "--sweep",
        type=_ints,
        help="concurrencies for raw Cassandra and single POSTs (default 8,32,128; quick 8,32)",
    )
    p.add_argument(
        "--batch-sweep", type=_ints, help="batch requests in flight (default 1,4,16; quick 1,4)"
    )
    p.add_argument("--batch-size", type=int, default=100, help="utterances per batch request")
    p.add_argument(
        "--duration", type=float, help="seconds measured per point (default 12; quick 3)"
    )
    p.add_argument("--warmup", type=float, help="seconds of warm-up per point (default 3; quick 1)")
    p.add_argument(
        "--rounds",
        type=int,
        help="rounds of the ingest and read points, each with its reference (default 3; quick 1)",
    )
    p.add_argument("--workers", type=int, default=2, help="API worker processes")
    p.add_argument(
        "--processes", type=int, default=os.cpu_count() or 2, help="driver processes for section 1"
    )
    p.add_argument("--read-concurrency", type=int, default=8)
    p.add_argument(
        "--live-rates",
        type=lambda text: [float(x) for x in text.split(",") if x.strip()],
        default=[200.0, 30.0],
        help="utterances/s of each live run: the issue's 200, then one this machine carries "
        "with the flows and the clients (default 200,30)",
    )
    p.add_argument(
        "--soak-minutes",
        type=int,
        help="minutes of mixed load for the memory soak (default 10; quick 1)",
    )
    p.add_argument(
        "--generator", choices=("auto", "wrk", "httpx"), default="auto", help="HTTP load generator"
    )
    p.add_argument("--only", help=f"comma-separated sections to run, of {','.join(SECTIONS)}")
    p.add_argument("--results", type=Path, default=common.RESULTS)
    args = p.parse_args(argv)
    quick = args.quick
    args.sweep = args.sweep or ([8, 32] if quick else [8, 32, 128])
    args.batch_sweep = args.batch_sweep or ([1, 4] if quick else [1, 4, 16])
    args.duration = args.duration or (3.0 if quick else 12.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 3.0)
    args.soak_minutes = args.soak_minutes or (1 if quick else 10)
    args.rounds = args.rounds or (1 if quick else 3)
    args.only = set(args.only.split(",")) if args.only else set(SECTIONS)
    if unknown := args.only - set(SECTIONS):
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if args.generator == "auto":
        args.generator = "wrk" if common.has_wrk() else "httpx"
    return args


def log(message: str) -> None:
    sys.stderr.write(f"[{datetime.now().strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = common.bench_settings()
    common.own_metrics_dir()
    tag = common.run_id()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run: dict[str, Any] = {"stamp": stamp, "machine": common.machine(), "errors": {}}

    from cql.migrate import migrate

    log(f"bench keyspace {settings.cassandra.keyspace}: applying the schema")
    migrate(settings.cassandra)
    run["versions"] = common.versions(settings)
    run["config"] = {
        "mode": "quick" if args.quick else "full",
        "note": "Figures are only comparable within this run (same machine, same moment).",
        "keyspace": settings.cassandra.keyspace,
        "api_workers": args.workers,
        "sweep": args.sweep,
        "batch_sweep": args.batch_sweep,
        "batch_size": args.batch_size,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "driver_processes": args.processes,
        "read_concurrency": args.read_concurrency,
        "soak_minutes": args.soak_minutes if "soak" in args.only else 0,
        "generator": args.generator,
        "api_max_in_flight": settings.cassandra.max_in_flight,
        "feed_shards": settings.feed.shards,
    }

    def section(name: str, fn: Any) -> Any:
        started = time.monotonic()
        try:
            return fn()
        except Exception as exc:
            run["errors"][name] = f"{type(exc).__name__}: {exc}"
            log(f"{name} failed: {exc}\n{traceback.format_exc()}")
            return None
        finally:
            log(f"{name} took {time.monotonic() - started:.0f}s")

    if "limit" in args.only:
        run["limit"] = (
            section(
                "limit",
                lambda: limit.run(
                    settings, args.sweep, args.processes, args.warmup, args.duration, tag, log
                ),
            )
            or []
        )

    api_sections = args.only & {"ingest", "reads", "profile", "soak"}
    if api_sections:
        _api_sections(args, settings, tag, run, section)

    if "dataflow" in args.only:
        # Freshness at half the best single-POST rate of this run, when measured.
        singles = [
            p["items_per_s"]["median"]
            for p in (run.get("ingest") or {}).get("medians", [])
            if p["mode"] == "single" and p["ids"]
        ]
        rate = round(max(singles) / 2, 1) if singles else None
        run["config"]["freshness_rate"] = rate or "bench_dataflow default"
        run["dataflow"] = section(
            "dataflow",
            lambda: dataflow.run(args.quick, timeout_s=720 if args.quick else 1800, rate=rate),
        )
    if "live" in args.only:
        run["live"] = section("live", lambda: live.run(args.quick, log, rate=args.live_rates[0]))
        for rate in args.live_rates[1:]:
            run.setdefault("live_more", []).append(
                section(f"live at {rate:g}/s", lambda r=rate: live.run(args.quick, log, rate=r))
            )
    if "cluster" in args.only:
        figures = common.LOG_DIR / f"bench-cluster-{stamp}.json"
        run["cluster"] = section(
            "cluster",
            lambda: cluster.run(args.quick, figures, timeout_s=900 if args.quick else 2400),
        )
    run["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    paths = report.write(run, args.results)
    for kind, path in paths.items():
        log(f"{kind}: {path}")
    return 1 if run["errors"] else 0


def _api_sections(
    args: argparse.Namespace, settings: Any, tag: str, run: dict[str, Any], section: Any
) -> None:
    log(
        f"starting the API: granian, {args.workers} workers, keyspace {settings.cassandra.keyspace}"
    )
    api = common.ApiServer(settings, args.workers)
    samples = [memory.sample("start (ready, idle)", api.worker_pids())]
    try:
        key = common.create_key(settings, "bench")
        pairs = common.make_learners(api.url, key, 50, tag)
        log(f"API on {api.url}, 50 learners ready")

        if "ingest" in args.only:
            generators = [args.generator] + (["httpx"] if args.generator == "wrk" else [])
            run["generator_ceiling"] = (
                section(
                    "generator_ceiling",
                    lambda: ingest.generator_ceiling(
                        api.url, key, 32, min(args.duration, 5.0), generators, tag, log
                    ),
                )
                or []
            )
            samples.append(memory.sample("after warm-up (/health load)", api.worker_pids()))
            plan = _ingest_plan(args, run)
            run["ingest"] = section(
                "ingest",
                lambda: ingest.rounds(
                    settings, api.url, key, pairs, plan, tag, log, api.worker_pids()
                ),
            )
            samples.append(memory.sample("after the ingest rounds", api.worker_pids()))

        if "reads" in args.only:
            run["reads"] = section(
                "reads", lambda: _reads(args, settings, api, key, pairs, tag, run)
            )
            samples.append(memory.sample("after reads", api.worker_pids()))

        if "profile" in args.only:
            run["profiles"] = (
                section("profile_pyspy", lambda: _pyspy(args, api, key, pairs, tag)) or []
            )
            samples.append(memory.sample("after py-spy load", api.worker_pids()))

        if "soak" in args.only:
            run["soak"] = section("soak", lambda: _soak(args, api, key, pairs, tag))
    finally:
        api.stop()
    baseline = "after warm-up (/health load)"
    run["memory"] = {"samples": samples, "verdict": memory.verdict(samples, baseline)}
    if "profile" in args.only:
        prof = section("profile_pyinstrument", lambda: _pyinstrument(args, settings, run["stamp"]))
        if prof:
            run.setdefault("profiles", []).append(prof)


def _ingest_plan(args: argparse.Namespace, run: dict[str, Any]) -> ingest.Plan:
    """The ingest rounds of `args`, the raw LWT reference at section 1's best
    concurrency (the sweep's highest when section 1 did not run)."""
    lwts = [p for p in run.get("limit", []) if p["statement"] == "lwt"]
    best = max(lwts, key=lambda p: p["ops_per_s"])["concurrency"] if lwts else max(args.sweep)
    return ingest.Plan(
        sweep=args.sweep,
        batch_sweep=args.batch_sweep,
        batch=args.batch_size,
        warmup_s=args.warmup,
        duration_s=args.duration,
        rounds=args.rounds,
        generator=args.generator,
        reference_concurrency=best,
        driver_processes=args.processes,
    )


def _reads(
    args: argparse.Namespace,
    settings: Any,
    api: Any,
    key: str,
    pairs: Any,
    tag: str,
    run: dict[str, Any],
) -> dict[str, Any]:
    ids = reads.seed(api.url, key, pairs, tag, 500)
    c = args.read_concurrency
    endpoints = [("GET /v1/utterances/{id}", [f"/v1/utterances/{i}" for i in ids])]
    for name, paths in reads.served_paths(api.url, key, pairs).items():
        if paths[0].startswith("unusable"):
            run.setdefault("reads_unusable", {})[name] = paths[0]
            continue
        endpoints.append((f"GET {reads.ENDPOINTS[name].replace('{user_id}', '{id}')}", paths))
    out = []
    for r in range(1, args.rounds + 1):
        with cpu.Share(api.worker_pids()) as share:
            found = reads.raw(settings, "bench", ids, c, args.warmup, args.duration)
        found["cpu_percent"] = share.result
        found["round"] = r
        out.append(found)
        for endpoint, paths in endpoints:
            found = reads.http(
                api.url,
                key,
                endpoint,
                paths,
                c,
                args.duration,
                args.warmup,
                args.generator,
                f"{tag}-read{r}-{len(out)}",
                api.worker_pids(),
            )
            found["round"] = r
            out.append(found)
    for found in out:
        lat = found["latency_ms"]
        log(
            f"reads round {found['round']} {found['endpoint']:<40} {found['req_per_s']:>8} req/s "
            f"p50 {lat['p50']} p99 {lat['p99']} ms failures {found['failures']}"
        )
    return {"points": out, "medians": reads.medians(out)}


def _soak(args: argparse.Namespace, api: Any, key: str, pairs: Any, tag: str) -> dict[str, Any]:
    served = reads.served_paths(api.url, key, pairs)
    usable = [paths for paths in served.values() if not paths[0].startswith("unusable")]
    get_paths = [p for paths in usable for p in paths] or ["/health"]
    log(f"soak: {args.soak_minutes} minutes of POSTs then GETs, 16 in flight")
    return soak.run(api, key, pairs, get_paths, args.soak_minutes, 16, args.generator, tag, log)


def _pyspy(
    args: argparse.Namespace, api: Any, key: str, pairs: Any, tag: str
) -> list[dict[str, Any]]:
    duration = 5.0 if args.quick else 10.0
    with tempfile.TemporaryDirectory() as tmp:
        started = profile.start_pyspy(api.worker_pids(), duration, Path(tmp))
        if not started:
            return [{"tool": "py-spy", "error": "not installed (uv tool install py-spy)"}]
        w = loadgen.Workload(
            mode="single",
            url=api.url,
            key=key,
            run=f"{tag}-spy",
            concurrency=32,
            duration_s=duration + 1,
            pairs=pairs,
        )
        load = loadgen.run(w, args.generator)
        found = profile.finish_pyspy(started)
    found["load"] = f"single POSTs, 32 in flight, {load['req_per_s']} req/s during sampling"
    log(
        f"py-spy: {found.get('samples', 0)} samples; top {[f['name'] for f in found.get('by_package', [])[:4]]}"
    )
    return [found]


def _pyinstrument(args: argparse.Namespace, settings: Any, stamp: str) -> dict[str, Any]:
    key = common.create_key(settings, "bench-profile")
    singles, batches = (200, 4) if args.quick else (600, 12)
    args.results.mkdir(parents=True, exist_ok=True)
    found = profile.in_process(
        settings,
        key,
        singles,
        batches,
        args.batch_size,
        16,
        args.results / f"{stamp}.pyinstrument.txt",
    )
    log(f"pyinstrument: top {[f['name'] for f in found['by_package'][:4]]}")
    return found


if __name__ == "__main__":
    sys.exit(main())
