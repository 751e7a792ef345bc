"""arm_controller: every motion command to the arm passes here, through the safety gate.

Inputs (from the policy or a teleop device):
  arm_controller/twist_cmd     geometry_msgs/TwistStamped, end-effector velocity in `base_frame`,
                               header stamp = publish time (the watchdog measures its age)
  arm_controller/gripper_cmd   std_msgs/Float64, 0 open .. 1 closed
  arm_controller/estop         std_msgs/Bool: true latches the e-stop (release it with the service)
  ee_pose                      geometry_msgs/PoseStamped (servo/sim backends: for the workspace box)
  joint_states                 sensor_msgs/JointState (IK backends: current joint positions)
Services (std_srvs/Trigger): arm_controller/arm, arm_controller/disarm, arm_controller/release_estop
Outputs, by backend:
  servo             servo_node/delta_twist_cmds (TwistStamped), what MoveIt Servo takes
  sim               the same topic, for the simulated arm (lapa_ros.nodes.sim_robot)
  joint_trajectory  joint_trajectory_controller/joint_trajectory (trajectory_msgs/JointTrajectory),
                    one point reached one control period after arrival (header stamp zero: "start
                    on arrival", so late delivery or clock offset never voids it), from damped
                    least-squares IK on the URDF
  forward_position  forward_position_controller/commands (std_msgs/Float64MultiArray), the same IK
  and always        gripper/command (std_msgs/Float64)
  /diagnostics      diagnostic_msgs/DiagnosticArray: gate state, every hold/clamp counted by reason
                    and motion_sent (commands passed on that move the arm: twists or IK steps)

Timing: between commands the latest accepted command keeps being executed at `control_rate` until
the watchdog (`command_timeout`), as MoveIt Servo and ros2_control controllers expect a steady
stream: on every timer tick the gate re-filters it with the arm's current position (so the
workspace box look-ahead of one control period always holds) and
  servo             re-sends the filtered twist (stamped at publish time);
  joint_trajectory, forward_position
                    send one IK step of one control period, integrated from the last commanded joint
                    target (not the measured joints, whose feedback lags), so the arm moves at the
                    commanded speed whatever the command rate; when the measured joints fall more than
                    `tracking_tolerance` behind (contact, a blocked arm), the target restarts from them;
  sim               forwards each command once, on arrival, with its sender's stamp (a lockstep
                    simulator matches commands to its steps); its controller runs at the command rate.
Holds (disarmed, e-stop, watchdog, refusals) are sent at once and on every tick. The node starts
DISARMED: nothing moves until arm_controller/arm is called.

Every refusal and clamp is logged (first occurrence, then at most once per `log_throttle` seconds
with its count) besides its /diagnostics counter; holds the timer applies while no command flows (the
watchdog) are logged when they start and end. On exit (Ctrl-C, SIGTERM, an error) the node commands
a hold before it goes.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.duration import Duration as RclpyDuration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from builtin_interfaces.msg import Duration

from lapa_models.text import printable

from lapa_ros.core.clock import BackwardJumpDetector, ClockOffsetMonitor
from lapa_ros.core.events import EventLog, suffix
from lapa_ros.core.kinematics import KinematicChain, UrdfError
from lapa_ros.core.safety import (CLOCK_JUMPED_BACK, DISARMED, ESTOP, IDLE_HOLDS, NO_COMMAND, REASON_TEXT, SafetyGate,
                                  SafetyLimits)
from lapa_ros.interfaces.messages import sec_to_stamp, stamp_to_sec, twist_msg, twist_to_arrays
from lapa_ros.bringup.paths import urdf_file
from lapa_ros.interfaces.ros_common import (COMMAND_QOS, Param, StartupError, declare_params, diagnostics_message, log_at,
                          run_node)

BACKENDS = ("servo", "sim", "joint_trajectory", "forward_position")
JOINT_BACKENDS = ("joint_trajectory", "forward_position")

PARAMS = (
    Param("backend", "servo", "Where commands go.", read_only=True, choices=BACKENDS),
    Param("control_rate", 100.0, "Rate [Hz] of the hold/watchdog timer (and of IK targets' horizon).",
          read_only=True, range=(1.0, 1000.0)),
    Param("base_frame", "panda_link0", "Frame of twist commands and of the workspace box.", read_only=True),
    Param("max_linear_speed", 0.10, "Largest end-effector speed [m/s] (norm).", read_only=True, range=(0.0, 5.0)),
    Param("max_angular_speed", 0.50, "Largest end-effector angular speed [rad/s] (norm).", read_only=True,
          range=(0.0, 10.0)),
    Param("workspace_min", [0.20, -0.45, 0.02], "Workspace box lower corner [m] in base_frame.", read_only=True),
    Param("workspace_max", [0.75, 0.45, 0.70], "Workspace box upper corner [m] in base_frame.", read_only=True),
    Param("command_timeout", 0.25, "Commands older than this [s] hold the arm (watchdog).", read_only=True,
          range=(0.001, 10.0)),
    Param("state_timeout", 0.5, "A robot state (ee_pose / joint_states) older than this [s] holds the arm and "
                                "refuses arming (its publisher stopped). Wall clock only: not under use_sim_time.",
          read_only=True, range=(0.001, 10.0)),
    Param("future_tolerance", 0.05, "Commands stamped further ahead of this computer's clock [s] are refused "
                                    "(the sender's clock runs ahead).", read_only=True, range=(0.0, 10.0)),
    Param("log_throttle", 5.0, "After its first line, each kind of refusal or clamp is logged at most once per "
                               "this many seconds (with its count).", read_only=True, range=(0.0, 3600.0)),
    Param("joint_limit_margin", 0.05, "Kept clear of each URDF joint limit [rad].", read_only=True, range=(0.0, 1.0)),
    Param("tracking_tolerance", 0.05, "Joint backends: when the measured joints are further than this [rad] from the "
                                      "last target, the next target starts from the measured joints.", read_only=True,
          range=(0.001, 1.0)),
    Param("joint_velocity_scale", 0.5, "Fraction of the URDF joint velocity limits allowed.", read_only=True,
          range=(0.01, 1.0)),
    Param("robot_description_file", "panda.urdf", "URDF for IK and joint limits: a file in urdf/ or a path.",
          read_only=True),
    Param("use_robot_description_topic", False, "Take the URDF from /robot_description instead of the file.",
          read_only=True),
    Param("base_link", "panda_link0", "IK chain base link.", read_only=True),
    Param("tip_link", "panda_hand_tcp", "IK chain tip link (the tool centre point).", read_only=True),
    Param("diagnostics_rate", 2.0, "Rate [Hz] of /diagnostics.", read_only=True, range=(0.1, 50.0)),
)


class ArmControllerNode(Node):
    def __init__(self, **kwargs):
        super().__init__("arm_controller", **kwargs)
        self.p = declare_params(self, PARAMS)
        self.period = 1.0 / self.p.control_rate
        self._sim_clock = bool(self.get_parameter("use_sim_time").value)
        self._state_time = -math.inf   # simulated clock: the newest robot state's stamp (see _now)
        self._clock_jumps = BackwardJumpDetector()   # simulated clock: a restarted simulator's /clock
        try:
            limits = SafetyLimits(max_linear_speed=self.p.max_linear_speed, max_angular_speed=self.p.max_angular_speed,
                                  workspace_min=tuple(self.p.workspace_min), workspace_max=tuple(self.p.workspace_max),
                                  command_timeout=self.p.command_timeout, control_period=self.period,
                                  future_tolerance=self.p.future_tolerance, state_timeout=self.p.state_timeout,
                                  joint_limit_margin=self.p.joint_limit_margin,
                                  joint_velocity_scale=self.p.joint_velocity_scale)
        except ValueError as e:
            raise StartupError(f"arm_controller: bad safety limits: {e}") from e
        self.gate = SafetyGate(limits, clock=self._now)
        self.events = EventLog(self.p.log_throttle)
        self._idle_hold: Optional[str] = None   # the hold the timer is applying, if any
        self.motion_sent = 0   # commands passed on to the arm that move it (twists or IK steps), in /diagnostics
        self.command_clock = ClockOffsetMonitor(50, self.p.future_tolerance, self.p.command_timeout)
        self.chain: Optional[KinematicChain] = None
        self._lock = threading.Lock()
        self._twist = None          # (linear, angular, stamp)
        self._ee_position: Optional[np.ndarray] = None
        self._joint_names = None
        self._joint_positions = None
        self._q_target: Optional[np.ndarray] = None   # joint backends: the last joint target sent while moving
        self._last_ik = 0.0                            # when it was sent (node clock: sim time under /clock)

        if self.p.backend in JOINT_BACKENDS:
            if self.p.use_robot_description_topic:
                latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
                self.create_subscription(String, "/robot_description", self._on_robot_description, latched)
            else:
                path = self.p.robot_description_file
                try:
                    path = str(urdf_file(path)) if "/" not in path else path
                    self._set_chain(open(path).read(), source=path)
                except (FileNotFoundError, OSError, UrdfError, ValueError) as e:
                    raise StartupError(f"arm_controller: robot description: {e}") from e
            self.create_subscription(JointState, "joint_states", self._on_joint_states, COMMAND_QOS)
        else:
            self.create_subscription(PoseStamped, "ee_pose", self._on_ee_pose, COMMAND_QOS)

        self.pub_twist = self.create_publisher(TwistStamped, "servo_node/delta_twist_cmds", COMMAND_QOS) \
            if self.p.backend in ("servo", "sim") else None
        self.pub_trajectory = self.create_publisher(JointTrajectory, "joint_trajectory_controller/joint_trajectory",
                                                    COMMAND_QOS) if self.p.backend == "joint_trajectory" else None
        self.pub_positions = self.create_publisher(Float64MultiArray, "forward_position_controller/commands",
                                                   COMMAND_QOS) if self.p.backend == "forward_position" else None
        self.pub_gripper = self.create_publisher(Float64, "gripper/command", COMMAND_QOS)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)

        # The gripper first: the policy sends each command's gripper value before its twist, and when both wait
        # at once the executor takes them in the order the subscriptions were made; forwarded in that order,
        # a lockstep simulator steps with the gripper of the same command as the twist.
        self.create_subscription(Float64, "arm_controller/gripper_cmd", self._on_gripper, COMMAND_QOS)
        self.create_subscription(TwistStamped, "arm_controller/twist_cmd", self._on_twist, COMMAND_QOS)
        self.create_subscription(Bool, "arm_controller/estop", self._on_estop, COMMAND_QOS)
        self.create_service(Trigger, "arm_controller/arm", self._srv(lambda: self.gate.arm(self._now())))
        self.create_service(Trigger, "arm_controller/disarm", self._srv(self.gate.disarm))
        self.create_service(Trigger, "arm_controller/release_estop", self._srv(self.gate.release_estop))
        self.create_timer(self.period, self._on_timer)
        self.create_timer(1.0 / self.p.diagnostics_rate, self._publish_diagnostics)
        self.get_logger().info(f"backend '{self.p.backend}', {self.p.control_rate:.0f} Hz, DISARMED "
                               f"(call arm_controller/arm to move); max {self.p.max_linear_speed} m/s")

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        """The clock; on a simulated clock at least the newest robot state's stamp. A simulator stamps its
        states with the time it publishes on /clock, and that message (another topic) can reach this node
        after a command answering the frame of the same instant: read as the clock alone, the command was
        "from the future" (after a reset's clock jump) and refused."""
        now = self.get_clock().now().nanoseconds * 1e-9
        if not self._sim_clock:
            return now
        jump = self._clock_jumps.check(now)
        if jump is not None:
            self._clock_jumped_back(jump)
        return max(now, self._state_time)

    def _clock_jumped_back(self, jump: float) -> None:
        """The simulated clock went back (the simulator restarted): what was kept in the old time (the newest
        state's stamp, the arm time, the last command) would hold the arm until the clock caught up with it, and
        the restarted world is not the one that was armed. Drop it all, hold and disarm: arm again to move."""
        self._state_time = -math.inf
        self.command_clock.reset()
        with self._lock:
            self._twist = None
        self._q_target = None
        self.gate.clock_jumped_back()
        self._send_hold(0.0)   # stamped zero, as the gate's own holds on a simulated clock (see _step)
        self._event(CLOCK_JUMPED_BACK, f"{REASON_TEXT[CLOCK_JUMPED_BACK]} ({jump:.3f} s back)", "error")

    def _saw_state(self, stamp) -> None:
        """A robot state arrived. On the wall clock its arrival times the state's age (state_timeout). Not on a
        simulated clock: a lockstep simulator publishes nothing while it waits for a command (the clock waits
        too, but a reset moves it on by RESET_CLOCK_GAP before the next state comes), and a stopped simulator
        stops its clock with its state."""
        if not self._sim_clock:
            self.gate.robot_state(self._now())
            return
        t = stamp_to_sec(stamp)
        if math.isfinite(t):   # on a simulated clock: the newest state's stamp (see _now)
            self._state_time = max(self._state_time, t)

    def _set_chain(self, urdf_text: str, source: str) -> None:
        self.chain = KinematicChain(urdf_text, self.p.base_link, self.p.tip_link)
        self.gate.limits = self.gate.limits.with_joint_limits(self.chain.lower, self.chain.upper,
                                                              self.chain.velocity_limits)
        self.get_logger().info(f"IK chain {self.p.base_link} -> {self.p.tip_link} ({self.chain.dof} joints) "
                               f"from {source}")

    def _srv(self, action):
        def handle(request, response):
            response.success, response.message = action()
            log_at(self.get_logger(), "info" if response.success else "warning", response.message)
            if not self.gate.armed:
                self._send_hold()
            return response
        return handle

    # ------------------------------------------------------------------ inputs
    def _on_robot_description(self, msg: String) -> None:
        try:
            self._set_chain(msg.data, source="/robot_description")
        except (UrdfError, ValueError) as e:
            self.get_logger().error(f"unusable /robot_description: {e}")

    def _on_ee_pose(self, msg: PoseStamped) -> None:
        self._saw_state(msg.header.stamp)
        p = msg.pose.position
        self._ee_position = np.array([p.x, p.y, p.z])

    def _on_joint_states(self, msg: JointState) -> None:
        self._saw_state(msg.header.stamp)
        self._joint_names, self._joint_positions = list(msg.name), list(msg.position)

    def _on_twist(self, msg: TwistStamped) -> None:
        linear, angular = twist_to_arrays(msg)
        stamp = stamp_to_sec(msg.header.stamp)
        if msg.header.frame_id not in ("", self.p.base_frame):
            self._event("wrong_frame", f"twist in frame '{printable(msg.header.frame_id, 80)}' refused (expects "
                                       f"'{self.p.base_frame}'): holding")
            # The refused command replaces the last one with a stop of its stamp: the arm holds now, not only
            # when the watchdog finds the last good command too old (and the watchdog still ends the stop).
            with self._lock:
                self._twist = (np.zeros(3), np.zeros(3), stamp)
            self._step(forward=True)
            return
        self._watch_clock(stamp)
        with self._lock:
            self._twist = (linear, angular, stamp)
        self._step(forward=True)

    def _watch_clock(self, stamp: float) -> None:
        """Report a commanding computer whose clock runs ahead of (or far behind) this one's."""
        now = self._now()
        if now <= 0.0:   # sim time before the first /clock message
            return
        self.command_clock.add(stamp, now)
        changed = self.events.edge("clock.commands", self.command_clock.state() in ("ahead", "behind"))
        if changed is not None:
            log_at(self.get_logger(), "error" if changed else "info", self.command_clock.describe("command sender"))

    def _on_gripper(self, msg: Float64) -> None:
        value, reason = self.gate.gripper_command(msg.data)
        if reason is not None:
            self._event(f"gripper.{reason}", f"gripper: {REASON_TEXT[reason]}")
        if value is not None:
            self.pub_gripper.publish(Float64(data=value))

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            self.gate.trigger_estop("arm_controller/estop topic")
            self._send_hold()
            self.get_logger().error("E-STOP latched: release with arm_controller/release_estop, then arm")

    def _on_timer(self) -> None:
        self._step(forward=False)

    def _event(self, key: str, message: str, level: str = "warning") -> None:
        """Log ``message`` the first time ``key`` happens, then at most once per log_throttle with a count."""
        due = self.events.report(key, time.monotonic())
        if due is not None:
            log_at(self.get_logger(), level, message + suffix(*due))

    def _report(self, reasons, forward: bool, hold: bool) -> None:
        """Log what the gate did: each refusal or clamp of an arriving command; the start and end of
        holds that the timer applies while no command flows (disarmed and e-stop have their own lines)."""
        if forward:
            for r in reasons:
                self._event(r, REASON_TEXT.get(r, r), "error" if hold and r not in (DISARMED, ESTOP) else "warning")
            return
        if hold and not (reasons and reasons[0] in IDLE_HOLDS):
            return   # a refused command: logged when it arrived
        idle = reasons[0] if hold else None
        if idle == self._idle_hold:
            return
        if idle is not None and idle not in (DISARMED, ESTOP, NO_COMMAND):
            self.get_logger().warning(REASON_TEXT[idle])
        elif idle is None and self._idle_hold not in (None, DISARMED, ESTOP, NO_COMMAND):
            self.get_logger().info("commands flowing again")
        self._idle_hold = idle

    # ------------------------------------------------------------------ control
    def _ee_now(self) -> Optional[np.ndarray]:
        if self.chain is None:
            return self._ee_position
        q = self._current_q()
        return None if q is None else self.chain.forward(q)[:3, 3]

    def _current_q(self) -> Optional[np.ndarray]:
        if self.chain is None or self._joint_names is None:
            return None
        try:
            return self.chain.positions_from(self._joint_names, self._joint_positions)
        except ValueError:
            return None

    def _joint_base(self) -> Optional[np.ndarray]:
        """Where the next IK step starts: the last target while the arm tracks it, else the measured joints."""
        q = self._current_q()
        if q is None or self._q_target is None or np.max(np.abs(self._q_target - q)) > self.p.tracking_tolerance:
            return q
        return self._q_target

    def _step(self, forward: bool) -> None:
        """Filter the latest command; forward: it just arrived, else the control timer ticked."""
        with self._lock:
            twist = self._twist
        now = self._now()
        linear, angular, stamp = twist if twist is not None else (np.zeros(3), np.zeros(3), None)
        base = self._joint_base() if self.chain is not None else None
        ee = self.chain.forward(base)[:3, 3] if base is not None else self._ee_now()
        cmd = self.gate.filter_twist(now, linear, angular, ee, stamp)
        self._report(cmd.reasons, forward, cmd.hold)
        if cmd.hold:
            self._q_target = None
            # On a simulated clock a hold of the gate's own (no command yet, a stale or refused one) carries the
            # stamp of the command it replaces: a lockstep simulator takes a twist stamped at or after its newest
            # frame as the answer to that frame, and the gate's timer must not answer in the policy's place.
            self._send_hold((stamp or 0.0) if self._sim_clock else None)
            return
        if self.pub_twist is not None:
            # servo: every tick, stamped now; sim: once per command, with its stamp (lockstep)
            if self.p.backend == "servo" or forward:
                when = self.get_clock().now().to_msg() if self.p.backend == "servo" else sec_to_stamp(stamp)
                self.pub_twist.publish(twist_msg(cmd.linear, when, self.p.base_frame, cmd.angular))
                self.motion_sent += _moves(cmd.linear, cmd.angular)
            return
        if not forward and base is not None:   # joint backends: one IK step per control period
            self._send_ik_step(base, cmd.linear, cmd.angular)

    def _send_ik_step(self, base: np.ndarray, linear: np.ndarray, angular: np.ndarray) -> None:
        """One IK step covering the time since the last one (a late timer tick does not slow the arm),
        at most two control periods."""
        now = self._now()   # the node's clock, so a simulation on /clock moves at the commanded speed
        dt = self.period if self._q_target is None else min(max(now - self._last_ik, 0.0), 2 * self.period)
        self._last_ik = now
        if dt <= 0.0:
            return
        target = self.chain.ik_step(base, linear, angular, dt, limit_margin=self.p.joint_limit_margin)
        safe = self.gate.filter_joint_positions(target, base, dt)
        self._report(safe.reasons, True, safe.hold)
        if safe.positions is not None:
            self._q_target = np.array(safe.positions)
            self._send_joints(safe.positions)
            self.motion_sent += _moves(linear, angular)

    def _send_hold(self, stamp: Optional[float] = None) -> None:
        """Stop the arm. stamp: the twist's stamp [s], default now."""
        if self.pub_twist is not None:
            when = self.get_clock().now().to_msg() if stamp is None else sec_to_stamp(stamp)
            self.pub_twist.publish(twist_msg(np.zeros(3), when, self.p.base_frame, np.zeros(3)))
            return
        q = self._current_q()
        # Joint backends hold at the measured joints; measured long ago (the state stopped), they may be far from
        # the arm: then nothing is sent, and the controller keeps the last target, which was near the arm.
        if q is not None and not self.gate.state_stale(self._now()):
            self._send_joints(q)

    def _send_joints(self, q: np.ndarray) -> None:
        if self.pub_trajectory is not None:
            # Header stamp zero: joint_trajectory_controller starts the trajectory when it arrives. A
            # stamp of our send time would make a trajectory that arrives later than one control period
            # (DDS on a loaded machine, clock offset between computers) lie entirely in the past, which
            # the controller drops. The one point is reached one control period after arrival.
            msg = JointTrajectory(joint_names=list(self.chain.joint_names))
            sec = self.period
            msg.points = [JointTrajectoryPoint(positions=[float(v) for v in q],
                                               time_from_start=Duration(sec=int(sec), nanosec=int((sec % 1) * 1e9)))]
            self.pub_trajectory.publish(msg)
        elif self.pub_positions is not None:
            self.pub_positions.publish(Float64MultiArray(data=[float(v) for v in q]))

    def close(self) -> None:
        """On every exit the node controls (Ctrl-C, SIGTERM, an error): command a hold and wait, briefly,
        until the arm side has it. The gate is disarmed so nothing arriving meanwhile moves the arm."""
        self.gate.disarm()
        try:
            self._send_hold()
            for pub in (self.pub_twist, self.pub_trajectory, self.pub_positions):
                if pub is not None:
                    pub.wait_for_all_acked(RclpyDuration(seconds=0.5))
            self.get_logger().info("exiting: hold commanded")
        except Exception as e:   # the context may already be gone (rclpy's own signal handler)
            self.get_logger().error(f"exiting without a final hold: {e}")

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        s = self.gate.status(self._now())
        level, message = int(s["level"]), str(s["message"])
        if self.command_clock.state() in ("ahead", "behind"):
            level, message = max(level, 1), f"{message}; {self.command_clock.describe('command sender')}"
        values = {"state": s["state"], "backend": self.p.backend, "estop_latched": s["estop_latched"],
                  "estop_reason": s["estop_reason"], "holding": s["holding"], "last_reason": s["last_reason"],
                  "last_command_age": s["last_command_age"], "cycles": s["cycles"], "motion_sent": self.motion_sent}
        values.update(self.command_clock.values("commands"))
        values.update({f"count.{k}": v for k, v in sorted(s["counters"].items())})
        self.pub_diagnostics.publish(diagnostics_message(self, "lapa_ros: arm_controller safety", level, message,
                                                         values, hardware_id=self.p.backend))


def _moves(linear: np.ndarray, angular: np.ndarray) -> bool:
    """Whether a command passed on to the arm asks for motion (what /diagnostics' motion_sent counts)."""
    return bool(np.any(linear) or np.any(angular))


def main(args=None) -> int:
    return run_node(ArmControllerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
