"""Joint references for a position-controlled arm: ros2_control's joint_trajectory_controller semantics.

``JointTrajectoryFollower`` turns what the standard controllers accept into the joint reference
(positions and velocities) that the simulated arm's servos track, sampled at any time:

  * a trajectory (trajectory_msgs/JointTrajectory as plain values): points with ``time_from_start``
    after a start time (``None`` or 0, as a zero header stamp, = start when received); the arm moves from
    its state when the trajectory arrives (or, with ``open_loop``, from the last reference) to the
    first point, then point to point: linear in position, or cubic (Hermite) when every point has
    velocities; after the last point it holds the last position. A new trajectory replaces the
    current one. Joints are matched by name, in any order. Refused, with a TrajectoryError that says
    why, and the current motion kept: unknown or missing joints, duplicate names, a point whose
    lengths do not match the names, non-finite values, times not increasing, a trajectory that ends
    before it arrives. An empty trajectory stops the arm where it is (as joint_trajectory_controller).
  * a position target (forward_position_controller/commands): the reference jumps to it, zero velocity.
  * hold: the reference stays at a position.

Every reference is clipped into the joint limits. Plain Python (numpy only).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np


class TrajectoryError(ValueError):
    """A command that the follower refuses; the message says why, ``kind`` names the reason (unknown_joints,
    missing_joints, duplicate_joints, length, nan, time, past). The current motion is kept."""

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind


class JointTrajectoryFollower:
    def __init__(self, joint_names: Sequence[str], lower: Optional[Sequence[float]] = None,
                 upper: Optional[Sequence[float]] = None, open_loop: bool = False):
        self.joint_names: Tuple[str, ...] = tuple(joint_names)
        if len(set(self.joint_names)) != len(self.joint_names) or not self.joint_names:
            raise ValueError(f"joint names must be distinct and not empty, got {list(joint_names)}")
        n = len(self.joint_names)
        self.lower = np.full(n, -np.inf) if lower is None else np.asarray(lower, dtype=float).reshape(n)
        self.upper = np.full(n, np.inf) if upper is None else np.asarray(upper, dtype=float).reshape(n)
        self.open_loop = bool(open_loop)
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        # knots: times (K,), positions (K, n), velocities (K, n) or None (linear)
        self._times = np.zeros(1)
        self._positions = np.zeros((1, n))
        self._velocities: Optional[np.ndarray] = None
        self.mode = "hold"

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    # ------------------------------------------------------------------ commands
    def hold(self, positions: Sequence[float], now: float = 0.0) -> None:
        """Stay at ``positions`` (the order of joint_names)."""
        q = self._finite_vector(positions, "hold position")
        self._times, self._positions, self._velocities = np.array([now]), self._clip(q)[None], None
        self.mode = "hold"

    def set_position_target(self, positions: Sequence[float], now: float = 0.0) -> None:
        """forward_position_controller: the reference becomes ``positions`` (order of joint_names) at once."""
        q = self._finite_vector(positions, "position command")
        self._times, self._positions, self._velocities = np.array([now]), self._clip(q)[None], None
        self.mode = "position"

    def set_trajectory(self, joint_names: Sequence[str], points: Sequence[Tuple[Sequence[float], Optional[Sequence[float]], float]],
                       now: float, current_positions: Sequence[float], current_velocities: Optional[Sequence[float]] = None,
                       start_time: Optional[float] = None, received: Optional[float] = None) -> None:
        """Follow a trajectory from now on, replacing the current one.

        points: (positions, velocities or None/empty, time_from_start [s]) in the order of ``joint_names``;
        start_time: when time_from_start counts from, on the clock of ``now`` (None or 0: now);
        received: when the trajectory arrived, if before ``now`` (a controller applies commands at its next
        update): a trajectory is refused when it ends before it arrived, as joint_trajectory_controller does."""
        offsets, positions, velocities = self.check_trajectory(joint_names, points)
        current = self._finite_vector(current_positions, "current positions")
        current_v = np.zeros(self.dof) if current_velocities is None else \
            self._finite_vector(current_velocities, "current velocities")
        if not math.isfinite(now):
            raise TrajectoryError(f"time is not finite: {now}", "nan")
        if len(points) == 0:   # joint_trajectory_controller: an empty trajectory stops the arm
            self.hold(self.sample(now)[0] if self.open_loop else current, now)
            return
        arrived = now if received is None else min(float(received), now)
        start = arrived if start_time is None or start_time == 0.0 else float(start_time)
        if not math.isfinite(start):
            raise TrajectoryError(f"start time is not finite: {start_time}", "nan")
        times = [start + t for t in offsets]
        if times[-1] < arrived:
            raise TrajectoryError(f"trajectory ends {arrived - times[-1]:.3f} s before it arrived (header stamp "
                                  "too old, or clocks out of sync)", "past")
        with_velocities = all(v is not None for v in velocities)
        start_q = self.sample(now)[0] if self.open_loop else self._clip(current)
        start_v = self.sample(now)[1] if self.open_loop else current_v
        # Points already due when the trajectory arrives are passed: the motion starts from the arm's state now.
        keep = [i for i, t in enumerate(times) if t > now]
        if not keep:   # the last point is due exactly now
            keep = [len(times) - 1]
            times[-1] = now + 1e-9
        self._times = np.array([now] + [times[i] for i in keep])
        self._positions = np.vstack([start_q[None]] + [self._clip(positions[i])[None] for i in keep])
        self._velocities = np.vstack([start_v[None]] + [velocities[i][None] for i in keep]) if with_velocities else None
        self.mode = "trajectory"

    def check_trajectory(self, joint_names: Sequence[str], points) -> Tuple[List[float], List[np.ndarray], list]:
        """What does not depend on time: joints, lengths, finite values, increasing times. Returns
        (time_from_start list, positions and velocities (or None) in the order of joint_names); raises
        TrajectoryError. A controller checks this on arrival. No points (a stop) may name no joints."""
        if len(points) == 0:
            unknown = [n for n in joint_names if n not in self._index]
            if unknown:
                raise TrajectoryError(f"unknown joint(s) {', '.join(map(repr, unknown))}; this arm has "
                                      f"{', '.join(self.joint_names)}", "unknown_joints")
            return [], [], []
        order = self._order(joint_names)
        offsets, positions, velocities = [], [], []
        for k, point in enumerate(points):
            if len(point) != 3:
                raise TrajectoryError(f"point {k}: expected (positions, velocities, time_from_start)", "length")
            pos, vel, t = point
            if len(pos) != len(joint_names):
                raise TrajectoryError(f"point {k}: {len(pos)} positions for {len(joint_names)} joints", "length")
            if vel is not None and len(vel) not in (0, len(joint_names)):
                raise TrajectoryError(f"point {k}: {len(vel)} velocities for {len(joint_names)} joints", "length")
            p = np.asarray(pos, dtype=float)
            if not np.all(np.isfinite(p)):
                raise TrajectoryError(f"point {k}: positions have NaN/Inf", "nan")
            t = float(t)
            if not (math.isfinite(t) and t >= 0.0):
                raise TrajectoryError(f"point {k}: time_from_start must be a finite time >= 0, got {t}", "time")
            if offsets and t <= offsets[-1]:
                raise TrajectoryError(f"point {k}: time_from_start {t:.6f} s does not increase "
                                      f"(previous {offsets[-1]:.6f} s)", "time")
            offsets.append(t)
            positions.append(p[order])
            if vel is not None and len(vel):
                v = np.asarray(vel, dtype=float)
                if not np.all(np.isfinite(v)):
                    raise TrajectoryError(f"point {k}: velocities have NaN/Inf", "nan")
                velocities.append(v[order])
            else:
                velocities.append(None)
        return offsets, positions, velocities

    # ------------------------------------------------------------------ reference
    def sample(self, t: float) -> Tuple[np.ndarray, np.ndarray]:
        """Reference (positions, velocities) at time t, in the order of joint_names."""
        times, q = self._times, self._positions
        if self.mode != "trajectory" or t <= times[0]:
            return q[0].copy(), np.zeros(self.dof)
        if t >= times[-1]:
            return q[-1].copy(), np.zeros(self.dof)
        k = int(np.searchsorted(times, t, side="right")) - 1
        t0, t1 = times[k], times[k + 1]
        h = t1 - t0
        s = (t - t0) / h
        if self._velocities is None:
            pos = q[k] + s * (q[k + 1] - q[k])
            vel = (q[k + 1] - q[k]) / h
        else:   # cubic Hermite through both ends' positions and velocities
            v0, v1 = self._velocities[k], self._velocities[k + 1]
            h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
            pos = h00 * q[k] + h10 * h * v0 + h01 * q[k + 1] + h11 * h * v1
            d00, d10, d01, d11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
            vel = (d00 * q[k] + d10 * h * v0 + d01 * q[k + 1] + d11 * h * v1) / h
        clipped = self._clip(pos)
        vel = np.where(clipped != pos, 0.0, vel)
        return clipped, vel

    @property
    def end_time(self) -> float:
        """When the current trajectory reaches its last point (for hold and position: when set)."""
        return float(self._times[-1])

    # ------------------------------------------------------------------ checks
    def _order(self, names: Sequence[str]) -> np.ndarray:
        """Index into ``names`` for each of joint_names; refuses unknown, missing and duplicate joints."""
        names = list(names)
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise TrajectoryError(f"unknown joint(s) {', '.join(map(repr, unknown))}; this arm has "
                                  f"{', '.join(self.joint_names)}", "unknown_joints")
        if len(set(names)) != len(names):
            raise TrajectoryError(f"joint names repeat: {names}", "duplicate_joints")
        missing = [n for n in self.joint_names if n not in names]
        if missing:
            raise TrajectoryError(f"trajectory lacks joint(s) {', '.join(missing)} (every joint must be given)", "missing_joints")
        where = {n: i for i, n in enumerate(names)}
        return np.array([where[n] for n in self.joint_names], dtype=int)

    def _finite_vector(self, values: Sequence[float], what: str) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        if v.shape != (self.dof,):
            raise TrajectoryError(f"{what}: expected {self.dof} values ({', '.join(self.joint_names)}), "
                                  f"got {v.size}", "length")
        if not np.all(np.isfinite(v)):
            raise TrajectoryError(f"{what} has NaN/Inf: {v.tolist()}", "nan")
        return v

    def _clip(self, q: np.ndarray) -> np.ndarray:
        return np.clip(q, self.lower, self.upper)


def points_from_lists(positions: Sequence[Sequence[float]], times: Sequence[float],
                      velocities: Optional[Sequence[Sequence[float]]] = None) -> List[tuple]:
    """(positions, velocities, time_from_start) tuples for set_trajectory from parallel lists."""
    if velocities is None:
        velocities = [None] * len(positions)
    return [(p, v, t) for p, v, t in zip(positions, velocities, times)]
