"""Latency and rate summaries for the benchmark commands (`lapa bench ...`), one definition for all of
them so their JSON reads alike: p50 / p99 / mean / max in milliseconds and the sample count."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def latency_summary(samples_ms: Sequence[float], digits: int = 3) -> Dict[str, float]:
    """{"n", "p50_ms", "p99_ms", "mean_ms", "max_ms"} of latencies in ms; {"n": 0} when there are none."""
    a = np.asarray(samples_ms, dtype=float)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), digits),
            "p99_ms": round(float(np.percentile(a, 99)), digits), "mean_ms": round(float(a.mean()), digits),
            "max_ms": round(float(a.max()), digits)}


def rate_hz(times_s: Sequence[float], digits: int = 2) -> float:
    """Events per second over the span of their timestamps [s] (0 with fewer than two distinct times)."""
    t = list(times_s)
    return round((len(t) - 1) / (t[-1] - t[0]), digits) if len(t) > 1 and t[-1] > t[0] else 0.0


def sync_device(device) -> None:
    """Wait for a CUDA device's queued work before reading a timer (no-op on a CPU)."""
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.synchronize(device)
