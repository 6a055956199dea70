"""Sections 3 and 4, "freshness" and "dataflow": measured by
bench/flows.py (written with the dataflows), which this runs once.

The contract: `python -m bench.flows [--quick]` prints one JSON
object on stdout (its last line that parses as one) and exits 0. Whatever it
reports is kept as it is; the report shows `freshness` and `dataflow` keys
when present, and everything else raw. Without that script both sections
say "not yet available".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from bench.common import ROOT


def run(
    quick: bool, timeout_s: float, rate: float | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """`rate`: POSTs/s for the freshness run (the script's default when None)."""
    command = [sys.executable, "-m", "bench.flows", *(["--quick"] if quick else [])]
    if rate:
        command += ["--rate", f"{rate:g}"]
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "why": f"no answer within {timeout_s:.0f}s"}
    for line in reversed(done.stdout.strip().splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            return {"status": "ok" if done.returncode == 0 else f"exit {done.returncode}", **found}
    try:
        whole = json.loads(done.stdout)
        if isinstance(whole, dict):
            return {"status": "ok" if done.returncode == 0 else f"exit {done.returncode}", **whole}
    except ValueError:
        pass
    return {
        "status": "failed",
        "why": f"exit {done.returncode}, no JSON object on stdout",
        "stderr": done.stderr[-800:],
    }
