"""Section 6, "memory": resident set size of the API's worker processes,
sampled at points of the run; flat when the last sample is within ±10% of
the first one taken after warm-up (imports and caches filled)."""

from __future__ import annotations

from typing import Any

TOLERANCE = 0.10


def rss_mib(pid: int) -> float | None:
    try:
        import psutil

        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except ImportError:  # pragma: no cover - psutil comes with locust
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
    except Exception:  # the process is gone
        return None
    return None


def sample(label: str, pids: list[int]) -> dict[str, Any]:
    per_worker = {str(pid): rss_mib(pid) for pid in pids}
    known = [v for v in per_worker.values() if v is not None]
    return {"at": label, "workers": per_worker, "total_mib": round(sum(known), 1)}


def verdict(samples: list[dict[str, Any]], baseline: str) -> dict[str, Any]:
    """Compare the last sample with the one labelled `baseline` (and with the
    very first, reported alongside)."""
    if len(samples) < 2:
        return {"flat": None, "why": "fewer than two samples"}
    base = next((s for s in samples if s["at"] == baseline), samples[0])
    first, last = samples[0], samples[-1]
    change = (
        (last["total_mib"] - base["total_mib"]) / base["total_mib"] if base["total_mib"] else 0.0
    )
    since_start = (
        (last["total_mib"] - first["total_mib"]) / first["total_mib"] if first["total_mib"] else 0.0
    )
    return {
        "flat": abs(change) <= TOLERANCE,
        "baseline": base["at"],
        "change_since_baseline": round(change, 3),
        "change_since_start": round(since_start, 3),
        "tolerance": TOLERANCE,
    }
