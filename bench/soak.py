"""Section 7, "soak": is the API's memory flat over a sustained run?

Minute after minute of the mixed load real clients make (single POSTs with
fresh Idempotency-Keys, then dashboard GETs), sampling the workers' RSS at
the end of each minute. The baseline is the sample after the first minute,
once imports, prepared statements, caches and the allocator's arenas have
filled; a leak shows as a rise after it, a high-water mark does not.
"""

from __future__ import annotations

from typing import Any

from bench import loadgen, memory
from bench.loadgen import Workload

POST_SHARE = 0.75  # of each minute; the rest is GETs


def run(
    api: Any,
    key: str,
    pairs: list[tuple[str, str]],
    get_paths: list[str],
    minutes: int,
    concurrency: int,
    generator: str,
    tag: str,
    log: Any,
) -> dict[str, Any]:
    samples = [memory.sample("soak start", api.worker_pids())]
    minutes_run = []

    def load(mode: str, minute: int, share: float, **workload: Any) -> dict[str, Any]:
        w = Workload(
            mode=mode,
            url=api.url,
            key=key,
            run=f"{tag}-soak-{mode}-{minute}",
            concurrency=concurrency,
            duration_s=60 * share,
            **workload,
        )
        return loadgen.run(w, generator)

    for minute in range(1, minutes + 1):
        posts = load("single", minute, POST_SHARE, pairs=pairs)
        gets = load("get", minute, 1 - POST_SHARE, paths=get_paths)
        samples.append(memory.sample(f"after minute {minute}", api.worker_pids()))
        minutes_run.append(
            {
                "minute": minute,
                "posts": posts["requests"],
                "post_failures": posts["failures"],
                "gets": gets["requests"],
                "get_failures": gets["failures"],
                "total_mib": samples[-1]["total_mib"],
            }
        )
        log(
            f"soak minute {minute}: {posts['requests']} POSTs, {gets['requests']} GETs, "
            f"RSS {samples[-1]['total_mib']} MiB"
        )
    return {
        "minutes": minutes_run,
        "concurrency": concurrency,
        "samples": samples,
        "verdict": memory.verdict(samples, "after minute 1"),
    }
