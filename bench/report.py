"""One run, one report: bench/results/<stamp>.json (everything measured),
<stamp>.md (the tables), <stamp>.png (throughput and p99 against
concurrency), and latest.md (a copy of the newest Markdown)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.live import DRAIN_MAX_S, DRAIN_QUIET_S
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
    parts = [c["cassandra"], c["api"], c.get("bench", ""), c["other"], c["idle"]]
    return " / ".join(str(x) for x in parts)


def _other(point: dict[str, Any]) -> str:
    """Who "other" was: its busiest processes."""
    top = (point.get("cpu_percent") or {}).get("other_top") or []
    return ", ".join(f"{name} {share}" for name, share in top)


def _spread(figure: dict[str, Any] | None) -> str:
    """A median over rounds with its range: `12.3 (11.9-13.0)`."""
    if not figure or figure.get("median") is None:
        return ""
    if figure["min"] == figure["max"]:
        return f"{figure['median']:g}"
    return f"{figure['median']:g} ({figure['min']:g}-{figure['max']:g})"


def _cpu_ms(ms: dict[str, float | None] | None) -> str:
    ms = ms or {}
    return " / ".join(_ms(ms.get(part)) for part in ("cassandra", "api", "bench", "machine"))


CPU_HEAD = "CPU: Cassandra / API / bench / other / idle %|Other: busiest|"
CPU_MS_HEAD = "CPU ms per item: Cassandra / API / bench / machine"


def _table(header: str) -> list[str]:
    """The head of a Markdown table whose columns are `header` ("A|B|C")."""
    return [f"|{header}|", "|---" * (header.count("|") + 1) + "|"]


def best_lwt(run: dict[str, Any]) -> dict[str, Any] | None:
    points = [p for p in run.get("limit", []) if p["statement"] == "lwt"]
    return max(points, key=lambda p: p["ops_per_s"]) if points else None


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
        out += _table(
            "Statement|Concurrency|Processes|Ops|Errors|Ops/s|p50 ms|p99 ms|p99.9 ms|Max ms"
        )
        for p in run["limit"]:
            lat = p["latency_ms"]
            out.append(
                f"|{p['statement']}|{p['concurrency']}|{p['processes']}|{p['ops']}|{p['errors']}|"
                f"{p['ops_per_s']}|{_ms(lat['p50'])}|{_ms(lat['p99'])}|{_ms(lat['p999'])}|{_ms(lat['max'])}|"
            )
        out += [
            "",
            f"The best LWT figure, **{lwt['ops_per_s']} ops/s** at {lwt['concurrency']} in flight, "
            "on fresh tables. Section 2 measures the LWT again at that concurrency, interleaved "
            "with its own points, and takes its ratios from those measurements."
            if lwt
            else "",
            "",
        ]
    else:
        out += ["skipped", ""]

    out += ["## 2. Ingest: the API's POST endpoints against the raw LWT, in rounds", ""]
    if run.get("generator_ceiling"):
        out += [
            "The load generator alone, against GET /health (a figure near this ceiling measures the generator):",
            "",
            *_table("Generator|Concurrency|Requests|Requests/s|p50 ms|p99 ms"),
        ]
        for g in run["generator_ceiling"]:
            lat = g["latency_ms"]
            out.append(
                f"|{g['generator']}|{g['concurrency']}|{g['requests']}|{g['req_per_s']}|{_ms(lat['p50'])}|{_ms(lat['p99'])}|"
            )
        out.append("")
    out += _ingest(run.get("ingest"), run["config"]["mode"] == "full")
    df = run.get("dataflow", {"status": "skipped"})
    for number, name in ((3, "freshness"), (4, "dataflow")):
        out += [f"## {number}. {name.capitalize()}", ""]
        if df.get("status") == "ok" and name in df:
            out += _FLOW_SECTIONS[name](df[name], full=df.get("for_ratios", True))
        elif df.get("status") == "ok":
            out += [
                f"bench/flows.py reported no `{name}` key; its whole answer is in the JSON report.",
                "",
            ]
        else:
            out += [f"{df.get('status')}: {df.get('why', '')}", ""]

    out += ["## 5. Reads: GET endpoints against a raw single-partition driver read", ""]
    out += _reads(run.get("reads"), run.get("reads_unusable", {}))

    out += ["## 6. Memory: RSS of the API workers", ""]
    mem = run.get("memory")
    if mem:
        out += _table("At|Per worker (MiB)|Total MiB")
        for s in mem["samples"]:
            per = ", ".join(_ms(x) for x in s["workers"].values())
            out.append(f"|{s['at']}|{per}|{s['total_mib']}|")
        out += ["", _verdict(mem["verdict"], "start"), ""]
    else:
        out += ["skipped", ""]

    out += ["## 7. Soak: API memory over sustained mixed load", ""]
    out += _soak(run.get("soak"))

    out += ["## 8. Live: SSE and WebSocket clients while utterances flow", ""]
    for live_run in [run.get("live"), *run.get("live_more", [])]:
        out += _live(live_run, cfg["mode"] == "full")

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
        out += _table("Self time by package|Share")
        out += [f"|{p['name']}|{p['share']:.1%}|" for p in prof["by_package"]]
        out += ["", *_table("Self time by function|Share")]
        out += [f"|`{p['name']}`|{p['share']:.1%}|" for p in prof["top_functions"]]
        if prof.get("own_inclusive"):
            out += ["", *_table("Inclusive time in our code (api/, cql/)|Share")]
            out += [f"|`{p['name']}`|{p['share']:.1%}|" for p in prof["own_inclusive"]]
        out.append("")
    if not run.get("profiles"):
        out += ["skipped", ""]

    if "cluster" in run:
        out += _cluster(run["cluster"])
    if chart:
        out += ["## Chart", "", f"![throughput and p99 latency against concurrency]({chart})", ""]
    if run.get("errors"):
        out += (
            ["## Sections that failed", ""]
            + [f"- {k}: {e}" for k, e in run["errors"].items()]
            + [""]
        )
    return "\n".join(out)


def _ingest(ingest: dict[str, Any] | None, full: bool) -> list[str]:
    if not ingest:
        return ["skipped", ""]
    from bench.ingest import reference_cost

    out = [
        "The raw LWT reference (section 1's statement at its best concurrency, the same driver "
        "processes), measured before each round and once after the last (with the sweep's "
        "compaction debt):",
        "",
        *_table(f"Measured|Ops/s|p50 ms|p99 ms|{CPU_HEAD}{CPU_MS_HEAD}"),
    ]
    for ref in ingest["references"]:
        lat = ref["latency_ms"]
        cost = reference_cost([ref])["cpu_ms_per_item"]
        out.append(
            f"|{_when(ref['round'])}|{ref['ops_per_s']}|{_ms(lat['p50'])}|{_ms(lat['p99'])}|"
            f"{_cpu(ref)}|{_other(ref)}|{_cpu_ms(cost)}|"
        )
    ref = reference_cost(ingest["references"])
    out += [
        "",
        f"Over its {len(ingest['references'])} measurements: {_spread(ref['ops_per_s'])} ops/s "
        f"(median, range); CPU ms per LWT (Cassandra / API / bench / machine): {_cpu_ms(ref.get('cpu_ms_per_item'))}.",
        "",
        "Each point's median over the rounds, its range in brackets; `vs raw LWT` is each "
        "round's utterances/s over that round's reference."
        + ("" if full else " A quick run has one round and short points: not for ratios."),
        "",
        *_table(
            f"Endpoint|utterance_id|Requests in flight|Rounds|Utterances/s|vs raw LWT|p99 ms|"
            f"{CPU_HEAD}{CPU_MS_HEAD}"
        ),
    ]
    for p in ingest["medians"]:
        name = (
            "POST /v1/utterances"
            if p["mode"] == "single"
            else f"POST /v1/utterances/batch ({p['batch_size']})"
        )
        rate = _spread(p["items_per_s"]) + ("" if p["reliable"] else " (*)")
        out.append(
            f"|{name}|{'explicit' if p['ids'] else 'from the key'}|{p['concurrency']}|{p['rounds']}|"
            f"{rate}|{_spread(p['vs_lwt'])}|{_spread(p['p99_ms'])}|{_cpu(p)}|{_other(p)}|{_cpu_ms(p.get('cpu_ms_per_item'))}|"
        )
    out += [
        "",
        "Cassandra work per utterance: single POST with the key only = 1 LWT + 1 logged batch; "
        "with an explicit utterance_id, 1 more LWT; batch item = 1 LWT, its rows in chunked "
        "logged batches (+ 1 LWT per batch request). CPU ms per item is a part's share of all "
        "cores over the rate; `bench` is the load generator (or, for the reference, the driver "
        "processes).",
        "(*) in some round the median latency was over a fifth of the measured time, so the "
        "requests still in flight at the end weigh on the figure: read it as a lower bound.",
        "",
        "Every point of every round:",
        "",
        *_table(
            "Round|Endpoint|utterance_id|Requests in flight|Requests|Failures|Utterances/s|"
            f"p50 ms|p99 ms|Statuses|{CPU_HEAD.rstrip('|')}"
        ),
    ]
    for p in ingest["points"]:
        lat = p["latency_ms"]
        name = "single" if p["mode"] == "single" else f"batch ({p['batch_size']})"
        statuses = " ".join(f"{k}:{n}" for k, n in p["statuses"].items())
        if p["socket_errors"]:
            statuses += " " + " ".join(f"{k}:{n}" for k, n in p["socket_errors"].items())
        out.append(
            f"|{p['round']}|{name}|{'explicit' if p['ids'] else 'key'}|{p['concurrency']}|"
            f"{p['requests']}|{p['failures']}|{p['items_per_s']}|{_ms(lat['p50'])}|"
            f"{_ms(lat['p99'])}|{statuses}|{_cpu(p)}|{_other(p)}|"
        )
    return [*out, ""]


def _live(live: dict[str, Any] | None, full: bool) -> list[str]:
    if not live:
        return ["skipped", ""]
    errors = live["post_to_errors_event_ms"]
    lag = live.get("client_loop_lag_ms") or {}
    failures = ", ".join(f"{k} {v}" for k, v in sorted(live["failures"].items())) or "none"

    def p99_met(summary: dict[str, Any], target_ms: float) -> str:
        return _met(None if summary["p99"] is None else summary["p99"] <= target_ms, full)

    return [
        f"### {live['rate_per_s']:g} utterances/s offered",
        "",
        f"{live['sse_clients']} SSE clients (each drops and resumes with Last-Event-ID every "
        f"5-20 s) and {live['ws_clients']} WebSocket clients, {live['stalled_clients']} stalled "
        f"connections, utterances offered at {live['rate_per_s']:g}/s for {live['seconds']:g} s "
        f"with the dataflows running; {live['utterances_posted']} acknowledged "
        f"({live.get('acked_per_s', '')}/s); an API worker killed with -9 half-way: "
        f"{live['worker_killed']}; reconnects {live['reconnects']}.",
        "",
        *_table("Measure|p50|p99|max|Target"),
        *_write_rows(live, p99_met),
        f"|POST -> the `errors` event that counts it, ms ({live['errors_events_measured']} "
        f"measured)|{_ms(errors['p50'])}|{_ms(errors['p99'])}|{_ms(errors['max'])}|"
        f"p99 <= 2500 {p99_met(errors, 2500)}|",
        f"|the clients' event loop waking late, ms|{_ms(lag.get('p50'))}|{_ms(lag.get('p99'))}|"
        f"{_ms(lag.get('max'))}||",
        "",
        f"Events lost: {live['lost']}, duplicated: {live['duplicated']} (target 0 and 0: "
        f"{_met(live['lost'] == 0 and live['duplicated'] == 0, full)}), counted "
        f"{live.get('drained_s', 8)} s after the last POST, once the owed events stopped coming "
        f"(none for {DRAIN_QUIET_S:g} s, or {DRAIN_MAX_S:g} s at most); "
        f"the first event of {live.get('late_after_8_s', 'n/a')} utterances came later than 8 s "
        "after the last POST (what a fixed 8 s wait would count lost). A `reset` tells a client "
        "to read the state over REST: the events before it count as lost here.",
        f"API memory: {live['api_rss_growth_pct']:+}% over the run's last two thirds (target flat "
        f"within 10 %: {_met(abs(live['api_rss_growth_pct']) <= 10, full)}).",
        f"Client failures: {failures}. Every client runs in the bench's one process, which took "
        f"{live.get('client_cpu_percent_of_core', '')} % of a core: when its event loop wakes "
        "late, the latencies above are partly the client's own.",
        f"The machine's CPU over the run (Cassandra / API / bench clients / other / idle %): "
        f"{_cpu(live)}; other: {_other(live)}.",
        "",
    ]


def _write_rows(live: dict[str, Any], p99_met: Callable[[dict[str, Any], float], str]) -> list[str]:
    """Write -> client rows: to a client connected at the 202, which the
    target is about, and every event, with those that waited for their
    client's own reconnect."""
    write, connected = live["write_to_client_ms"], live["write_to_connected_client_ms"]
    return [
        f"|write (202) -> `utterance` event at a client connected at the 202, ms "
        f"({live['events_to_connected']} events)|{_ms(connected['p50'])}|{_ms(connected['p99'])}|"
        f"{_ms(connected['max'])}|p99 <= 250 {p99_met(connected, 250)}|",
        f"|the same, every event: also the {live['events_on_resume']} that came on resuming "
        f"after their client's own drop, ms|{_ms(write['p50'])}|{_ms(write['p99'])}|"
        f"{_ms(write['max'])}||",
    ]


def _when(round_: int | str) -> str:
    return f"before round {round_}" if isinstance(round_, int) else "after the last round"


def _reads(reads: dict[str, Any] | None, unusable: dict[str, str]) -> list[str]:
    if not reads:
        return ["skipped", ""]
    out = [
        "Median over the rounds, range in brackets; each ratio is to the raw read of its own round.",
        "At a fixed concurrency on a busy machine a request waits for the CPU of the requests",
        "ahead of it, so its latency follows its CPU cost: the machine's CPU ms per request,",
        "next to the raw read's, says how far a latency ratio can fall without cutting that cost.",
        "",
        *_table(
            "Endpoint|Rounds|Requests/s|p50 ms|p99 ms|p50 vs raw|p99 vs raw|"
            + CPU_MS_HEAD.replace("item", "request")
        ),
    ]
    for m in reads["medians"]:
        out.append(
            f"|{m['endpoint']}|{m['rounds']}|{_spread(m['req_per_s'])}|{_spread(m['p50_ms'])}|"
            f"{_spread(m['p99_ms'])}|{_spread(m['p50_vs_raw'])}|{_spread(m['p99_vs_raw'])}|"
            f"{_cpu_ms(m.get('cpu_ms_per_request'))}|"
        )
    out += [
        "",
        "Every point of every round:",
        "",
        *_table(
            "Round|Endpoint|Generator|Concurrency|Requests|Failures|Requests/s|p50 ms|p99 ms|"
            f"p99.9 ms|{CPU_HEAD.rstrip('|')}"
        ),
    ]
    for r in reads["points"]:
        lat = r["latency_ms"]
        out.append(
            f"|{r['round']}|{r['endpoint']}|{r['generator']}|{r['concurrency']}|{r['requests']}|"
            f"{r['failures']}|{r['req_per_s']}|{_ms(lat['p50'])}|{_ms(lat['p99'])}|"
            f"{_ms(lat.get('p999'))}|{_cpu(r)}|{_other(r)}|"
        )
    out += [f"\n{name}: {why}" for name, why in unusable.items()]
    return [*out, ""]


def _cluster(c: dict[str, Any] | None) -> list[str]:
    """The node-loss drill on 3 local nodes (bench/cluster.py)."""
    out = ["## Cluster: losing nodes and a dataflow process under load, 3 nodes", ""]
    if not c:
        return [*out, "failed: see the sections that failed", ""]
    out += [
        f"Drill: **{c.get('mode')}**, verdict {c.get('status')}. Acknowledged {c.get('acknowledged')}, "
        f"lost {c.get('lost')}; statuses over every attempt {c.get('statuses')}. Node restart "
        f"{c.get('node_restart_s')} s, two nodes {c.get('two_nodes_restart_s')} s; first 202 "
        f"{c.get('first_ack_after_quorum_back_s')} s after quorum returned; flow group restarted "
        f"in {c.get('flow_group_restart_s')} s, caught up {c.get('flow_caught_up_s')} s after the load.",
        "",
        *_table("Phase|Seconds|Acknowledged/s|p99 s (per attempt)|Statuses"),
    ]
    phases = dict(c.get("phases") or {})
    if "one_node_baseline" in c:
        phases = {"one node (127.0.0.1), for comparison": c["one_node_baseline"], **phases}
    for name, f in phases.items():
        out.append(
            f"|{name}|{f['seconds']}|{f['acknowledged_per_s']}|{f['p99_s']}|{f['statuses']}|"
        )
    if c.get("failure"):
        out += ["", "What failed:", "", "```", c["failure"], "```"]
    return [*out, ""]


def _soak(soak: dict[str, Any] | None) -> list[str]:
    if not soak:
        return ["skipped", ""]
    out = [
        f"Each minute: {60 * POST_SHARE:.0f} s of single POSTs, then {60 * (1 - POST_SHARE):.0f} s "
        "of served GETs, "
        f"{soak['concurrency']} in flight; RSS of all API workers after each minute.",
        "",
        *_table("Minute|POSTs|POST failures|GETs|GET failures|Total MiB"),
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


_NOT_FOR_RATIOS = (
    "**Quick run**: a smoke test with a short load and a small feed; "
    "its figures are not for ratios or targets."
)


def _seconds(summary: dict[str, Any]) -> str:
    return "|".join(_ms(summary.get(q)) for q in ("p50", "p99", "max"))


def _settled(idle: dict[str, Any]) -> str:
    """When the idle window began; results from before the flows had an
    idle cadence began right after the first sweep."""
    after = idle.get("after_s")
    if after is None:
        return "after their first sweep"
    return f"from {after:g} s after their first sweep, every feed shard idle"


def _met(ok: bool | None, full: bool) -> str:
    if ok is None:
        return ""
    return ("met" if ok else "**not met**") if full else ("(met)" if ok else "(not met)")


def _freshness(f: dict[str, Any], full: bool = True) -> list[str]:
    target = f["target"]
    acked = f["acknowledged"]
    posts = f["post_latency_ms"]
    statuses = " ".join(f"{k}:{n}" for k, n in sorted(f["post_statuses"].items()))
    out = [] if full else [_NOT_FOR_RATIOS, ""]
    out += [
        f"Steady ingest of {f['rate_per_s']:g} single POSTs/s for {f['seconds']:g} s over "
        f"{f['learners']} learners (half the best single-POST rate of section 2 when it ran, "
        "else bench/flows.py's default), "
        f"with the API and all three flows running as operators run them: {f['posted']} posted "
        f"(answers, retries with the same key included: {statuses}), "
        f"{acked.get('current', 0)} current and {acked.get('late', 0)} late "
        f"(timestamps {f['late_days'][0]:g}-{f['late_days'][1]:g} days old) acknowledged, "
        f"{f.get('post_unacknowledged', 0)} never; "
        f"POST p50 {_ms(posts['p50'])} ms, p99 {_ms(posts['p99'])} ms; at most "
        f"{f.get('in_flight_max', {}).get('posts')} in flight, a POST waited for a slot up to "
        f"{_ms(f.get('post_waited_for_slot_ms', {}).get('max'))} ms (more than a few ms: the "
        f"offered rate was not kept), the last answered {f.get('posts_answered_within_s')} s "
        "after the first.",
        "",
        f"One in {f['sample_every']['current']} current and one in {f['sample_every']['late']} "
        f"late acknowledged POSTs is read back through the GET endpoints every {f['poll_every_s']:g} s "
        "until the answer includes it (its window's, total's or period's count reaches the "
        "number of utterances acknowledged in it up to that one); one not included within "
        f"{f['give_up_s']:g} s is never seen. Seconds from the 202 to the first answer that "
        f"includes it; target p50 <= {target['p50_s']:g} s and p99 <= {target['p99_s']:g} s. "
        f"`top since` is since {f['since']}, learning periods are in {f['tz']}. "
        "GET /v1/utterances/{id} (status present) waits for no flow: its figures are the "
        "measurement's own part (the wait for the next poll and the GET itself). "
        "An as_of violation is an answer whose as_of is after a POST's 202 and that does not "
        f"count it yet. Reads: {f['reads']}, failed: {f['read_failures'] or 0}.",
        "",
        *_served(f, target, full),
    ]
    idle, load = f["flow_cpu"]["idle"], f["flow_cpu"]["load"]
    out += [
        "",
        f"The flows' CPU (each process with its children, % of one core) and RSS: idle "
        f"({idle['seconds']:g} s without POSTs, {_settled(idle)}) and under the load "
        f"({load['seconds']:g} s of POSTs):",
        "",
        *_table("Flow|Idle CPU %|Idle RSS MiB|Load CPU %|Load RSS MiB"),
    ]
    for flow, i in idle["flows"].items():
        under = load["flows"].get(flow, {})
        out.append(
            f"|{flow}|{i['cpu_percent_of_core']}|{i['rss_mib']}|"
            f"{under.get('cpu_percent_of_core', '')}|{under.get('rss_mib', '')}|"
        )
    machine = f.get("machine_cpu", {})
    held = f.get("held_learners", {})
    cfg = f["settings"]
    out += [
        "",
        "The machine (all cores = 100), Cassandra / API / bench / other / idle %: "
        f"idle {_cpu({'cpu_percent': machine.get('idle')})} "
        f"(other: {_other({'cpu_percent': machine.get('idle')})}), "
        f"under the load {_cpu({'cpu_percent': machine.get('load')})} "
        f"(other: {_other({'cpu_percent': machine.get('load')})}); "
        f"the bench's own client took {f.get('client_cpu_percent_of_core')} % of a core, its "
        f"event loop woke up to {_ms(f['client_loop_lag_ms']['p99'])} ms late (p99).",
        "",
        "Learners with items waiting in the collect step (latest snapshot): "
        + ", ".join(f"{k} {v}" for k, v in held.get("end_of_load", {}).items())
        + " at the end of the load; "
        + ", ".join(f"{k} {v}" for k, v in held.get("after_11_s", {}).items())
        + " 11 s later."
        + _restarts(f.get("flow_restarts", {}), f.get("load_window_s", [])),
        "",
        f"Settings: reader lag {cfg['reader_lag_s']:g} s, "
        + (
            f"poll one reader lag after a doorbell (else every {cfg['poll_interval_s']:g} s), "
            if cfg.get("doorbell")
            else f"poll every {cfg['poll_interval_s']:g} s, "
        )
        + f"sweep every {cfg['sweep_interval_s']:g} s over {cfg['feed_overlap_s']:g} s, flush "
        + _flush(cfg)
        + f" (or at {cfg['batch_max_items']} items), "
        f"{cfg['workers']} workers per flow.",
        "",
    ]
    return out + _kept(f.get("kept"), target, full)


def _flush(cfg: dict[str, Any]) -> str:
    return (
        f"{cfg['current_flush_s']:g} s after a learner's first item while caught up, "
        f"{cfg['flush_interval_s']:g} s after its newest while catching up"
    )


def _kept(k: dict[str, Any] | None, target: dict[str, float], full: bool) -> list[str]:
    """The rate the whole system keeps, and freshness at half of it."""
    from bench.freshness import SETTLE_MAX_S

    if not k:
        return []
    if "error" in k:
        return ["### At half the rate the whole system keeps", "", f"failed: {k['error']}", ""]
    probe, acked, posts = k["probe"], k["acknowledged"], k["post_latency_ms"]
    caught = k.get("caught_up_after_s")
    return [
        "### At half the rate the whole system keeps",
        "",
        "Section 2's best rate is the API's alone. With the three flows on the same machine "
        f"(nothing read back meanwhile), {probe['in_flight']} clients posting back to back for "
        f"{probe['seconds']:g} s had {probe['acknowledged']} POSTs acknowledged: "
        f"**{probe['per_s']:g} POSTs/s** (p50 {_ms(probe['post_latency_ms']['p50'])} ms, "
        f"p99 {_ms(probe['post_latency_ms']['p99'])} ms). Once the flows had caught up "
        + (
            f"(both as_of within {target['as_of_lag_s']:g} s of the present {caught:g} s later)"
            if caught is not None
            else f"(their as_of was still not within target {SETTLE_MAX_S:g} s later)"
        )
        + f", the same measurement at {k['rate_per_s']:g} POSTs/s for {k['seconds']:g} s over "
        f"{k['learners']} other learners: {k['posted']} posted, {acked.get('current', 0)} current "
        f"and {acked.get('late', 0)} late acknowledged, {k['post_unacknowledged']} never; POST "
        f"p50 {_ms(posts['p50'])} ms, p99 {_ms(posts['p99'])} ms, the last answered "
        f"{k['posts_answered_within_s']} s after the first; reads {k['reads']}, failed "
        f"{k['read_failures'] or 0}. The machine meanwhile, Cassandra / API / bench / other / "
        f"idle %: {_cpu({'cpu_percent': k.get('machine_cpu')})}.",
        "",
        *_served(k, target, full),
        "",
    ]


def _served(f: dict[str, Any], target: dict[str, float], full: bool) -> list[str]:
    """A load's freshness per served table, and its as_of lag."""
    from bench.freshness import TABLES

    out = [
        *_table(
            "Served table|Kind|Samples|p50 s|p99 s|max s|Never seen|as_of violated: samples (answers), ahead by up to s|Target"
        ),
    ]
    for table, label in TABLES.items():
        for kind, r in f["tables"].get(table, {}).items():
            timed = table != "utterance_completed"  # the insights flow's work: no target
            ok = (
                r["never_seen"] == 0
                and r["p50"] is not None
                and r["p50"] <= target["p50_s"]
                and r["p99"] <= target["p99_s"]
            )
            out.append(
                f"|{label}|{kind}|{r['n']}|{_seconds(r)}|{r['never_seen']}|"
                f"{r['as_of_violated']} ({r['as_of_violating_answers']}), {r['as_of_ahead_max_s']:g}|"
                f"{_met(ok if timed else None, full)}|"
            )
    out += [
        "",
        f"as_of against the present, sampled twice a second under the load (target: at most "
        f"{target['as_of_lag_s']:g} s behind):",
        "",
        *_table("Answer|Samples|p50 s|p99 s|max s|max at s into the load|Target"),
    ]
    for flow, label in (
        ("error_counters", "GET /errors (error_counters)"),
        ("learning", "GET /learning (learning)"),
    ):
        lag = f["as_of_lag_s"].get(flow, {})
        ok = lag.get("max") is not None and lag["max"] <= target["as_of_lag_s"]
        at = lag.get("max_at_s")
        out.append(
            f"|{label}|{lag.get('n', '')}|{_seconds(lag)}|{'' if at is None else f'{at:g}'}|"
            f"{_met(ok, full)}|"
        )
    return out


def _restarts(restarts: dict[str, list[dict[str, Any]]], load: list[float]) -> str:
    """Flows that exited (a Cassandra or Redis error) and were started again."""
    found = [
        f"{flow} at {r['at_s']:g} s (exit {r['exit']})"
        for flow, events in restarts.items()
        for r in events
    ]
    if not found:
        return ""
    during = f" (the load ran from {load[0]:g} s to {load[1]:g} s)" if len(load) == 2 else ""
    return f" **Flows that exited and were restarted 5 s later**: {', '.join(found)}{during}."


def _dataflow(d: dict[str, Any], full: bool = True) -> list[str]:
    labels = {
        "passthrough": "passthrough (reads the feed only)",
        "reference": "reference (one Cassandra row per entry)",
        "error_counters": "error_counters",
        "learning": "learning",
    }
    flows = d["flows"]
    order = " -> ".join(r["flow"] for r in d["runs"])
    out = [] if full else [_NOT_FOR_RATIOS, ""]
    out += [
        f"The same feed of {d['events_written']} events ({d['learners']} learners, timestamps up "
        f"to three days old), replayed by each flow from fresh recovery state with "
        f"{d['workers']} workers, in this order: {order} (a flow run more than once: its "
        f"fastest run){_quiet(d['runs'])}.",
        "",
        *_table("Flow|Entries|Seconds|Entries/s|vs reference|vs passthrough"),
    ]
    for name, label in labels.items():
        if (r := flows.get(name)) is None:
            continue
        out.append(
            f"|{label}|{r['entries']}|{r['seconds']}|{r['entries_per_s']}|"
            f"{_ratio(r['entries_per_s'], flows.get('reference', {}).get('entries_per_s'))}|"
            f"{_ratio(r['entries_per_s'], flows.get('passthrough', {}).get('entries_per_s'))}|"
        )
    runs = ", ".join(f"{r['flow']} {r['entries_per_s']:,.0f}" for r in d["runs"])
    out += ["", f"Every run, in order (entries/s): {runs}."]
    target = d.get("target_ratio", 0.5)
    verdicts = []
    for flow in ("error_counters", "learning"):
        ratio = d.get("ratios", {}).get(f"{flow}_vs_reference")
        if ratio is not None:
            verdicts.append(f"{flow} / reference = {ratio:.3f} {_met(ratio >= target, full)}")
    out += [
        "",
        f"Target: each counting flow at least {target:g}x the reference: "
        + "; ".join(verdicts)
        + ".",
        "",
    ]
    return out


def _quiet(runs: list[dict[str, Any]]) -> str:
    waits = [r["quiet_after_s"] for r in runs if "quiet_after_s" in r]
    if not waits:
        return ""
    return (
        f", each once Cassandra had no flush or compaction left (waited "
        f"{min(waits):g}-{max(waits):g} s for it)"
    )


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
    for p in (run.get("ingest") or {}).get("medians", []):
        label = (
            f"API single POST ({'explicit id' if p['ids'] else 'key only'})"
            if p["mode"] == "single"
            else f"API batch of {p['batch_size']}"
        )
        series.setdefault(f"{label} (utterances/s, median)", []).append(
            (p["concurrency"], p["items_per_s"]["median"], p["p99_ms"]["median"])
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
