"""Section "cluster": the node-loss drill of tests/system/test_cluster.py on a
3-node cluster of its own (127.0.0.2-4), at full length (a node down 60 s,
30 s of load around each fault, the same load on the single node first;
`--quick`: the suite's short version).

The drill is the test itself, run once under pytest, so the benchmark and
CI prove the same thing; this returns the figures it writes (throughput and
p99 per phase, statuses, lost utterances, restart times) with its verdict.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import ROOT

TEST = "tests/system/test_cluster.py"


def run(quick: bool, figures: Path, timeout_s: float) -> dict[str, Any]:
    env = {
        **os.environ,
        "UTTERSTREAM_CLUSTER_DRILL": "short" if quick else "full",
        "UTTERSTREAM_CLUSTER_FIGURES": str(figures),
    }
    figures.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST]
    drill = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = drill.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        # An interrupt, not a kill: pytest then runs the fixtures' finalisers,
        # which stop the drill's API, flows and Cassandra nodes.
        drill.send_signal(signal.SIGINT)
        drill.communicate(timeout=300)
        return {"status": "failed", "why": f"no answer within {timeout_s:.0f}s"}
    found = json.loads(figures.read_text()) if figures.exists() else {}
    status = "ok" if drill.returncode == 0 else f"failed (pytest exit {drill.returncode})"
    return {"status": status, **found, **({} if drill.returncode == 0 else _failure(output))}


def _failure(output: str) -> dict[str, str]:
    """What a failed drill said: pytest's `E` lines (the assertion and its
    values), which the end of a long output does not hold, and that end."""
    said = [line for line in output.splitlines() if line.startswith("E ")]
    return {"failure": "\n".join(said[:40]), "output": output[-1500:]}
