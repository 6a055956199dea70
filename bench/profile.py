"""The hot path, profiled two ways.

- pyinstrument, in process: the app (create_app, real Cassandra and Redis)
  handles N single POSTs and M batch POSTs through Litestar's test client.
  It samples the event-loop thread only, and the test client's own httpx
  work shows up too (grouped as `httpx`/`litestar.testing`).
- py-spy, if on PATH or in ~/.local/bin (`uv tool install py-spy`): the
  real granian workers, every thread (the driver's I/O thread included),
  while a load runs against them.

Both are reduced to the same two tables: self time by function, and by
package (our `api`/`cql`, each library, the standard library's asyncio...).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

IDLE = ("select (selectors.py", "EpollSelector.select", "poll (selectors.py", "epoll.poll")
_SITE = re.compile(r"(?:site-packages|dist-packages)/([A-Za-z0-9_]+)")
_STDLIB_DIRS = {
    "concurrent",
    "json",
    "logging",
    "email",
    "http",
    "multiprocessing",
    "importlib",
    "collections",
    "encodings",
    "urllib",
    "ctypes",
    "re",
}
OWN = ("api", "cql", "dataflows", "bench")
_LINE = re.compile(r":\d+\)$")


def package_of(path: str) -> str:
    """The package a source file belongs to: pyinstrument gives absolute
    paths, py-spy paths relative to sys.path (`litestar/app.py`, `uuid.py`)."""
    path = path.replace("\\", "/")
    if not path or path.startswith("<"):
        return "native/unknown"
    if m := _SITE.search(path):
        return m.group(1)
    for own in OWN:
        if f"/{own}/" in path or path.startswith(f"{own}/"):
            return own
    if path.startswith("/"):
        return "asyncio" if "/asyncio/" in path else "stdlib"
    first = path.split("/", 1)[0] if "/" in path else ""
    if first == "asyncio":
        return "asyncio"
    return first if first and first not in _STDLIB_DIRS else "stdlib"


def _top(counter: Counter[str], total: float, n: int) -> list[dict[str, Any]]:
    return [
        {"name": name, "share": round(value / total, 4) if total else 0.0}
        for name, value in counter.most_common(n)
    ]


# ---- pyinstrument, in process


async def _drive_app(
    settings: Any, key: str, singles: int, batches: int, batch: int, concurrency: int
) -> Any:
    """The app in this thread and this event loop (httpx's ASGITransport; the
    Litestar test client would run it on a portal thread pyinstrument does
    not sample), through its real lifespan."""
    import logging
    from datetime import UTC, datetime

    import httpx
    from pyinstrument import Profiler

    from api.app import create_app
    from bench.common import ERRORS, TEXT

    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {key}"}
    tag = os.urandom(4).hex()
    ts = datetime.now(UTC).isoformat()
    user, conv = f"prof-{tag}-u", f"prof-{tag}-c"

    def item(n: int) -> dict[str, Any]:
        return {
            "utterance_id": f"prof-{tag}-{n}",
            "user_id": user,
            "conversation_id": conv,
            "text": TEXT,
            "timestamp": ts,
            "errors": ERRORS,
            "words_learned": 3,
        }

    async with (
        app.lifespan(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", headers=headers
        ) as client,
    ):

        async def post(path: str, body: Any, key: str | None = None) -> None:
            extra = {"Idempotency-Key": key} if key else {}
            r = await client.post(path, json=body, headers=extra)
            assert r.status_code in (201, 202), r.text

        await post("/v1/users", {"user_id": user, "email": f"{user}@x.invalid", "name": "P"})
        await post("/v1/conversations", {"user_id": user, "conversation_id": conv})

        async def single(n: int) -> None:
            await post("/v1/utterances", item(n), f"prof-{tag}-{n}")

        async def many(n: int) -> None:
            body = {"utterances": [item(n * 10_000 + i) for i in range(batch)]}
            await post("/v1/utterances/batch", body, f"prof-{tag}-b{n}")

        await asyncio.gather(*(single(10**7 + i) for i in range(concurrency)))  # warm-up
        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
        for start in range(0, singles, concurrency):
            await asyncio.gather(
                *(single(n) for n in range(start, min(singles, start + concurrency)))
            )
        for start in range(1, batches + 1, 4):
            await asyncio.gather(*(many(n) for n in range(start, min(batches + 1, start + 4))))
        profiler.stop()
    return profiler


def in_process(
    settings: Any,
    key: str,
    singles: int,
    batches: int,
    batch: int,
    concurrency: int,
    text_out: Path,
) -> dict[str, Any]:
    profiler = asyncio.run(_drive_app(settings, key, singles, batches, batch, concurrency))
    text_out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    root = profiler.last_session.root_frame()
    by_function: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    own_inclusive: Counter[str] = Counter()
    idle = 0.0
    stack = [root] if root else []
    while stack:
        frame = stack.pop()
        children = [c for c in frame.children if not c.is_synthetic]
        stack.extend(children)
        if frame.is_synthetic:
            continue
        label = f"{frame.function} ({frame.file_path_short})"
        if package_of(frame.file_path or "") in OWN:
            own_inclusive[label] += frame.time
        own = frame.time - sum(c.time for c in children)
        if own <= 0:
            continue
        if any(mark in label for mark in IDLE):
            idle += own
            continue
        by_function[label] += own
        by_package[package_of(frame.file_path or "")] += own
    busy = sum(by_function.values())
    total = busy + idle
    return {
        "tool": "pyinstrument (event-loop thread, in-process test client)",
        "requests": {
            "single": singles,
            "batch": batches,
            "batch_size": batch,
            "concurrency": concurrency,
        },
        "wall_s": round(total, 2),
        "idle_share": round(idle / total, 3) if total else None,
        "top_functions": _top(by_function, busy, 15),
        "by_package": _top(by_package, busy, 12),
        "own_inclusive": _top(own_inclusive, total, 12),
        "text": str(text_out),
    }


# ---- py-spy, the real workers


def pyspy_path() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    local = Path.home() / ".local" / "bin" / "py-spy"
    return str(local) if local.exists() else None


def start_pyspy(
    pids: list[int], duration_s: float, out_dir: Path
) -> list[tuple[subprocess.Popen, Path]]:
    exe = pyspy_path()
    if exe is None:
        return []
    started = []
    for pid in pids:
        out = out_dir / f"pyspy-{pid}.txt"
        proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(round(duration_s)),
                "--rate",
                "100",
                "--format",
                "raw",
                "--threads",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append((proc, out))
    return started


def finish_pyspy(started: list[tuple[subprocess.Popen, Path]]) -> dict[str, Any]:
    by_function: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    own_inclusive: Counter[str] = Counter()
    problems = []
    for proc, out in started:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0 or not out.exists():
            problems.append(err.decode(errors="replace")[-300:])
            continue
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = stack.split(";")
            thread = re.sub(r"^thread \(\d+\): ", "", frames[0])
            thread = re.sub(r"[-_]\d+", "", thread)  # Thread-3 (...) and Thread-7 (...) alike
            n = int(count)
            if len(frames) == 1:  # a thread with no Python frame: granian's Rust runtime
                thread = "native threads (no Python frames)"
            by_thread[thread] += n
            if len(frames) == 1:
                by_package["native threads (granian runtime)"] += n
                continue
            named = [_LINE.sub(")", f) for f in frames[1:]]
            by_function[named[-1]] += n
            m = re.search(r"\(([^()]*)\)$", named[-1])
            by_package[package_of(m.group(1)) if m else "native/unknown"] += n
            for frame in set(named):
                m = re.search(r"\(([^()]*)\)$", frame)
                if m and package_of(m.group(1)) in OWN:
                    own_inclusive[frame] += n
    total = sum(by_thread.values())
    if not total:
        return {"tool": "py-spy", "error": "; ".join(problems) or "no samples"}
    return {
        "tool": "py-spy (granian workers, all threads, under load)",
        "samples": total,
        "top_functions": _top(by_function, total, 15),
        "by_package": _top(by_package, total, 12),
        "by_thread": _top(by_thread, total, 6),
        "own_inclusive": _top(own_inclusive, total, 12),
        "problems": problems,
    }
