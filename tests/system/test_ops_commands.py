"""The operator's commands as a new user runs them: every ops/ command
answers --help with its usage and exit 0, a typo in a flow's name is refused
with a non-zero exit, and the demo data ops/up loads is dated relative to
the day it runs (the same learners and texts whatever the day)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(p.name for p in (ROOT / "ops").iterdir() if p.is_file() and os.access(p, os.X_OK))


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_commands_are_found() -> None:
    assert {"up", "down", "test", "status", "dataflow", "keys", "load"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_prints_the_usage_and_exits_0(command: str) -> None:
    done = run(str(ROOT / "ops" / command), "--help")
    assert done.returncode == 0, done.stderr
    assert "usage" in (done.stdout + done.stderr).lower()


def test_a_misspelt_flow_is_refused_and_nothing_starts() -> None:
    done = run(str(ROOT / "ops" / "dataflow"), "start", "errors_counters")
    assert done.returncode != 0
    assert "unknown flow 'errors_counters'" in done.stderr
    assert not (ROOT / ".local" / "run" / "dataflow-errors_counters.pid").exists()


def test_a_bad_process_count_is_refused_and_nothing_starts() -> None:
    done = run(str(ROOT / "ops" / "dataflow"), "start", "learning", "--processes", "0")
    assert done.returncode != 0
    assert "--processes takes a whole number" in done.stderr


def test_the_cluster_commands_need_a_started_cluster_and_a_node_of_it(tmp_path: Path) -> None:
    env = {**os.environ, "UTTERSTREAM_LOCAL": str(tmp_path)}
    cluster = str(ROOT / "ops" / "cluster")
    done = subprocess.run([cluster, "kill", "1"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "no cluster was started" in done.stderr
    (tmp_path / "run" / "cluster.env").write_text("NODES=3\nFIRST=2\nHEAP=640M\n")
    done = subprocess.run([cluster, "kill", "4"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "no node '4' (1 … 3)" in done.stderr


def test_the_bench_refuses_to_run_beside_the_flows_of_ops_up(tmp_path: Path) -> None:
    """Their CPU would be taken from what is measured: the bench stops
    before it installs or starts anything."""
    env = {**os.environ, "UTTERSTREAM_LOCAL": str(tmp_path)}
    (tmp_path / "run").mkdir()
    with subprocess.Popen(["sleep", "60"]) as flow:
        (tmp_path / "run" / "dataflow-learning.pid").write_text(str(flow.pid))
        done = subprocess.run(
            [str(ROOT / "ops" / "bench"), "--quick"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        flow.kill()
    assert done.returncode != 0
    assert f"ops/up's dataflow-learning runs (pid {flow.pid})" in done.stderr


def demo(tmp_path: Path, end: date) -> list[dict]:
    out = tmp_path / f"demo-{end}.jsonl"
    script = str(ROOT / "ops" / "make_sample.py")
    done = run(sys.executable, script, "--end", end.isoformat(), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_the_demo_data_lies_in_the_four_weeks_before_the_day(tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    lines = demo(tmp_path, today)
    moments = [datetime.fromisoformat(line["timestamp"]) for line in lines]
    midnight = datetime.combine(today, datetime.min.time(), UTC)
    assert min(moments) >= midnight - timedelta(days=30)
    assert max(moments) < midnight  # never in the future, whatever the zone
    # Another day: the same utterances, moved in time.
    other = demo(tmp_path, today - timedelta(days=100))

    def pairs(data: list[dict]) -> list[tuple[str, str]]:
        return sorted((x["user_id"], x["text"]) for x in data)

    assert pairs(other) == pairs(lines)
