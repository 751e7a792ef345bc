"""Time alignment on header stamps, for the live policy node and the offline bag -> episode converter.

Both face the same question: for each reference time (a camera frame), which sample of another
stream (joint states, end-effector poses, operator commands) goes with it?

  nearest_indices   the sample closest in time, within max_dt (states: symmetric tolerance)
  previous_indices  the latest sample at or before the reference, within max_age (commands: the
                    one in force then, i.e. zero-order hold; never a command from the future)
  find_gaps         where a stream dropped out (recording stalls, lost messages)
  StampedBuffer     the live version: a bounded, time-ordered buffer the node pushes messages into

Stamps are float seconds (header.stamp as sec + nanosec * 1e-9) and must be finite; a NaN or Inf
raises ValueError naming the array and the position. Inputs need NOT be sorted: indices always
refer to positions in the array as given. Among samples with equal stamps, nearest_indices picks
the first in input order and previous_indices the last (the one received last is the one in force).
Index -1 means "no sample within the tolerance".
"""
from __future__ import annotations

import bisect
import math
import threading
from typing import Any, List, NamedTuple, Optional, Tuple

import numpy as np


def _stamps(name: str, stamps) -> np.ndarray:
    arr = np.asarray(stamps, dtype=float)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of stamps [s], got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is {arr[bad[0]]}: stamps must be finite seconds")
    return arr


def _tolerance(name: str, value: Optional[float]) -> float:
    if value is None:
        return math.inf
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 seconds (or None / inf for no limit), got {value}")
    return value


def nearest_indices(reference_stamps, stamps, max_dt: Optional[float]) -> np.ndarray:
    """For each reference stamp, the index into `stamps` of the closest one with |dt| <= max_dt, else -1.

    A sample exactly between two others goes to the earlier one. max_dt None: no limit.
    """
    ref = _stamps("reference_stamps", reference_stamps)
    st = _stamps("stamps", stamps)
    max_dt = _tolerance("max_dt", max_dt)
    out = np.full(ref.shape, -1, dtype=np.int64)
    if st.size == 0 or ref.size == 0:
        return out
    order = np.argsort(st, kind="stable")
    s = st[order]
    pos = np.searchsorted(s, ref, side="left")
    before = np.clip(pos - 1, 0, s.size - 1)
    after = np.clip(pos, 0, s.size - 1)
    d_before = np.where(pos > 0, ref - s[before], np.inf)
    d_after = np.where(pos < s.size, s[after] - ref, np.inf)
    pick = np.where(d_before <= d_after, before, after)
    # Equal stamps: the first of them in input order (the stable sort keeps input order among equals).
    pick = np.searchsorted(s, s[pick], side="left")
    ok = np.minimum(d_before, d_after) <= max_dt
    out[ok] = order[pick[ok]]
    return out


def previous_indices(reference_stamps, stamps, max_age: Optional[float] = None) -> np.ndarray:
    """For each reference stamp, the index of the latest sample stamped at or before it and at most
    max_age [s] older, else -1 (zero-order hold). max_age None: no limit."""
    ref = _stamps("reference_stamps", reference_stamps)
    st = _stamps("stamps", stamps)
    max_age = _tolerance("max_age", max_age)
    out = np.full(ref.shape, -1, dtype=np.int64)
    if st.size == 0 or ref.size == 0:
        return out
    order = np.argsort(st, kind="stable")
    s = st[order]
    pos = np.searchsorted(s, ref, side="right") - 1  # last sample <= ref, the last of equal stamps
    valid = pos >= 0
    idx = np.clip(pos, 0, s.size - 1)
    valid &= (ref - s[idx]) <= max_age
    out[valid] = order[idx[valid]]
    return out


def find_gaps(stamps, expected_period: float, factor: float = 2.0) -> List[Tuple[float, float, float]]:
    """Intervals where consecutive stamps (sorted) are more than factor * expected_period apart.

    Returns [(start, end, duration)] in seconds: the stamps either side of each gap.
    """
    st = np.sort(_stamps("stamps", stamps))
    expected_period, factor = float(expected_period), float(factor)
    if not (expected_period > 0 and math.isfinite(expected_period)):
        raise ValueError(f"expected_period must be a positive number of seconds, got {expected_period}")
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"factor must be positive, got {factor}")
    if st.size < 2:
        return []
    dt = np.diff(st)
    return [(float(st[i]), float(st[i + 1]), float(dt[i])) for i in np.flatnonzero(dt > factor * expected_period)]


class Stamped(NamedTuple):
    stamp: float
    value: Any


class StampedBuffer:
    """The latest `maxlen` samples of a stream, ordered by stamp, for live alignment in a node.

    push() may be called from a subscription callback while a timer reads (thread-safe). Samples
    arriving out of order are inserted in place; a sample with an already stored stamp replaces it;
    when full, the oldest stamp is dropped.
    """

    def __init__(self, maxlen: int):
        if int(maxlen) != maxlen or maxlen < 1:
            raise ValueError(f"maxlen must be a positive integer, got {maxlen!r}")
        self.maxlen = int(maxlen)
        self._stamps: List[float] = []
        self._values: List[Any] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._stamps)

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._values.clear()

    def push(self, stamp: float, value: Any) -> None:
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be finite seconds, got {stamp}")
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp)
            if i < len(self._stamps) and self._stamps[i] == stamp:
                self._values[i] = value
                return
            self._stamps.insert(i, stamp)
            self._values.insert(i, value)
            if len(self._stamps) > self.maxlen:
                del self._stamps[0], self._values[0]
            self._arrived.notify_all()

    def latest(self) -> Optional[Stamped]:
        """The sample with the largest stamp, or None when empty."""
        with self._lock:
            return Stamped(self._stamps[-1], self._values[-1]) if self._stamps else None

    def at(self, t: float, max_dt: Optional[float]) -> Optional[Stamped]:
        """The sample closest to t with |stamp - t| <= max_dt (ties: the earlier), else None."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"query time must be finite, got {t}")
        max_dt = _tolerance("max_dt", max_dt)
        with self._lock:
            i = bisect.bisect_left(self._stamps, t)
            best = None
            for j in (i - 1, i):
                if 0 <= j < len(self._stamps):
                    d = abs(self._stamps[j] - t)
                    if d <= max_dt and (best is None or d < best[0]):
                        best = (d, j)
            return None if best is None else Stamped(self._stamps[best[1]], self._values[best[1]])

    def wait_at(self, t: float, max_dt: Optional[float], timeout: float) -> Optional[Stamped]:
        """at(t, max_dt), once a sample stamped at or after t is in (no later arrival can be nearer,
        the stream being in order) or after `timeout` [s] of waiting, whichever comes first.

        For a frame and a state stamped at the same instant but delivered by different
        subscriptions: the frame can be handled before its state has been received.
        """
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"query time must be finite, got {t}")
        with self._arrived:
            self._arrived.wait_for(lambda: bool(self._stamps) and self._stamps[-1] >= t, timeout=max(0.0, timeout))
        return self.at(t, max_dt)

    def stamps(self) -> np.ndarray:
        """A copy of the stored stamps, ascending."""
        with self._lock:
            return np.array(self._stamps, dtype=float)
