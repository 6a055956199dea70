"""Section 5, "reads": latency of the API's GET endpoints next to a raw
single-partition driver read of the same rows, at the same concurrency.

- GET /v1/utterances/{id} (one row, its insight beside it) against
  `SELECT ... FROM utterances_by_id WHERE tenant = ? AND utterance_id = ?`
  (prepared, async, one process);
- GET /v1/users/{id}/errors (hour windows over the last day) and
  GET /v1/users/{id}/learning (days of the last week through today, in a
  DST zone), both read from the tables (not from the answer cache), when
  the API's OpenAPI document lists them. Their raw reference is the same
  single-row read: they read a bounded set of partitions, so the ratio
  says what the served path adds on top of one round trip.

In rounds (three in a full run), each raw read first, then every endpoint;
each endpoint's ratio is to its own round's raw read, and the report gives
the median over the rounds with its spread.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from bench import cpu, loadgen
from bench.common import ERRORS, TEXT, drive, spread, summarize
from bench.loadgen import Workload

ENDPOINTS = {
    "errors": "/v1/users/{user_id}/errors",
    "learning": "/v1/users/{user_id}/learning",
}


def seed(url: str, key: str, pairs: list[tuple[str, str]], run: str, count: int) -> list[str]:
    """`count` utterances to read back; returns their ids."""
    ts = datetime.now(UTC).replace(microsecond=0).isoformat()
    ids = [f"{run}-read-{i}" for i in range(count)]
    items = [
        {
            "utterance_id": uid,
            "user_id": pairs[i % len(pairs)][0],
            "conversation_id": pairs[i % len(pairs)][1],
            "text": TEXT,
            "timestamp": ts,
            "errors": ERRORS,
            "words_learned": 2,
        }
        for i, uid in enumerate(ids)
    ]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for start in range(0, len(items), 500):
            r = c.post("/v1/utterances/batch", json={"utterances": items[start : start + 500]})
            r.raise_for_status()
            if r.json()["rejected"]:
                raise RuntimeError(f"seeding reads: {r.text[:300]}")
    return ids


def served_paths(url: str, key: str, pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """GET paths for each served endpoint the API documents, each checked once."""
    try:
        documented = set(httpx.get(url + "/schema/openapi.json", timeout=10).json()["paths"])
    except (httpx.HTTPError, ValueError, KeyError):
        documented = set()
    now = datetime.now(UTC).replace(microsecond=0)
    day_ago = quote((now - timedelta(days=1)).isoformat())
    hour_on = quote((now + timedelta(hours=1)).isoformat())
    week_ago, tomorrow = (now - timedelta(days=7)).date(), (now + timedelta(days=1)).date()
    # Both ranges run past the end of the measurement: answers about ranges
    # that are over come from Redis once a flow's watermark has passed them
    # (api/reads/answer_cache.py), which would measure the cache, or not,
    # depending on what flows ran on the bench keyspace before.
    queries = {
        "errors": f"?window=hour&from={day_ago}&to={hour_on}",
        "learning": f"?granularity=day&from={week_ago}&to={tomorrow}&tz=Europe/Berlin",
    }
    found: dict[str, list[str]] = {}
    for name, template in ENDPOINTS.items():
        if template not in documented and template + "/" not in documented:
            continue
        paths = [template.format(user_id=u) + queries[name] for u, _ in pairs]
        r = httpx.get(url + paths[0], headers={"Authorization": f"Bearer {key}"}, timeout=10)
        found[name] = (
            paths if r.status_code == 200 else [f"unusable: HTTP {r.status_code} {r.text[:200]}"]
        )
    return found


def http(
    url: str,
    key: str,
    name: str,
    paths: list[str],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    generator: str,
    run: str,
    api_pids: list[int],
) -> dict[str, Any]:
    w = Workload("get", url, key, run, concurrency, duration_s=warmup_s, paths=paths)
    if warmup_s > 0:
        loadgen.run(w, generator)
    w.duration_s = duration_s
    with cpu.Share(api_pids) as share:
        result = loadgen.run(w, generator)
    result["cpu_percent"] = share.result
    result["endpoint"] = name
    return result


def raw(
    settings: Any, tenant: str, ids: list[str], concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    from cql.session import Db
    from cql.utterances import UTTERANCES

    db = Db.open(settings.cassandra)
    try:
        select = db.prepare(UTTERANCES.select(), idempotent=True)
        got = drive(
            db.session,
            lambda n: (select, (tenant, ids[n % len(ids)])),
            concurrency,
            warmup_s,
            duration_s,
        )
    finally:
        db.close()
    return {
        "endpoint": "raw driver read (utterances_by_id)",
        "generator": "cassandra-driver",
        "concurrency": concurrency,
        "requests": got["ok"] + got["errors"],
        "failures": got["errors"],
        "req_per_s": round(got["ok"] / duration_s, 1),
        "latency_ms": summarize(got["latencies"]),
    }


def medians(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each endpoint's p50 and p99 over the rounds, and their ratios to the
    raw read of the same round: median and spread."""
    raws = {r["round"]: r["latency_ms"] for r in results if r["generator"] == "cassandra-driver"}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["endpoint"], []).append(r)
    out = []
    for endpoint, group in groups.items():
        figures: dict[str, Any] = {"endpoint": endpoint, "rounds": len(group)}
        figures["req_per_s"] = spread([r["req_per_s"] for r in group])
        figures["cpu_ms_per_request"] = cpu.ms_per(
            [r for r in group if r.get("cpu_percent")], "req_per_s"
        )
        for pct in ("p50", "p99"):
            figures[f"{pct}_ms"] = spread([r["latency_ms"][pct] for r in group], 3)
            figures[f"{pct}_vs_raw"] = spread(
                [
                    r["latency_ms"][pct] / raws[r["round"]][pct]
                    for r in group
                    if raws.get(r["round"], {}).get(pct) and r["latency_ms"][pct] is not None
                ],
                2,
            )
        out.append(figures)
    return out
