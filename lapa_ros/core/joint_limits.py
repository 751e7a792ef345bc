"""Joint limits as the IK step and the safety gate both apply them (one definition, two independent users:
the gate re-checks whatever the IK produced).

    limit_band(lower, upper, margin, current)   where joints may go: [lower + margin, upper - margin],
                                                widened to include the current position (a joint already
                                                outside may move back in, never further out)
    velocity_ratio(step, velocity_limits, dt)   how many times too fast a joint step is (> 1: scale the
                                                whole step down by it, keeping its direction)
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def limit_band(lower, upper, margin: float, current) -> Tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per joint. A margin wider than half a joint's range leaves only its middle; joints
    without finite limits (continuous) stay unbounded."""
    lo = np.asarray(lower, dtype=float) + margin
    hi = np.asarray(upper, dtype=float) - margin
    finite = np.isfinite(lo) & np.isfinite(hi)
    mid = np.where(finite, (np.where(finite, lo, 0.0) + np.where(finite, hi, 0.0)) / 2.0, 0.0)
    lo = np.where(finite, np.minimum(lo, mid), lo)
    hi = np.where(finite, np.maximum(hi, mid), hi)
    current = np.asarray(current, dtype=float)
    return np.minimum(lo, current), np.maximum(hi, current)


def velocity_ratio(step, velocity_limits, dt: float) -> float:
    """max over joints of |step| / (limit * dt); joints without a finite limit do not count, and a joint
    whose limit is 0 that would move makes it infinite (the whole step scales to nothing)."""
    limits = np.asarray(velocity_limits, dtype=float)
    speed = np.abs(np.asarray(step, dtype=float)) / dt
    if np.any((limits <= 0) & (speed > 0)):
        return float("inf")
    finite = np.isfinite(limits) & (limits > 0)
    if not finite.any():
        return 0.0
    return float(np.max(np.where(finite, speed / np.where(finite, limits, 1.0), 0.0)))
