"""Time safety for stamped inputs from other computers. No ROS.

A camera or robot computer whose clock runs ahead stamps its messages in the receiver's future. Acted
on, such a frame would be treated as fresh for as long as the clock difference (the arm acting on an
old image), or queued until the receiver's clock catches up. So:

  * ``input_age_problem(now, stamp, max_age, future_tolerance)`` refuses a message stamped more than
    ``future_tolerance`` ahead of ``now`` as well as one older than ``max_age``: never queued;
  * ``ClockOffsetMonitor`` estimates, per source, the smallest ``arrival - stamp`` over a window of
    recent messages. With synchronised clocks that is the transport delay (>= 0, milliseconds); below
    ``-future_tolerance`` the source's clock is ahead of ours by at least that much; above
    ``max_age`` every message arrives too old to act on (its clock is behind, or the link is slow);
  * ``BackwardJumpDetector`` notices the node's own clock going back (a restarted simulator's /clock).
"""
from __future__ import annotations

import math
import threading
from collections import deque
from typing import Dict, Optional

FROM_FUTURE = "from_future"
STALE = "stale"
NON_FINITE = "non_finite_stamp"


def stamp_to_sec(stamp) -> float:
    """A builtin_interfaces/Time (anything with sec and nanosec, e.g. a message decoded from a bag) in
    float seconds: exactly the float a node gets for the same instant from its clock
    (``clock.now().nanoseconds * 1e-9``), so that "stamped at or after now" holds for a message stamped
    now. (``sec + nanosec * 1e-9`` differs from it in the last bit for about 4 instants in 10: 12.85 s
    became 12.85 against the clock's 12.850000000000001, and a policy activated at that instant took
    the frame stamped with it for one taken before.)"""
    return (int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)) * 1e-9


def input_age_problem(now: float, stamp: float, max_age: float, future_tolerance: float) -> Optional[str]:
    """None when a message stamped ``stamp`` may be acted on at ``now``; else why not."""
    if not (math.isfinite(stamp) and math.isfinite(now)):
        return NON_FINITE
    if stamp - now > future_tolerance:
        return FROM_FUTURE
    if now - stamp > max_age:
        return STALE
    return None


class ClockOffsetMonitor:
    """Smallest arrival - stamp over the last ``window`` messages of one source."""

    def __init__(self, window: int = 50, future_tolerance: float = 0.05, max_age: float = 0.2):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.future_tolerance = float(future_tolerance)
        self.max_age = float(max_age)
        self._delays: deque = deque(maxlen=int(window))

    def add(self, stamp: float, arrival: float) -> None:
        if math.isfinite(stamp) and math.isfinite(arrival):
            self._delays.append(arrival - stamp)

    def reset(self) -> None:
        """Forget the delays seen (the receiver's clock jumped: they compare two different time lines)."""
        self._delays.clear()

    @property
    def min_delay(self) -> Optional[float]:
        return min(self._delays) if self._delays else None

    def state(self) -> str:
        """'unknown' (no message yet), 'ahead' (source clock ahead), 'behind' (every message too old), 'ok'."""
        d = self.min_delay
        if d is None:
            return "unknown"
        if d < -self.future_tolerance:
            return "ahead"
        if d > self.max_age:
            return "behind"
        return "ok"

    def describe(self, source: str) -> str:
        d, state = self.min_delay, self.state()
        if state == "ahead":
            return (f"{source} clock is at least {-d:.3f} s ahead of this computer's: its messages are refused "
                    f"(sync both clocks, e.g. chrony/PTP)")
        if state == "behind":
            return (f"every {source} message arrives at least {d:.3f} s after its stamp (more than {self.max_age} s): "
                    f"its clock is behind this computer's or the link is slow; nothing is acted on")
        return f"{source} clock ok (smallest delay {d:.3f} s)" if d is not None else f"no {source} message yet"

    def values(self, source: str) -> Dict[str, str]:
        d = self.min_delay
        return {f"clock.{source}.state": self.state(),
                f"clock.{source}.min_delay_s": "" if d is None else f"{d:.4f}"}


class BackwardJumpDetector:
    """Notices a clock that runs backwards: a simulator restarted on use_sim_time (its /clock begins again
    near zero), or a wall clock stepped back.

    Everything a node keeps in that clock's time (the arm time, the newest robot state's stamp, a chunk's
    frame stamp, an activation time) then lies in the future: compared with the new time, fresh inputs read
    as "before the arm time" or are pruned as already past, and nothing moves until the clock catches up with
    the old time (perhaps never). ``check(now)`` returns how far the clock went back [s] once per jump, so the
    node can drop that state; rclpy's timers re-base themselves on such a jump, but the node's own
    bookkeeping does not. Thread-safe."""

    def __init__(self, tolerance: float = 0.0):
        self.tolerance = float(tolerance)
        self._latest: Optional[float] = None
        self._lock = threading.Lock()

    def check(self, now: float) -> Optional[float]:
        """None, or how far ``now`` lies before the latest time seen (then ``now`` becomes the latest)."""
        now = float(now)
        if not math.isfinite(now):
            return None
        with self._lock:
            latest, jumped = self._latest, None
            if latest is not None and now < latest - self.tolerance:
                jumped = latest - now
            self._latest = now if latest is None or jumped is not None else max(latest, now)
            return jumped
