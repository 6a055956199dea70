"""The benchmark's processes write their Prometheus samples into a folder
of the bench's own, emptied per run: never into the one the API of ops/up
serves /metrics from."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.common import own_metrics_dir

COUNT_ONE = (
    "from prometheus_client import Counter; Counter('utterstream_bench_probe', 'a probe').inc()"
)


def test_the_bench_empties_its_own_folder_and_its_children_write_there(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(served))
    folder = tmp_path / "bench-metrics"
    folder.mkdir()
    (folder / "counter_999.db").write_bytes(b"left by an earlier run")

    assert own_metrics_dir(folder) == folder
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder)
    subprocess.run([sys.executable, "-c", COUNT_ONE], check=True, env=dict(os.environ))

    assert [p.name.startswith("counter_") for p in folder.iterdir()] == [True]
    assert not (folder / "counter_999.db").exists()
    assert list(served.iterdir()) == []
