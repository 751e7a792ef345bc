"""Run episodes on the simulated arm over ROS 2: choose task, reset, send the instruction, watch.

Used by `lapa demo` and the evaluation harness. Everything goes through the robot's ROS interfaces
(sim/reset, the `task` parameter of sim_robot, camera/image_raw, sim/success, instruction), so
whatever drives the arm (scripted expert, teleop, the policy) is a separate process.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import List, Optional

import numpy as np
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from geometry_msgs.msg import TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from lapa_ros.core.images import ImageConversionError
from lapa_ros.interfaces.messages import rgb_from_image_msg, stamp_to_sec
from lapa_ros.interfaces.ros_common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, call_service


@dataclasses.dataclass
class EpisodeResult:
    task: str
    seed: int
    instruction: str
    success: bool
    steps: int
    duration: float                     # wall seconds from reset to the end
    # What drove the arm in the episode (None where not watched): twists sent to the arm controller, those of
    # them asking for motion, and motion commands the controller passed on (twist backends: the simulated
    # Sawyer, MoveIt Servo; a controller driving joints publishes no twist: None, except in `lapa eval --robot`,
    # which reads the controller's own motion_sent count while it is disarmed before and after each episode).
    commands: Optional[int] = None
    motion_commands: Optional[int] = None
    forwarded_motion: Optional[int] = None
    frames: List[np.ndarray] = dataclasses.field(default_factory=list, repr=False)

    def summary(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "frames"}


# Where an arm controller with a twist backend (the simulated Sawyer's, MoveIt Servo) passes commands on.
FORWARDED_TWIST_TOPIC = "servo_node/delta_twist_cmds"


class EpisodeRunner(Node):
    """In-process helper node; ``start()`` spins it in a background thread."""

    def __init__(self, robot: str = "sim_robot", record_frames: bool = True, **kwargs):
        super().__init__("episode_runner", **kwargs)
        self.robot = robot
        self.record_frames = record_frames
        self._lock = threading.Lock()
        self._episode_start: Optional[float] = None
        self._frames: List[np.ndarray] = []
        self._frame_count = 0
        self._waiting: collections.deque = collections.deque(maxlen=8)   # frames seen between episodes
        self._success = False
        self._success_step: Optional[int] = None
        self._counts = {"commands": 0, "motion_commands": 0, "forwarded_motion": 0}
        self._unmatched_publishers = False
        self._last_image_time = 0.0
        self.pub_instruction = self.create_publisher(String, "instruction", LATCHED_QOS)
        # sim/success before the camera: a simulator publishes a step's success just before that step's frame, and
        # rclpy's executor takes waiting messages in subscription order, so the success is always counted at the
        # step it belongs to (identical runs report identical step counts).
        self.create_subscription(Bool, "sim/success", self._on_success, COMMAND_QOS)
        self.create_subscription(Image, "camera/image_raw", self._on_image, SENSOR_QOS)
        # A policy that never acts (every frame refused, wrong topics) or an arm controller that refuses every
        # command fails an episode silently: count what reached each.
        self._command_subs = [
            self.create_subscription(TwistStamped, "arm_controller/twist_cmd",
                                     lambda m: self._count(m, "commands", "motion_commands"), COMMAND_QOS),
            self.create_subscription(TwistStamped, FORWARDED_TWIST_TOPIC,
                                     lambda m: self._count(m, None, "forwarded_motion"), COMMAND_QOS)]
        self.reset_client = self.create_client(Trigger, "sim/reset")
        self.arm_client = self.create_client(Trigger, "arm_controller/arm")
        self._service_clients = {}
        self.param_client = self.create_client(SetParameters, f"{robot}/set_parameters")
        self.policy_change_state = self.create_client(ChangeState, "policy/change_state")
        self.policy_get_state = self.create_client(GetState, "policy/get_state")
        self._policy_managed: Optional[bool] = None
        # Single-threaded (rclpy's multi-threaded executor busy-polls); calls wait from other threads.
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self)
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ spinning
    def start(self) -> "EpisodeRunner":
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # shutdown while spinning
            pass

    def stop(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self.destroy_node()

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Image) -> None:
        self._last_image_time = time.monotonic()
        with self._lock:
            if self._episode_start is None:
                # The first frame of an episode is published before the reset is answered: keep the latest few
                # until the episode's start stamp is known (run_episode takes those at or after it).
                self._waiting.append(msg)
                return
            self._take_frame(msg)

    def _take_frame(self, msg: Image) -> None:
        """Count (and record) a frame of the running episode (call with self._lock held)."""
        if stamp_to_sec(msg.header.stamp) >= self._episode_start - 1e-6:
            self._frame_count += 1
            if self.record_frames:
                try:
                    self._frames.append(rgb_from_image_msg(msg))
                except ImageConversionError as e:
                    self.get_logger().warning(f"unusable image: {e}", throttle_duration_sec=2.0)

    def _on_success(self, msg: Bool) -> None:
        with self._lock:
            if self._episode_start is not None and self._frame_count > 0 and msg.data and not self._success:
                self._success = True
                self._success_step = self._frame_count   # the step of the frame this success comes with

    def _count(self, msg: TwistStamped, every: Optional[str], motion: str) -> None:
        with self._lock:
            if self._episode_start is None or stamp_to_sec(msg.header.stamp) < self._episode_start - 1e-6:
                return   # between episodes, or sent for an earlier one
            if every is not None:
                self._counts[every] += 1
            t = msg.twist
            if any(abs(v) > 1e-9 for v in (t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z)):
                self._counts[motion] += 1

    def match_command_publishers(self, timeout: float = 2.0) -> bool:
        """Wait (at most ``timeout``) until the command counters are connected to every command publisher the ROS
        graph knows of, so an episode's first commands are counted too. False if some stayed unmatched."""
        if self._unmatched_publishers:
            return False   # waited once already (a publisher whose QoS the counters cannot match): not every episode
        deadline = time.monotonic() + timeout
        while True:
            try:
                pending = [s.topic_name for s in self._command_subs
                           if s.get_publisher_count() < self.count_publishers(s.topic_name)]
            except AttributeError:   # rclpy before Iron (Humble) cannot tell whether a subscription is matched
                return True
            if not pending:
                return True
            if time.monotonic() > deadline:
                self._unmatched_publishers = True
                self.get_logger().warning(f"command counters not connected to every publisher of {pending} after "
                                          f"{timeout:.0f} s (QoS mismatch?): episodes' command counts may be low")
                return False
            time.sleep(0.02)

    def take_counts(self, watched: bool = True) -> dict:
        """The command counts since the last call (or the start of the episode), and restart them. None where not
        watched: every count when ``watched`` is False (a command publisher the counters could not be connected
        to), forwarded_motion where no twist output exists (a controller driving a Franka's ros2_control joints)."""
        with self._lock:
            counts, self._counts = self._counts, dict.fromkeys(self._counts, 0)
        if not watched:
            return dict.fromkeys(counts)
        if self.count_publishers(FORWARDED_TWIST_TOPIC) == 0:
            counts["forwarded_motion"] = None
        return counts

    # ------------------------------------------------------------------ calls
    def _call(self, client, request, timeout: float, resend_after: Optional[float] = None):
        """Call a service; resend_after (seconds) only for requests that may safely run twice (a reset is
        not resent: it advances the episode seed, so a second one would start a different episode)."""
        return call_service(client, request, timeout, resend_after=resend_after)

    def begin_recording_frames(self) -> None:
        """Keep every camera frame from now on (robot episodes, which have no reset stamp)."""
        with self._lock:
            self._frames, self._frame_count = [], 0
            self._counts = dict.fromkeys(self._counts, 0)
            self._episode_start = 0.0

    def end_recording_frames(self) -> List[np.ndarray]:
        with self._lock:
            frames, self._frames = self._frames, []
            self._episode_start = None
        return frames

    def wait_until_ready(self, timeout: float = 60.0, need_reset_service: bool = True, graph=None) -> None:
        """Block until the robot's reset service answers (simulation) and its camera publishes.

        graph: the NodeProcesses being waited for; if one of its nodes exits, its error is raised at once."""
        deadline = time.monotonic() + timeout
        while True:
            if graph is not None:
                graph.check_alive()
            remaining = deadline - time.monotonic()
            try:
                self._wait_ready_once(max(0.1, min(2.0, remaining)), need_reset_service)
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"robot not ready after {timeout:.0f} s (no "
                                       f"{'reset service or ' if need_reset_service else ''}camera image)") from None

    def _wait_ready_once(self, timeout: float, need_reset_service: bool) -> None:
        deadline = time.monotonic() + timeout
        if need_reset_service and not self.reset_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError("no reset service")
        while time.monotonic() - self._last_image_time > 1.0:
            if time.monotonic() > deadline:
                raise TimeoutError("no camera image")
            time.sleep(0.05)

    def arm(self, timeout: float = 10.0) -> None:
        """Arm the arm controller (it starts disarmed: nothing moves before this)."""
        response = self._call(self.arm_client, Trigger.Request(), timeout, resend_after=3.0)  # arming twice is harmless
        if not response.success:
            raise RuntimeError(f"arm_controller refused to arm: {response.message}")

    def set_task(self, task: str, timeout: float = 10.0) -> None:
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=task)
        result = self._call(self.param_client, SetParameters.Request(parameters=[Parameter(name="task", value=value)]),
                            timeout, resend_after=3.0).results[0]
        if not result.successful:
            raise ValueError(result.reason)

    def reset(self, timeout: float = 30.0) -> dict:
        response = self._call(self.reset_client, Trigger.Request(), timeout)
        if not response.success:
            raise RuntimeError(f"reset failed: {response.message}")
        return dict(kv.split("=", 1) for kv in response.message.split())

    def trigger(self, service: str, timeout: float = 30.0) -> str:
        """Call a std_srvs/Trigger service; returns its message, raises RuntimeError if it failed."""
        client = self._service_clients.get(service) or self._service_clients.setdefault(service, self.create_client(Trigger, service))
        response = self._call(client, Trigger.Request(), timeout)
        if not response.success:
            raise RuntimeError(f"{service}: {response.message}")
        return response.message

    def set_bool(self, service: str, value: bool, timeout: float = 30.0) -> str:
        from std_srvs.srv import SetBool

        client = self._service_clients.get(service) or self._service_clients.setdefault(service, self.create_client(SetBool, service))
        response = self._call(client, SetBool.Request(data=value), timeout)
        if not response.success:
            raise RuntimeError(f"{service}: {response.message}")
        return response.message

    def _has_managed_policy(self) -> bool:
        """Whether a lifecycle policy node is running (asked once; the expert driver has none)."""
        if self._policy_managed is None:
            self._policy_managed = self.policy_change_state.wait_for_service(timeout_sec=1.0)
        return self._policy_managed

    def set_policy_active(self, active: bool, timeout: float = 10.0) -> None:
        """Activate or deactivate the managed policy node (no-op without one or when already so)."""
        if not self._has_managed_policy():
            return
        state = self._call(self.policy_get_state, GetState.Request(), timeout, resend_after=3.0).current_state.label
        if (state == "active") == active:
            return
        transition = Transition(id=Transition.TRANSITION_ACTIVATE if active else Transition.TRANSITION_DEACTIVATE)
        if not self._call(self.policy_change_state, ChangeState.Request(transition=transition), timeout).success:
            raise RuntimeError(f"policy refused to {'activate' if active else 'deactivate'} (state {state})")

    def run_episode(self, task: str, instruction: str, max_steps: int, control_period: float,
                    frames_after_success: int = 5, seed: Optional[int] = None,
                    on_start=None) -> EpisodeResult:
        """One episode: task -> reset -> instruction -> wait for success or the step limit.

        A managed policy is inactive (holding) from before the reset until the new instruction is
        out, so no command computed in the previous episode, or for its instruction, moves the arm
        in this one. on_start: called once the new episode has begun (e.g. to start recording)."""
        self.set_policy_active(False)
        counted = self.match_command_publishers()
        self.set_task(task)
        if seed is not None:
            self._set_seed(seed)
        with self._lock:
            self._episode_start = None
        self.pub_instruction.publish(String(data=instruction))  # delivered while the sim resets
        info = self.reset()
        t0 = time.monotonic()
        with self._lock:
            self._frames, self._frame_count, self._success, self._success_step = [], 0, False, None
            self._counts = dict.fromkeys(self._counts, 0)
            self._episode_start = float(info["stamp"])
            for msg in self._waiting:   # the reset's own frame, and any after it that came before the answer
                self._take_frame(msg)
            self._waiting.clear()
        self.set_policy_active(True)
        if on_start is not None:
            on_start()
        timeout = max_steps * control_period * 3.0 + 5.0
        success_at = None
        while True:
            time.sleep(0.01)
            with self._lock:
                steps = max(self._frame_count - 1, 0)
                if self._success and success_at is None:
                    success_at = self._success_step
            if success_at is not None and steps >= success_at + frames_after_success:
                break
            if steps >= max_steps or time.monotonic() - t0 > timeout:
                break
        with self._lock:
            frames, self._frames = self._frames, []
            self._episode_start = None   # counts stop here
        counts = self.take_counts(watched=counted)
        return EpisodeResult(task=info["task"], seed=int(info["seed"]), instruction=instruction,
                             success=success_at is not None, steps=success_at if success_at is not None else steps,
                             duration=time.monotonic() - t0, frames=frames, **counts)

    def _set_seed(self, seed: int, timeout: float = 10.0) -> None:
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(seed))
        result = self._call(self.param_client, SetParameters.Request(parameters=[Parameter(name="seed", value=value)]),
                            timeout, resend_after=3.0).results[0]
        if not result.successful:
            raise ValueError(result.reason)
