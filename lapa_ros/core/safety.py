"""The safety layer between the policy and the arm: every motion command passes through a SafetyGate.

Deliberately free of ROS (the arm controller node delegates to it and publishes `status()` on
/diagnostics), so each rule is unit-tested with explicit times:

  * the gate starts DISARMED; `arm()` lets commands through, `disarm()` stops them;
  * `trigger_estop(reason)` LATCHES: motion stays stopped until `release_estop()` AND a fresh `arm()`;
    `arm()` refuses while the e-stop is latched;
  * after arming, only commands stamped after the arm time move the arm (a command queued before an
    e-stop cannot resume motion by itself);
  * watchdog: a command older than `command_timeout` holds the arm;
  * a robot state (reported with `robot_state(now)`) older than `state_timeout` holds the arm, and `arm()`
    refuses: the workspace box would be checked against a position that is no longer the arm's;
  * NaN/Inf commands hold; the linear and angular speeds are clamped (direction kept);
  * a workspace box in the base frame: velocity components that would leave the box within one
    control period are scaled down so the next position stays inside; outside the box, only motion
    back towards it is allowed;
  * joint-space targets are clipped into the joint limits (less a margin) and to the velocity limits;
  * the gripper command is clamped to [0, 1]; NaN/Inf is dropped.

"Hold" means: command zero end-effector velocity (or, in joint space, the current joint positions);
the arm stays where it is, under control. Every hold or clamp is counted by reason (control cycles on
which it applied) and the last reason is kept; `status()` returns them for /diagnostics.

Times are float seconds in ONE time base: the `now` passed to the filters, the command stamps and the
optional `clock` must all be the node clock (ROS time, or sim time under use_sim_time).
The gate is thread-safe: e-stop and arm services may be called from other executor threads.
"""
from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from lapa_ros.core.joint_limits import limit_band, velocity_ratio


class GateState(str, Enum):
    DISARMED = "DISARMED"
    ARMED = "ARMED"
    ESTOP = "ESTOP"


# Reasons (keys of status()["counters"]). Holds: the output is zero motion.
DISARMED = "disarmed"
ESTOP = "estop"
NO_COMMAND = "no_command"
COMMAND_BEFORE_ARM = "command_before_arm"
STALE_COMMAND = "stale_command"
COMMAND_FROM_FUTURE = "command_from_future"
NON_FINITE_COMMAND = "non_finite_command"
NO_EE_POSITION = "no_ee_position"
NON_FINITE_JOINT_STATE = "non_finite_joint_state"
CLOCK_JUMPED_BACK = "clock_jumped_back"
STALE_STATE = "stale_state"
# Clamps: the output still moves, less than asked.
LINEAR_SPEED_CLAMPED = "linear_speed_clamped"
ANGULAR_SPEED_CLAMPED = "angular_speed_clamped"
WORKSPACE_CLAMPED = "workspace_clamped"
OUTSIDE_WORKSPACE = "outside_workspace"
JOINT_POSITION_CLAMPED = "joint_position_clamped"
JOINT_VELOCITY_CLAMPED = "joint_velocity_clamped"
GRIPPER_CLAMPED = "gripper_clamped"
NON_FINITE_GRIPPER = "non_finite_gripper"

# What each reason means, for the operator's log.
REASON_TEXT = {
    DISARMED: "command while DISARMED: not executed (call arm_controller/arm)",
    ESTOP: "command while the e-stop is latched: not executed (release_estop, then arm)",
    NO_COMMAND: "no command yet: holding",
    COMMAND_BEFORE_ARM: "command stamped before the arm time: refused (only commands sent after arming move the arm)",
    STALE_COMMAND: "watchdog: no fresh command within command_timeout: holding",
    COMMAND_FROM_FUTURE: "command stamped in the future (beyond future_tolerance; the sender's clock runs ahead?): "
                         "refused",
    NON_FINITE_COMMAND: "command with NaN/Inf: refused, holding",
    NO_EE_POSITION: "end-effector position unknown (no ee_pose / joint_states yet): holding",
    NON_FINITE_JOINT_STATE: "joint state with NaN/Inf: nothing sent",
    STALE_STATE: "no robot state (ee_pose / joint_states) within state_timeout (its publisher stopped?): holding",
    CLOCK_JUMPED_BACK: "the clock jumped back (a simulator restarted?): DISARMED, the last command dropped "
                       "(call arm_controller/arm to move again)",
    LINEAR_SPEED_CLAMPED: "linear speed above max_linear_speed: clamped",
    ANGULAR_SPEED_CLAMPED: "angular speed above max_angular_speed: clamped",
    WORKSPACE_CLAMPED: "motion towards a workspace box face: clamped at the face",
    OUTSIDE_WORKSPACE: "end effector outside the workspace box: only motion back in is allowed",
    JOINT_POSITION_CLAMPED: "joint target beyond a joint limit: clamped",
    JOINT_VELOCITY_CLAMPED: "joint step above the joint velocity limits: scaled down",
    GRIPPER_CLAMPED: "gripper command outside [0, 1]: clamped",
    NON_FINITE_GRIPPER: "gripper command NaN/Inf: ignored",
}
# Holds the timer applies while no command flows: reported when they start, not on every cycle.
IDLE_HOLDS = (DISARMED, ESTOP, NO_COMMAND, STALE_COMMAND, COMMAND_BEFORE_ARM)

# diagnostic_msgs/DiagnosticStatus levels
DIAG_OK, DIAG_WARN, DIAG_ERROR = 0, 1, 2


def _norm(v: np.ndarray) -> float:
    """Euclidean norm without overflow for huge finite components (1e308 stays finite)."""
    m = float(np.max(np.abs(v))) if v.size else 0.0
    return 0.0 if m == 0.0 else m * float(np.linalg.norm(v / m))


def _vec3(value, name: str) -> Tuple[float, float, float]:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape != (3,):
        raise ValueError(f"{name} needs 3 values (x, y, z), got {list(arr)}")
    return float(arr[0]), float(arr[1]), float(arr[2])


def _optional_vector(value, name: str) -> Optional[Tuple[float, ...]]:
    if value is None:
        return None
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size == 0:
        return None
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} has NaN: {arr.tolist()}")
    return tuple(float(v) for v in arr)


@dataclass(frozen=True)
class SafetyLimits:
    """Limits the gate enforces. Units: m, rad, s; positions in the arm's base frame.

    The defaults suit a Panda on a table (base frame = panda_link0): a slow 0.1 m/s, a box in front
    of the robot above the table. Joint limits are optional (needed only for joint-space commands):
    take them from the URDF with `with_joint_limits(chain.lower, chain.upper, chain.velocity_limits)`.
    """

    max_linear_speed: float = 0.10        # [m/s] norm of the end-effector linear velocity
    max_angular_speed: float = 0.50       # [rad/s] norm of the end-effector angular velocity
    workspace_min: Tuple[float, float, float] = (0.20, -0.45, 0.02)  # [m] base frame
    workspace_max: Tuple[float, float, float] = (0.75, 0.45, 0.70)   # [m] base frame
    command_timeout: float = 0.25         # [s] older commands hold the arm
    control_period: float = 0.01          # [s] look-ahead of the workspace clamp (one controller cycle)
    future_tolerance: float = 0.05        # [s] commands stamped further ahead of `now` hold (clock mismatch)
    state_timeout: float = 0.5            # [s] a robot state received longer ago holds the arm, refuses arm()
                                          # (checked once robot_state() was called: the node does on a wall clock)
    joint_position_lower: Optional[Tuple[float, ...]] = None  # [rad | m] per joint, chain order
    joint_position_upper: Optional[Tuple[float, ...]] = None
    joint_velocity_limits: Optional[Tuple[float, ...]] = None  # [rad/s | m/s]
    joint_limit_margin: float = 0.05      # [rad | m] kept clear of each position limit
    joint_velocity_scale: float = 1.0     # fraction of the URDF velocity limits allowed

    def __post_init__(self):
        object.__setattr__(self, "workspace_min", _vec3(self.workspace_min, "workspace_min"))
        object.__setattr__(self, "workspace_max", _vec3(self.workspace_max, "workspace_max"))
        for name in ("joint_position_lower", "joint_position_upper", "joint_velocity_limits"):
            object.__setattr__(self, name, _optional_vector(getattr(self, name), name))
        for name in ("max_linear_speed", "max_angular_speed", "command_timeout", "control_period",
                     "future_tolerance", "state_timeout", "joint_limit_margin", "joint_velocity_scale"):
            value = getattr(self, name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {value!r}") from None
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
            object.__setattr__(self, name, number)
        if self.control_period <= 0:
            raise ValueError(f"control_period must be > 0, got {self.control_period}")
        if self.state_timeout <= 0:
            raise ValueError(f"state_timeout must be > 0, got {self.state_timeout}")
        if not 0 < self.joint_velocity_scale <= 1:
            raise ValueError(f"joint_velocity_scale must be in (0, 1], got {self.joint_velocity_scale}")
        lo, hi = np.array(self.workspace_min), np.array(self.workspace_max)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(lo >= hi):
            raise ValueError(f"workspace_min {self.workspace_min} must be finite and below workspace_max "
                             f"{self.workspace_max} on every axis")
        sizes = {n: len(getattr(self, n)) for n in ("joint_position_lower", "joint_position_upper",
                                                    "joint_velocity_limits") if getattr(self, n) is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"joint limit vectors differ in length: {sizes}")
        if self.joint_position_lower is not None and self.joint_position_upper is not None and \
                np.any(np.array(self.joint_position_lower) > np.array(self.joint_position_upper)):
            raise ValueError("joint_position_lower is above joint_position_upper for some joint")
        if self.joint_velocity_limits is not None and np.any(np.array(self.joint_velocity_limits) <= 0):
            raise ValueError(f"joint_velocity_limits must be > 0, got {self.joint_velocity_limits}")

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "SafetyLimits":
        """Limits from a mapping (node parameters, a YAML section); missing keys keep the defaults.

        Unknown keys raise ValueError listing the known ones. An empty list for a joint limit means
        "not set" (ROS parameters cannot be None).
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown safety limit(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**dict(values))

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    def with_joint_limits(self, lower: Sequence[float], upper: Sequence[float],
                          velocity: Optional[Sequence[float]] = None) -> "SafetyLimits":
        """A copy with joint limits (e.g. KinematicChain.lower / .upper / .velocity_limits)."""
        return replace(self, joint_position_lower=tuple(lower), joint_position_upper=tuple(upper),
                       joint_velocity_limits=None if velocity is None else tuple(velocity))


@dataclass(frozen=True)
class SafeCommand:
    """What to send to the arm this cycle: end-effector velocity in the base frame.

    hold: True when the command was refused (state, watchdog, NaN, unknown position): linear and
    angular are then zero. reasons: every hold or clamp reason that applied (empty when the command
    passed unchanged); with hold False they say what was limited (or that the arm is outside the box).
    """

    linear: np.ndarray   # [m/s], shape (3,)
    angular: np.ndarray  # [rad/s], shape (3,)
    hold: bool
    reasons: Tuple[str, ...] = ()


@dataclass(frozen=True)
class SafeJointCommand:
    """Joint targets to send this cycle, in the order of the limits (chain order).

    hold: True when the target was refused; positions are then the current positions, or None when
    those are unknown too (NaN joint state): send nothing and let the hardware's own hold act.
    """

    positions: Optional[np.ndarray]
    hold: bool
    reasons: Tuple[str, ...] = ()


class SafetyGate:
    """Filters every motion command. See the module docstring for the rules.

    clock: optional callable returning the current time [s] in the command stamps' time base; used
    by arm() and status() when they are not given `now`.
    """

    def __init__(self, limits: Optional[SafetyLimits] = None, clock: Optional[Callable[[], float]] = None):
        self.limits = limits if limits is not None else SafetyLimits()
        self._clock = clock
        self._lock = threading.RLock()
        self._state = GateState.DISARMED
        self._estop_reason = ""
        self._armed_at = -math.inf
        self._counters: Counter = Counter()
        self._last_reason = ""
        self._last_hold = True
        self._last_command_stamp: Optional[float] = None
        self._latest_stamp_seen = -math.inf
        self._state_at: Optional[float] = None   # when the latest robot state arrived (robot_state)
        self._estop_count = 0
        self._cycles = 0

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> GateState:
        return self._state

    @property
    def armed(self) -> bool:
        return self._state is GateState.ARMED

    @property
    def estop_latched(self) -> bool:
        return self._state is GateState.ESTOP

    def _time(self, now: Optional[float]) -> Optional[float]:
        if now is not None:
            return float(now)
        return float(self._clock()) if self._clock is not None else None

    def arm(self, now: Optional[float] = None) -> Tuple[bool, str]:
        """Let commands through. Refused while the e-stop is latched. Returns (success, message).

        Commands stamped at or before the arm time (now, else the clock, else the newest stamp the
        gate has seen) stay refused: motion resumes only on a command sent after arming.
        """
        with self._lock:
            if self._state is GateState.ESTOP:
                return False, f"e-stop is latched ({self._estop_reason}): release it first, then arm"
            t = self._time(now)
            age = self._state_age(t)
            if age is not None and age > self.limits.state_timeout:
                return False, (f"the last robot state (ee_pose / joint_states) arrived {age:.2f} s ago, more than "
                               f"state_timeout {self.limits.state_timeout} s (its publisher stopped?): not armed")
            self._armed_at = t if t is not None else self._latest_stamp_seen
            was_armed = self._state is GateState.ARMED
            self._state = GateState.ARMED
            return True, "already armed; only commands sent from now on move the arm" if was_armed else "armed"

    def disarm(self) -> Tuple[bool, str]:
        """Stop passing commands (the arm holds). Does not clear a latched e-stop."""
        with self._lock:
            if self._state is GateState.ESTOP:
                return True, "e-stop is latched; it stays latched until released"
            self._state = GateState.DISARMED
            return True, "disarmed"

    def trigger_estop(self, reason: str = "e-stop") -> None:
        """Latch the e-stop: every command holds until release_estop() and a new arm()."""
        with self._lock:
            if self._state is not GateState.ESTOP:
                self._estop_count += 1
            self._state = GateState.ESTOP
            self._estop_reason = str(reason) or "e-stop"
            self._last_reason = ESTOP

    def release_estop(self) -> Tuple[bool, str]:
        """Clear a latched e-stop. The gate goes to DISARMED: arm() is still needed to move."""
        with self._lock:
            if self._state is not GateState.ESTOP:
                return True, "no e-stop was latched"
            self._state = GateState.DISARMED
            reason, self._estop_reason = self._estop_reason, ""
            return True, f"e-stop released (was: {reason}); arm to move again"

    def robot_state(self, now: float) -> None:
        """A robot state (ee_pose, joint_states) arrived at ``now``. Until the first one, no state age is
        checked (the filters hold on an unknown end-effector position instead)."""
        with self._lock:
            self._state_at = float(now)

    def _state_age(self, now: Optional[float]) -> Optional[float]:
        if now is None or self._state_at is None:
            return None
        return now - self._state_at

    def state_stale(self, now: float) -> bool:
        """Whether the latest robot state is older than state_timeout (never before the first one)."""
        with self._lock:
            age = self._state_age(float(now))
            return age is not None and age > self.limits.state_timeout

    def clock_jumped_back(self) -> None:
        """The time base went back (a simulator restarted under use_sim_time): DISARM and forget the stamps
        seen. The arm time and the last command lie in the new time's future, so as they were the gate would
        refuse every fresh command as "before the arm time" until the clock caught up with the old time; and
        the world behind the clock has restarted, so motion waits for a new arm(), as after an e-stop. A
        latched e-stop stays latched."""
        with self._lock:
            if self._state is GateState.ARMED:
                self._state = GateState.DISARMED
            self._armed_at = -math.inf
            self._last_command_stamp = None
            self._latest_stamp_seen = -math.inf
            self._state_at = None
            self._counters[CLOCK_JUMPED_BACK] += 1
            self._last_reason = CLOCK_JUMPED_BACK

    # ------------------------------------------------------------------ bookkeeping
    def _record(self, reasons: Sequence[str], hold: bool) -> None:
        self._cycles += 1
        for r in reasons:
            self._counters[r] += 1
        if reasons:
            self._last_reason = reasons[-1]
        self._last_hold = hold

    def _state_hold_reason(self) -> Optional[str]:
        if self._state is GateState.ESTOP:
            return ESTOP
        if self._state is GateState.DISARMED:
            return DISARMED
        return None

    def _note_stamp(self, command_stamp: Optional[float]) -> None:
        """Track stamps in every state: arm() without a time refuses what was seen before it."""
        if command_stamp is not None and math.isfinite(float(command_stamp)):
            self._last_command_stamp = float(command_stamp)
            self._latest_stamp_seen = max(self._latest_stamp_seen, self._last_command_stamp)

    def _command_age_reason(self, now: float, command_stamp: Optional[float]) -> Optional[str]:
        if command_stamp is None:
            return NO_COMMAND
        stamp = float(command_stamp)
        if not math.isfinite(stamp):
            return NON_FINITE_COMMAND
        if stamp <= self._armed_at:
            return COMMAND_BEFORE_ARM
        if stamp > now + self.limits.future_tolerance:
            return COMMAND_FROM_FUTURE
        if now - stamp > self.limits.command_timeout:
            return STALE_COMMAND
        return None

    # ------------------------------------------------------------------ filters
    def filter_twist(self, now: float, linear, angular, ee_position, command_stamp: Optional[float]) -> SafeCommand:
        """The end-effector velocity to send this control cycle.

        now: current time [s]. linear [m/s], angular [rad/s]: the commanded twist in the base frame.
        ee_position: the measured end-effector position [m] in the base frame (None if unknown).
        command_stamp: the command's time [s]: its header stamp if the sender stamps at publish time,
        else the time it was received; None if no command has arrived yet.
        Checks in order: state, command stamp (none / before arm / from the future / stale), NaN,
        robot state fresh (see robot_state), end-effector position known; any failure holds. Then speed clamps, then the workspace clamp.
        """
        zero = np.zeros(3)
        with self._lock:
            now = float(now)
            self._note_stamp(command_stamp)
            reason = self._state_hold_reason() or self._command_age_reason(now, command_stamp)
            if reason is None:
                lin = np.asarray(linear, dtype=float).reshape(-1)
                ang = np.asarray(angular, dtype=float).reshape(-1)
                if lin.shape != (3,) or ang.shape != (3,):
                    raise ValueError(f"linear and angular need 3 values each, got {lin.shape} and {ang.shape}")
                if not (np.all(np.isfinite(lin)) and np.all(np.isfinite(ang))):
                    reason = NON_FINITE_COMMAND
            if reason is None:
                age = self._state_age(now)
                if age is not None and age > self.limits.state_timeout:
                    reason = STALE_STATE
            if reason is None:
                ee = None if ee_position is None else np.asarray(ee_position, dtype=float).reshape(-1)
                if ee is None or ee.shape != (3,) or not np.all(np.isfinite(ee)):
                    reason = NO_EE_POSITION
            if reason is not None:
                self._record((reason,), hold=True)
                return SafeCommand(zero, zero.copy(), True, (reason,))
            reasons = []
            lin, ang = lin.copy(), ang.copy()
            speed = _norm(lin)
            if speed > self.limits.max_linear_speed:
                lin *= self.limits.max_linear_speed / speed
                reasons.append(LINEAR_SPEED_CLAMPED)
            rate = _norm(ang)
            if rate > self.limits.max_angular_speed:
                ang *= self.limits.max_angular_speed / rate
                reasons.append(ANGULAR_SPEED_CLAMPED)
            lin, workspace_reasons = self._clamp_to_workspace(ee, lin)
            reasons.extend(workspace_reasons)
            self._record(reasons, hold=False)
            return SafeCommand(lin, ang, False, tuple(reasons))

    def _clamp_to_workspace(self, position: np.ndarray, velocity: np.ndarray) -> Tuple[np.ndarray, Tuple[str, ...]]:
        """Per axis: inside, cap the component so position + v * period stays in the box; outside,
        drop the component that points further out (moving back in is allowed).

        Reasons: OUTSIDE_WORKSPACE whenever the position is outside, WORKSPACE_CLAMPED when v changed.
        """
        lo, hi = np.array(self.limits.workspace_min), np.array(self.limits.workspace_max)
        dt = self.limits.control_period
        # Largest velocity per axis that keeps the next position inside (0 when at or past a wall).
        v_max = np.maximum((hi - position) / dt, 0.0)
        v_min = np.minimum((lo - position) / dt, 0.0)
        v = np.clip(velocity, v_min, v_max)
        reasons = (OUTSIDE_WORKSPACE,) if np.any((position < lo) | (position > hi)) else ()
        if not np.array_equal(v, velocity):
            reasons += (WORKSPACE_CLAMPED,)
        return v, reasons

    def filter_gripper(self, value: float) -> Optional[float]:
        """Gripper command (0 open .. 1 closed) to send, or None to send nothing (keep the last one).

        None when not armed (an e-stop stops the gripper too) or the value is NaN/Inf; values
        outside [0, 1] are clamped.
        """
        return self.gripper_command(value)[0]

    def gripper_command(self, value: float) -> Tuple[Optional[float], Optional[str]]:
        """``filter_gripper`` with the reason it refused or clamped (None when passed unchanged)."""
        with self._lock:
            reason = self._state_hold_reason()
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = math.nan
            if reason is None and not math.isfinite(v):
                reason = NON_FINITE_GRIPPER
            if reason is not None:
                self._counters[reason] += 1
                self._last_reason = reason
                return None, reason
            clamped = min(max(v, 0.0), 1.0)
            if clamped != v:
                self._counters[GRIPPER_CLAMPED] += 1
                self._last_reason = GRIPPER_CLAMPED
                return clamped, GRIPPER_CLAMPED
            return clamped, None

    def filter_joint_positions(self, q_target, q_current, dt: float, now: Optional[float] = None,
                               command_stamp: Optional[float] = None) -> SafeJointCommand:
        """Joint position targets for the next `dt` seconds, inside the joint limits.

        q_target, q_current: [rad | m] in the order of the limits. Targets are clipped into
        [lower + margin, upper - margin] (a joint already beyond that may move back, not further),
        then the whole step q_target - q_current is scaled down uniformly (the joint-space direction
        is kept) so no joint exceeds joint_velocity_scale * its velocity limit. With `now` and
        `command_stamp` the watchdog applies as for twists. Needs joint limits (see SafetyLimits).
        """
        lim = self.limits
        if lim.joint_position_lower is None or lim.joint_position_upper is None or lim.joint_velocity_limits is None:
            raise ValueError("joint-space commands need joint_position_lower, joint_position_upper and "
                             "joint_velocity_limits (SafetyLimits.with_joint_limits from the URDF chain)")
        n = len(lim.joint_position_lower)
        target = np.asarray(q_target, dtype=float).reshape(-1)
        current = np.asarray(q_current, dtype=float).reshape(-1)
        if target.shape != (n,) or current.shape != (n,):
            raise ValueError(f"q_target and q_current need {n} joints each, got {target.size} and {current.size}")
        if not (dt > 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a positive number of seconds, got {dt}")
        with self._lock:
            self._note_stamp(command_stamp)
            reason = self._state_hold_reason()
            if reason is None and now is not None:
                reason = self._command_age_reason(float(now), command_stamp)
            if reason is None and not np.all(np.isfinite(target)):
                reason = NON_FINITE_COMMAND
            if not np.all(np.isfinite(current)):
                reason = NON_FINITE_JOINT_STATE
                self._record((reason,), hold=True)
                return SafeJointCommand(None, True, (reason,))
            if reason is not None:
                self._record((reason,), hold=True)
                return SafeJointCommand(current.copy(), True, (reason,))
            reasons = []
            lo, hi = limit_band(lim.joint_position_lower, lim.joint_position_upper, lim.joint_limit_margin, current)
            safe = np.clip(target, lo, hi)
            if not np.array_equal(safe, target):
                reasons.append(JOINT_POSITION_CLAMPED)
            step = safe - current
            ratio = velocity_ratio(step, np.array(lim.joint_velocity_limits) * lim.joint_velocity_scale, dt)
            if ratio > 1.0:
                safe = current + step / ratio
                reasons.append(JOINT_VELOCITY_CLAMPED)
            self._record(reasons, hold=False)
            return SafeJointCommand(safe, False, tuple(reasons))

    # ------------------------------------------------------------------ diagnostics
    def status(self, now: Optional[float] = None) -> Dict[str, object]:
        """Snapshot for /diagnostics.

        Keys: state ('DISARMED' | 'ARMED' | 'ESTOP'), level (0 OK, 1 WARN, 2 ERROR as in
        diagnostic_msgs), message (one line), estop_latched, estop_reason, estop_count, holding (the
        last motion filter held), last_reason ('' if none yet), last_command_age [s] (None if no
        command or no time), cycles (motion filter calls), counters {reason: count}.
        """
        with self._lock:
            t = self._time(now)
            age = None
            if t is not None and self._last_command_stamp is not None:
                age = t - self._last_command_stamp
            if self._state is GateState.ESTOP:
                level, message = DIAG_ERROR, f"e-stop latched: {self._estop_reason}"
            elif self._state is GateState.DISARMED:
                level, message = DIAG_OK, "disarmed: the arm holds"
            elif self._last_hold and self._cycles:
                level, message = DIAG_WARN, f"armed, holding: {self._last_reason}"
            else:
                level, message = DIAG_OK, "armed"
            return {
                "state": self._state.value,
                "level": level,
                "message": message,
                "estop_latched": self._state is GateState.ESTOP,
                "estop_reason": self._estop_reason,
                "estop_count": self._estop_count,
                "holding": self._last_hold,
                "last_reason": self._last_reason,
                "last_command_age": age,
                "cycles": self._cycles,
                "counters": dict(self._counters),
            }

    def reset_counters(self) -> None:
        """Zero the counters and last reason (e.g. at the start of an episode); state is untouched."""
        with self._lock:
            self._counters.clear()
            self._last_reason = ""
            self._cycles = 0
