"""Operator-visible event log lines without flooding the terminal. No ROS.

Every hold, refusal or clamp a node applies is counted (for /diagnostics) and reported in its log:
``EventLog.report(key, now)`` says whether to write a line now. The first occurrence of a key is
always reported; after that at most one line per ``throttle`` seconds per key, and that line says how
many occurrences it stands for, so nothing is hidden and a 100 Hz hold does not write 100 lines a
second. ``edge(key, active)`` is for conditions that hold over time (the watchdog holding, a camera
clock running ahead): it reports the change into and out of the condition, once each.
"""
from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Dict, Optional, Tuple


class EventLog:
    def __init__(self, throttle: float = 5.0):
        if not (throttle >= 0 and math.isfinite(throttle)):
            raise ValueError(f"throttle must be a finite number of seconds >= 0, got {throttle}")
        self.throttle = float(throttle)
        self.counts: Counter = Counter()
        self._last: Dict[str, float] = {}
        self._since: Counter = Counter()
        self._active: Dict[str, bool] = {}
        self._lock = threading.Lock()

    def report(self, key: str, now: float) -> Optional[Tuple[int, bool]]:
        """Count one occurrence of ``key`` at ``now`` [s]. Returns None when no line is due, else
        (occurrences since the last line including this one, first time ever)."""
        with self._lock:
            self.counts[key] += 1
            self._since[key] += 1
            last = self._last.get(key)
            if last is not None and now - last < self.throttle and now >= last:
                return None
            self._last[key] = now
            n, self._since[key] = self._since[key], 0
            return n, last is None

    def edge(self, key: str, active: bool) -> Optional[bool]:
        """Track a condition; returns its new value when it changed (the first True included), else None."""
        with self._lock:
            before = self._active.get(key, False)
            self._active[key] = bool(active)
            return bool(active) if bool(active) != before else None


def suffix(count: int, first: bool) -> str:
    """What to append to a reported line: how many occurrences it stands for."""
    return "" if first or count <= 1 else f" ({count} times since the last report)"
