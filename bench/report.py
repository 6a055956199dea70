"""One run, one report: bench/results/<stamp>.json (everything measured),
<stamp>.md (the tables), <stamp>.png (throughput and p99 against
concurrency), and latest.md (a copy of the newest Markdown)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.soak import POST_SHARE


def _ms(value: Any) -> str:
    return "" if value is None else f"{value:g}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else ""


def _cpu(point: dict[str, Any]) -> str:
    """The machine's CPU during the point (all cores = 100): who was busy."""
    c = point.get("cpu_percent")
    if not c:
        return ""
    return f"{c['cassandra']} / {c['api']} / {c['other']} / {c['idle']}"


def best_lwt(run: dict[str, Any]) -> float | None:
    points = [p["ops_per_s"] for p in run.get("limit", []) if p["statement"] == "lwt"]
    return max(points) if points else None


def markdown(run: dict[str, Any], chart: str | None) -> str:
    m, v, cfg = run["machine"], run["versions"], run["config"]
    out = [
        f"# utterstream benchmark, {run['stamp']}",
        "",
        f"Mode: **{cfg['mode']}**. {cfg['note']}",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"load average at start {m['load_average_at_start']}, at end {run.get('load_average_at_end')}.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "Configuration: "
        + ", ".join(f"{k} = {val}" for k, val in cfg.items() if k not in ("mode", "note"))
        + ".",
        "",
    ]
    lwt = best_lwt(run)

    out += ["## 1. Limit: raw Cassandra, cassandra-driver at its best", ""]
    if run.get("limit"):
        out += [
            "|Statement|Concurrency|Processes|Ops|Errors|Ops/s|p50 ms|p99 ms|p99.9 ms|Max ms|",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in run["limit"]:
            lat = p["latency_ms"]
            out.append(
                f"|{p['statement']}|{p['concurrency']}|{p['processes']}|{p['ops']}|{p['errors']}|"
                f"{p['ops_per_s']}|{_ms(lat['p50'])}|{_ms(lat['p99'])}|{_ms(lat['p999'])}|{_ms(lat['max'])}|"
            )
        out += ["", f"Reference for section 2: the best LWT figure, **{lwt} ops/s**.", ""]
    else:
        out += ["skipped", ""]

    out += ["## 2. Ingest: the API, POST with Idempotency-Key and explicit utterance_id", ""]
    if run.get("generator_ceiling"):
        out += [
            "The load generator alone, against GET /health (a figure near this ceiling measures the generator):",
            "",
            "|Generator|Concurrency|Requests|Requests/s|p50 ms|p99 ms|",
            "|---|---|---|---|---|---|",
        ]
        for g in run["generator_ceiling"]:
            lat = g["latency_ms"]
            out.append(
                f"|{g['generator']}|{g['concurrency']}|{g['requests']}|{g['req_per_s']}|{_ms(lat['p50'])}|{_ms(lat['p99'])}|"
            )
        out.append("")
    if run.get("ingest"):
        out += [
            "|Endpoint|Requests in flight|Utterances in flight|Requests|Failures|Requests/s|Utterances/s|p50 ms|p99 ms|p99.9 ms|Max ms|vs best LWT|Statuses|CPU: Cassandra / API / other / idle %|",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in run["ingest"]:
            lat = p["latency_ms"]
            name = (
                "POST /v1/utterances"
                if p["mode"] == "single"
                else f"POST /v1/utterances/batch ({p['batch_size']})"
            )
            statuses = " ".join(f"{k}:{n}" for k, n in p["statuses"].items())
            if p["socket_errors"]:
                statuses += " " + " ".join(f"{k}:{n}" for k, n in p["socket_errors"].items())
            out.append(
                f"|{name}|{p['concurrency']}|{p['utterances_in_flight']}|{p['requests']}|{p['failures']}|"
                f"{p['req_per_s']}|{p['items_per_s']}|{_ms(lat['p50'])}|{_ms(lat['p99'])}|{_ms(lat['p999'])}|"
                f"{_ms(lat['max'])}|{_ratio(p['items_per_s'], lwt)}|{statuses}|{_cpu(p)}|"
            )
            if not p.get("reliable", True):
                out[-1] = out[-1].replace(f"|{p['items_per_s']}|", f"|{p['items_per_s']} (*)|", 1)
        out += [
            "",
            "Cassandra work per utterance: single POST = 2 LWT + 1 logged batch + 1 update; "
            "batch item = 1 LWT + 1 logged batch (+ 1 LWT + 1 update per request). "
            "So the ceiling is about 0.5x the LWT figure for single POSTs and about 1x for batches.",
            "(*) the median latency was over a fifth of the measured time, so the requests still "
            "in flight at the end weigh on the figure: read it as a lower bound.",
            "",
        ]
    else:
        out += ["skipped", ""]

    df = run.get("dataflow", {"status": "skipped"})
    for number, name in ((3, "freshness"), (4, "dataflow")):
        out += [f"## {number}. {name.capitalize()}", ""]
        if df.get("status") == "ok" and name in df:
            out += _FLOW_SECTIONS[name](df[name])
        elif df.get("status") == "ok":
            out += [
                f"bench/flows.py reported no `{name}` key; its whole answer is in the JSON report.",
                "",
            ]
        else:
            out += [f"{df.get('status')}: {df.get('why', '')}", ""]

    out += ["## 5. Reads: GET endpoints against a raw single-partition driver read", ""]
    if run.get("reads"):
        raw = next((r for r in run["reads"] if r["generator"] == "cassandra-driver"), None)
        out += [
            "|Endpoint|Generator|Concurrency|Requests|Failures|Requests/s|p50 ms|p99 ms|p99.9 ms|p50 vs raw|p99 vs raw|CPU: Cassandra / API / other / idle %|",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in run["reads"]:
            lat = r["latency_ms"]
            rl = raw["latency_ms"] if raw else {}
            out.append(
                f"|{r['endpoint']}|{r['generator']}|{r['concurrency']}|{r['requests']}|{r['failures']}|{r['req_per_s']}|"
                f"{_ms(lat['p50'])}|{_ms(lat['p99'])}|{_ms(lat.get('p999'))}|"
                f"{_ratio(lat['p50'], rl.get('p50'))}|{_ratio(lat['p99'], rl.get('p99'))}|{_cpu(r)}|"
            )
        for name, why in run.get("reads_unusable", {}).items():
            out.append(f"\n{name}: {why}")
        out.append("")
    else:
        out += ["skipped", ""]

    out += ["## 6. Memory: RSS of the API workers", ""]
    mem = run.get("memory")
    if mem:
        out += ["|At|Per worker (MiB)|Total MiB|", "|---|---|---|"]
        for s in mem["samples"]:
            per = ", ".join(_ms(x) for x in s["workers"].values())
            out.append(f"|{s['at']}|{per}|{s['total_mib']}|")
        out += ["", _verdict(mem["verdict"], "start"), ""]
    else:
        out += ["skipped", ""]

    out += ["## 7. Soak: API memory over sustained mixed load", ""]
    out += _soak(run.get("soak"))

    out += [
        "## Profile of the hot path",
        "",
        "cassandra-driver's cluster, query, protocol and connection modules are compiled "
        "(Cython), so neither profiler sees inside them: their work shows as self time of the "
        "Python frame that called them (`execute (cql/aio.py)` is the driver's execute_async; "
        "`Store.write_utterance` is building and binding the BatchStatement).",
        "",
    ]
    for prof in run.get("profiles", []):
        if "error" in prof:
            out += [f"{prof['tool']}: {prof['error']}", ""]
            continue
        out += [f"### {prof['tool']}", ""]
        if "requests" in prof:
            out += [
                f"Requests: {prof['requests']}; share of the loop thread idle (waiting on I/O): {prof.get('idle_share')}.",
                "",
            ]
        if "load" in prof:
            out += [f"Load while sampling: {prof['load']}.", ""]
        if "samples" in prof:
            out += [
                f"Samples: {prof['samples']}; by thread: "
                + ", ".join(f"{t['name']} {t['share']:.0%}" for t in prof["by_thread"]),
                "",
            ]
        out += ["|Self time by package|Share|", "|---|---|"]
        out += [f"|{p['name']}|{p['share']:.1%}|" for p in prof["by_package"]]
        out += ["", "|Self time by function|Share|", "|---|---|"]
        out += [f"|`{p['name']}`|{p['share']:.1%}|" for p in prof["top_functions"]]
        if prof.get("own_inclusive"):
            out += ["", "|Inclusive time in our code (api/, cql/)|Share|", "|---|---|"]
            out += [f"|`{p['name']}`|{p['share']:.1%}|" for p in prof["own_inclusive"]]
        out.append("")
    if not run.get("profiles"):
        out += ["skipped", ""]

    if chart:
        out += ["## Chart", "", f"![throughput and p99 latency against concurrency]({chart})", ""]
    if run.get("errors"):
        out += (
            ["## Sections that failed", ""]
            + [f"- {k}: {e}" for k, e in run["errors"].items()]
            + [""]
        )
    return "\n".join(out)


def _soak(soak: dict[str, Any] | None) -> list[str]:
    if not soak:
        return ["skipped", ""]
    out = [
        f"Each minute: {60 * POST_SHARE:.0f} s of single POSTs, then {60 * (1 - POST_SHARE):.0f} s "
        "of served GETs, "
        f"{soak['concurrency']} in flight; RSS of all API workers after each minute.",
        "",
        "|Minute|POSTs|POST failures|GETs|GET failures|Total MiB|",
        "|---|---|---|---|---|---|",
    ]
    for m in soak["minutes"]:
        out.append(
            f"|{m['minute']}|{m['posts']}|{m['post_failures']}|{m['gets']}|{m['get_failures']}|{m['total_mib']}|"
        )
    out += ["", _verdict(soak["verdict"], "the soak's start"), ""]
    return out


def _verdict(verdict: dict[str, Any], start: str) -> str:
    word = {True: "flat", False: "NOT flat", None: "unknown"}[verdict.get("flat")]
    return (
        f"Verdict: **{word}** (±{int(verdict.get('tolerance', 0.1) * 100)}%): "
        f"{verdict.get('change_since_baseline', 0):+.1%} since {verdict.get('baseline')}, "
        f"{verdict.get('change_since_start', 0):+.1%} since {start}."
    )


def _freshness(f: dict[str, Any]) -> list[str]:
    seen = f["seconds_to_visible"]
    cfg = f["settings"]
    samples = f.get("flow_samples", [])
    rss = [x["flow_rss_mib"] for x in samples]
    keys = [x["open_window_keys"] for x in samples]
    return [
        f"Steady ingest of {f['rate_per_s']:g} POSTs/s for {f['seconds']:g} s over {f['learners']} "
        f"learners (half the best single-POST rate of section 2 when it ran): "
        f"{f['acknowledged']} acknowledged, {f['never_visible']} never visible.",
        "",
        "|Seconds from acknowledged POST to the count in GET /errors|p50|p99|p99.9|max|",
        "|---|---|---|---|---|",
        f"|{cfg['window']} windows, wait {cfg['window_wait_s']:g} s, reader lag {cfg['reader_lag_s']:g} s"
        f"|{seen['p50']}|{seen['p99']}|{seen['p999']}|{seen['max']}|",
        "",
        f"The error-counter flow meanwhile: RSS {min(rss, default=0)}-{max(rss, default=0)} MiB; "
        f"learners holding open window state at most {max(keys, default=0)}, "
        f"{keys[-1] if keys else 'n/a'} once the stream ended.",
        "",
    ]


def _dataflow(d: dict[str, Any]) -> list[str]:
    rows = [("passthrough (reads the feed only)", d["passthrough"])]
    rows.append(("error_counters", d["error_counters"]))
    out = [
        f"The same feed of {d['events_written']} events ({d['learners']} learners), read by each "
        f"flow from fresh recovery state, {d['workers']} workers (passthrough: best of "
        f"{len(d.get('passthrough_runs', [])) or 1}).",
        "",
        "|Flow|Entries|Seconds|Entries/s|vs passthrough|",
        "|---|---|---|---|---|",
    ]
    base = d["passthrough"]["entries_per_s"]
    for label, r in rows:
        out.append(
            f"|{label}|{r['entries']}|{r['seconds']}|{r['entries_per_s']}|{_ratio(r['entries_per_s'], base)}|"
        )
    return [*out, ""]


_FLOW_SECTIONS = {"freshness": _freshness, "dataflow": _dataflow}


def chart(run: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series: dict[str, list[tuple[int, float, float | None]]] = {}
    for p in run.get("limit", []):
        series.setdefault(f"raw {p['statement']} (ops/s)", []).append(
            (p["concurrency"], p["ops_per_s"], p["latency_ms"]["p99"])
        )
    for p in run.get("ingest", []):
        label = "API single POST" if p["mode"] == "single" else f"API batch of {p['batch_size']}"
        series.setdefault(f"{label} (utterances/s)", []).append(
            (p["concurrency"], p["items_per_s"], p["latency_ms"]["p99"])
        )
    if not series:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for label, points in series.items():
        points.sort()
        xs = [x for x, _, _ in points]
        style = "--" if label.startswith("raw") else "-"
        left.plot(xs, [y for _, y, _ in points], style, marker="o", label=label)
        right.plot(
            xs, [p99 or float("nan") for _, _, p99 in points], style, marker="o", label=label
        )
    for ax, title, ylabel in (
        (left, "Throughput", "per second"),
        (right, "p99 latency", "ms (log)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(
            f"requests in flight (a batch request carries {run['config']['batch_size']} utterances)"
        )
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle(
        f"utterstream {run['stamp']} ({run['config']['mode']}; {run['machine']['cores']} cores)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(run: dict[str, Any], results: Path) -> dict[str, Path]:
    results.mkdir(parents=True, exist_ok=True)
    stamp = run["stamp"]
    paths = {
        "json": results / f"{stamp}.json",
        "md": results / f"{stamp}.md",
        "png": results / f"{stamp}.png",
    }
    has_chart = chart(run, paths["png"])
    if not has_chart:
        paths.pop("png")
    paths["json"].write_text(json.dumps(run, indent=2, default=str) + "\n")
    paths["md"].write_text(markdown(run, paths["png"].name if has_chart else None))
    shutil.copyfile(paths["md"], results / "latest.md")
    paths["latest"] = results / "latest.md"
    return paths
