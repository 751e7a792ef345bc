"""policy: runs the exported LAPA policy (ONNX Runtime) on each fresh camera frame.

A managed (lifecycle) node: configure loads and checks the model (a missing, truncated or mismatched
model file fails the transition with one clear message, so the node never runs half-working);
activate starts acting; deactivate commands a hold and stops. The command publishers are lifecycle
publishers: they publish nothing unless the node is active, whatever a callback does. /diagnostics
is a plain publisher, so an inactive policy still reports why. With `autostart` (default) it
configures and activates itself and exits if either transition fails.

Subscribes:
  camera/image_raw          sensor_msgs/Image (any cv_bridge colour encoding), or with
                            image_transport "compressed": camera/image_raw/compressed
  instruction               std_msgs/String, reliable + transient local (a late start still gets it)
  ee_pose, joint_states     robot state, when the policy takes state (see the model card)
Publishes:
  arm_controller/twist_cmd     geometry_msgs/TwistStamped as each chunk arrives and at `control_rate`
                               between chunks (on a simulated clock only per chunk), stamped at publish time
  arm_controller/gripper_cmd   std_msgs/Float64
  policy/action_chunk          trajectory_msgs/JointTrajectory: the raw chunk of each inference,
                               joint_names = action names, header stamp = the camera frame's stamp
  /diagnostics                 latency (frame stamp -> chunk), rates, execution provider in use

Each inference uses the newest frame only (frames that arrive meanwhile are dropped, never queued),
and only when the frame and the state are younger than `max_input_age` and not stamped more than
`future_tolerance` ahead of this computer's clock (a camera whose clock runs ahead is refused and
reported, never queued until the clock catches up: see lapa_ros.core.clock). Chunks are blended by
lapa_models.policy.chunking (each action held for its control period, as recorded) and sent as each chunk arrives
and at the control rate (the evaluator blends the same way); when no chunk covers "now" nothing is published and the
controller holds the arm. A bad frame, an empty or over-long instruction, or NaN in the policy
output is logged, counted and skipped: the arm holds, nothing crashes. Every such event writes a
log line the first time and then at most one per `log_throttle` seconds (with the count), and all
user-supplied text in the log is escaped (lapa_models.text.printable). Frames larger than
`max_image_pixels` are refused before they are converted.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Optional

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lapa_ros.core.actions import ActionLayout
from lapa_ros.core.alignment import StampedBuffer
from lapa_models.policy.chunking import INTERPOLATIONS, MODES, ChunkBlender
from lapa_ros.core.clock import FROM_FUTURE, BackwardJumpDetector, ClockOffsetMonitor, input_age_problem
from lapa_ros.core.events import EventLog, suffix
from lapa_ros.core.images import ImageConversionError, mono_problem
from lapa_models.data.robot_state import GripperMapping, assemble_state
from lapa_models.text import printable

from lapa_ros.interfaces.messages import (check_image_size, rgb_from_compressed_msg, rgb_from_image_msg, sec_to_stamp, stamp_to_sec,
                        twist_msg)
from lapa_ros.interfaces.ros_common import (COMMAND_QOS, LATCHED_QOS, LATEST_FRAME_QOS, Param, StartupError, declare_params,
                          diagnostics_message, log_at)

PARAMS = (
    Param("model_dir", "", "Exported policy folder (model_card.json + ONNX graphs).", read_only=True),
    Param("providers", "auto", "ONNX Runtime execution providers in order (e.g. 'tensorrt,cuda,cpu'); "
                               "'auto': those this build has.", read_only=True),
    Param("precision", "fp32", "Graph precision.", read_only=True, choices=("fp32", "fp16")),
    Param("threads", 0, "CPU threads for inference (0: ONNX Runtime's default).", read_only=True, range=(0, 256)),
    Param("control_rate", 20.0, "Rate [Hz] of published commands.", read_only=True, range=(1.0, 1000.0)),
    Param("max_input_age", 0.2, "Frames older than this [s] are not acted on.", range=(0.001, 10.0)),
    Param("future_tolerance", 0.05, "Frames and states stamped further ahead of this computer's clock [s] are "
                                    "refused (the sender's clock runs ahead).", range=(0.0, 10.0)),
    Param("max_image_pixels", 3840 * 2160, "Frames with more pixels are refused before conversion.", read_only=True,
          range=(1, 1 << 28)),
    Param("log_throttle", 5.0, "After its first line, each kind of refusal or hold is logged at most once per "
                               "this many seconds (with its count).", read_only=True, range=(0.0, 3600.0)),
    Param("state_tolerance", 0.05, "The robot state used with a frame is the sample nearest its stamp, within this [s] "
                                   "(the bag converter aligns training data the same way).", range=(0.001, 10.0)),
    Param("blend", "ensemble", "How overlapping chunks are blended.", choices=MODES),
    Param("interpolation", "hold", "Between a chunk's steps: 'hold' sends action k for its whole control period "
                                   "(as recorded), 'linear' interpolates actions k and k+1.",
          read_only=True, choices=INTERPOLATIONS),
    Param("ensemble_decay", 0.01, "Temporal ensembling weight exp(-m*i), i = 0 for the oldest chunk.",
          range=(-10.0, 10.0)),
    Param("max_chunk_age", 1.0, "A chunk is used at most this long [s] after its frame.", range=(0.001, 60.0)),
    Param("accept_mono", False, "Act on single-channel frames (mono8, 8UC1, mono16: grey or infrared) as RGB; "
                                "false: refused, as a colour policy would act on the wrong stream.", read_only=True),
    Param("image_transport", "raw", "Subscribe to camera/image_raw (raw) or its /compressed topic.",
          read_only=True, choices=("raw", "compressed")),
    Param("base_frame", "panda_link0", "frame_id of published twists (the controller's base frame).", read_only=True),
    Param("gripper_joint", "", "Finger joint in joint_states giving the gripper state; empty: the one in the model "
                               "card (how the training data read it).", read_only=True),
    Param("gripper_open_position", 0.0, "That joint's position when open [m or rad] (read with gripper_joint).",
          read_only=True),
    Param("gripper_closed_position", 0.0, "That joint's position when closed [m or rad] (read with "
                                          "gripper_joint).", read_only=True),
    Param("autostart", True, "Configure and activate at start (exit if configuring fails).", read_only=True),
)


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        self.p = declare_params(self, PARAMS)
        self.runtime = None
        self._configure_error = ""
        # Gates the inference worker (no work while inactive); commands are gated by the lifecycle
        # publishers themselves.
        self._active = False
        self.pub_twist = self.pub_gripper = self.pub_chunk = None   # lifecycle publishers, made in configure
        self.pub_diagnostics = None
        self._subs: list = []
        self._timers: list = []
        self._lock = threading.Lock()
        self._frame_ready = threading.Condition(self._lock)
        self._send_lock = threading.Lock()   # commands go out from the control timer and the inference thread
        self._sim_time = bool(self.get_parameter("use_sim_time").value)
        self._last_command = -float("inf")
        self._acting_since = -float("inf")   # frames stamped before the last activation are not acted on
        self._clock_jumps = BackwardJumpDetector()   # simulated clock: a restarted simulator's /clock
        self._worker: Optional[threading.Thread] = None
        self._running = False
        self.events = EventLog(self.p.log_throttle)
        self.counts = self.events.counts
        self._checked_frame_size: Optional[tuple] = None
        self._frame_size_problem: Optional[str] = None
        self.clocks = {"camera": ClockOffsetMonitor(50, self.p.future_tolerance, self.p.max_input_age),
                       "state": ClockOffsetMonitor(50, self.p.future_tolerance, self.p.max_input_age)}
        if self.p.autostart:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(f"policy: {self._configure_error}")
            if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                raise StartupError("policy: activation failed (see the log above)")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Load and verify the exported model, create subscriptions and publishers."""
        from lapa_models.policy.runtime import ModelCardError, PolicyRuntime

        self._configure_error = ""
        if not self.p.model_dir:
            self._configure_error = "no model: set the `model_dir` parameter to an exported policy folder"
        else:
            try:
                providers = self.p.providers if self.p.providers == "auto" else \
                    [s.strip() for s in self.p.providers.split(",") if s.strip()]
                self.runtime = PolicyRuntime(self.p.model_dir, providers=providers, precision=self.p.precision,
                                             intra_op_threads=self.p.threads or None,
                                             log_warnings=False)   # logged below, and on /diagnostics
                self.layout = ActionLayout(self.runtime.action_names or [])
            except (ModelCardError, ValueError, OSError) as e:
                self._configure_error = str(e)
                self.runtime = None
        if self._configure_error:
            self.get_logger().error(f"configure failed: {self._configure_error}")
            return TransitionCallbackReturn.FAILURE
        if self.runtime.provider_warning:
            self.get_logger().warning(self.runtime.provider_warning)
        card_rate = self.runtime.control_rate_hz
        if card_rate and abs(card_rate - self.p.control_rate) > 1e-6:
            self.get_logger().warning(f"control_rate {self.p.control_rate} Hz differs from the rate the policy was "
                                      f"trained at ({card_rate} Hz): chunk steps are {1 / card_rate:.3f} s apart")
        self.period = 1.0 / (card_rate or self.p.control_rate)
        self.state_names = list((self.runtime.card.get("state") or {}).get("names") or []) \
            if self.runtime.takes_state else []
        self.gripper: Optional[GripperMapping] = None
        if "gripper" in self.state_names:
            try:
                self.gripper = self._gripper_mapping()
            except ValueError as e:
                self._configure_error = str(e)
                self.get_logger().error(f"configure failed: {e}")
                self.runtime = None
                return TransitionCallbackReturn.FAILURE
        self.blender = ChunkBlender(self.runtime.action_dim, self.period, self.p.max_chunk_age, self.p.blend,
                                    self.p.ensemble_decay, interpolation=self.p.interpolation)
        self._frame = None          # (rgb or msg, stamp)
        self._instruction: Optional[str] = None
        self._embedding = None
        self._ee_positions = StampedBuffer(256)
        self._grippers = StampedBuffer(256)
        self.latencies = collections.deque(maxlen=200)
        self.inference_ms = collections.deque(maxlen=200)
        self.publish_times = collections.deque(maxlen=200)
        self.inference_times = collections.deque(maxlen=200)

        if self.p.image_transport == "compressed":
            self._subs = [self.create_subscription(CompressedImage, "camera/image_raw/compressed", self._on_image,
                                                   LATEST_FRAME_QOS)]
        else:
            self._subs = [self.create_subscription(Image, "camera/image_raw", self._on_image, LATEST_FRAME_QOS)]
        self._subs.append(self.create_subscription(String, "instruction", self._on_instruction, LATCHED_QOS))
        if self.state_names:
            self._subs.append(self.create_subscription(PoseStamped, "ee_pose", self._on_pose, COMMAND_QOS))
            self._subs.append(self.create_subscription(JointState, "joint_states", self._on_joints, COMMAND_QOS))
        self.pub_twist = self.create_lifecycle_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
        self.pub_gripper = self.create_lifecycle_publisher(Float64, "arm_controller/gripper_cmd", COMMAND_QOS)
        self.pub_chunk = self.create_lifecycle_publisher(JointTrajectory, "policy/action_chunk", COMMAND_QOS)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self._timers = [self.create_timer(1.0, self._publish_diagnostics)]
        if not self._sim_time:
            # On a simulated clock each command answers one chunk: the clock advances as the simulator steps, so a
            # tick at a new step would race the chunk of that step's frame (and a lockstep simulator would take
            # whichever came first). There the control timer is not made at all.
            self._timers.append(self.create_timer(1.0 / self.p.control_rate, self._on_control_tick))
        self._running = True
        self._worker = threading.Thread(target=self._inference_loop, name="policy_inference", daemon=True)
        self._worker.start()
        rt = self.runtime
        self.get_logger().info(f"policy {self.p.model_dir}: chunk {rt.chunk_size} x {rt.action_names}, "
                               f"state {self.state_names or 'none'}, providers in use {rt.providers_in_use}")
        return TransitionCallbackReturn.SUCCESS

    def _gripper_mapping(self) -> GripperMapping:
        """How to read the gripper state from joint_states: the model card's mapping (the one the training
        data used), unless the gripper_* parameters give another (then a warning says both)."""
        card = (self.runtime.card.get("state") or {}).get("gripper")
        from_card = GripperMapping.from_json(card, "model card state.gripper") if card else None
        from_params = None
        if self.p.gripper_joint:
            from_params = GripperMapping(self.p.gripper_joint, self.p.gripper_open_position,
                                         self.p.gripper_closed_position)
        if from_params and from_card and from_params != from_card:
            self.get_logger().warning(f"gripper_* parameters {from_params.to_json()} override the model card's "
                                      f"{from_card.to_json()} (how the training data read the gripper)")
        mapping = from_params or from_card
        if mapping is None:
            raise ValueError("the policy takes the gripper state, but its model card does not say which joint of "
                             "joint_states gives it (exported before the card carried it): set gripper_joint, "
                             "gripper_open_position and gripper_closed_position")
        return mapping

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start acting on frames (from the newest one waiting) and publishing commands."""
        result = super().on_activate(state)     # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        now = self._now()   # before the lock: a clock that jumped back is handled under it (_now)
        with self._lock:
            self.blender.reset()
            self._active = True
            self._acting_since = now
            self._frame_ready.notify()
        self.get_logger().info("active")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop acting and command a hold at once (not only after the controller's watchdog).

        An evaluation deactivates the policy around each reset, so that nothing computed for the
        previous episode (or its instruction) moves the arm in the next one."""
        with self._send_lock:                   # no command from the inference thread after the hold
            with self._lock:
                self._active = False
                self.blender.reset()
            self._publish_hold()                # while the publishers are still enabled
        self.get_logger().info("inactive: holding")
        return super().on_deactivate(state)     # disables them

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Release the model and the ROS interfaces made in configure."""
        self._stop_worker()
        for t in self._timers:
            self.destroy_timer(t)
        for s in self._subs:
            self.destroy_subscription(s)
        self._timers, self._subs = [], []
        for pub in (self.pub_twist, self.pub_gripper, self.pub_chunk):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        if self.pub_diagnostics is not None:
            self.destroy_publisher(self.pub_diagnostics)
        self.pub_twist = self.pub_gripper = self.pub_chunk = self.pub_diagnostics = None
        self.runtime = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Shut down from any state: an active policy commands a hold first."""
        was_active, self._active = self._active, False
        self._stop_worker()
        if was_active:
            self._publish_hold()
        return TransitionCallbackReturn.SUCCESS

    def _publish_hold(self) -> None:
        """A zero twist now (a lifecycle publisher drops it unless the node is active)."""
        if self.pub_twist is not None:
            self.pub_twist.publish(twist_msg(np.zeros(3), self.get_clock().now().to_msg(), self.p.base_frame))

    def _stop_worker(self) -> None:
        self._running = False
        with self._lock:
            self._frame_ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=3.0)
            self._worker = None

    def close(self) -> None:
        """On exit: stop acting and command a hold at once (the controller's watchdog would, later)."""
        was_active, self._active = self._active, False
        self._stop_worker()
        if was_active:
            try:
                self._publish_hold()
            except Exception:   # the context may be gone already
                pass

    # ------------------------------------------------------------------ inputs
    def _now(self) -> float:
        """The node clock; on a simulated clock a jump back (the simulator restarted) is handled first."""
        now = self.get_clock().now().nanoseconds * 1e-9
        if self._sim_time:
            jump = self._clock_jumps.check(now)
            if jump is not None:
                self._clock_jumped_back(now, jump)
        return now

    def _clock_jumped_back(self, now: float, jump: float) -> None:
        """What was kept in the old time lies in the new time's future: the activation time (every new frame
        would be "taken before activation"), the chunks and the blender's latest query (every new chunk would
        be pruned as already past), the robot states. The policy held until the clock caught up with the old
        time, perhaps never. Drop it all: the first command comes from the first frame after the jump."""
        with self._lock:
            if self.runtime is not None:
                self.blender.reset()
                self._ee_positions.clear()
                self._grippers.clear()
            self._acting_since = now
            self._last_command = -float("inf")
        for monitor in self.clocks.values():
            monitor.reset()
        self._event("clock_jumped_back", f"the clock jumped back {jump:.3f} s (a simulator restarted?): chunks and "
                                         f"states of the old time dropped, acting on frames from now on", "error")

    def _clock_at_least(self, stamp: float) -> float:
        """Now; on a simulated clock at least the frame's stamp: the simulator stamps each frame with the time it
        publishes on /clock, and that message may arrive after the frame (another topic)."""
        now = self._now()
        return max(now, stamp) if self._sim_time else now

    def _event(self, key: str, message: str, level: str = "warning") -> None:
        """Count ``key``; log ``message`` the first time and then at most once per log_throttle."""
        due = self.events.report(key, time.monotonic())
        if due is not None:
            log_at(self.get_logger(), level, message + suffix(*due))

    def _watch_clock(self, source: str, stamp: float) -> None:
        now = self._now()
        if now <= 0.0:   # sim time before the first /clock message: no time to compare with
            return
        monitor = self.clocks[source]
        monitor.add(stamp, now)
        changed = self.events.edge(f"clock.{source}", monitor.state() in ("ahead", "behind"))
        if changed is not None:
            log_at(self.get_logger(), "error" if changed else "info", monitor.describe(source))

    def _on_image(self, msg) -> None:
        try:
            check_image_size(msg, self.p.max_image_pixels)
        except ImageConversionError as e:
            self._event("image_too_large", f"frame refused: {e}")
            return
        self._watch_clock("camera", stamp_to_sec(msg.header.stamp))
        if (msg.height, msg.width) != self._checked_frame_size and self.runtime is not None:
            self._checked_frame_size = (msg.height, msg.width)
            self._frame_size_problem = self.runtime.frame_size_problem(msg.height, msg.width)
        if self._frame_size_problem:
            self.counts["frames_other_aspect"] += 1
            self._event("image_aspect", self._frame_size_problem)
        with self._lock:
            if self._frame is not None and self._active:
                self.counts["frames_dropped_busy"] += 1
            self._frame = msg
            self._frame_ready.notify()

    def _on_instruction(self, msg: String) -> None:
        from lapa_models.policy.runtime import PolicyInputError
        from lapa_models.text import InstructionError, clean_instruction

        try:
            text = clean_instruction(msg.data)
            embedding = self.runtime.encode_instruction(text)
        except (InstructionError, PolicyInputError) as e:
            self.counts["instruction_rejected"] += 1
            self.get_logger().error(f"instruction refused, holding until a usable one arrives: {e}")
            embedding, text = None, None
        with self._lock:
            self._instruction, self._embedding = text, embedding
            self.blender.reset()  # chunks of the old instruction must not finish the new task
        if text:
            self.get_logger().info(f"instruction: \"{printable(text)}\"")

    def _state_stamp_ok(self, stamp: float, topic: str) -> bool:
        """States stamped in the future are refused (the sender's clock runs ahead), never buffered."""
        self._watch_clock("state", stamp)
        problem = input_age_problem(self._now(), stamp, float("inf"), self.p.future_tolerance)
        if problem is None:
            return True
        self._event(f"{problem}_state", f"{topic} refused: stamped {stamp - self._now():+.3f} s from now "
                                        f"({'from the future' if problem == FROM_FUTURE else problem})")
        return False

    def _on_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        stamp = stamp_to_sec(msg.header.stamp)
        if self._state_stamp_ok(stamp, "ee_pose"):
            self._ee_positions.push(stamp, np.array([p.x, p.y, p.z]))

    def _on_joints(self, msg: JointState) -> None:
        if self.gripper is None:
            return
        try:
            i = list(msg.name).index(self.gripper.joint)
            position = float(msg.position[i])
        except IndexError:   # legal in ROS: a joint listed with its effort or velocity only
            self._event("gripper_joint_no_position", f"joint_states lists '{printable(self.gripper.joint)}' (the "
                                                     f"gripper joint) without a position ({len(msg.name)} names, "
                                                     f"{len(msg.position)} positions): no state, the arm holds",
                        "error")
            return
        except ValueError:
            self._event("gripper_joint_missing", f"joint_states has no joint '{printable(self.gripper.joint)}' (the "
                                                 f"gripper joint of the model card; joints: "
                                                 f"{printable(', '.join(msg.name))}): no state, the arm holds", "error")
            return
        stamp = stamp_to_sec(msg.header.stamp)
        if not self._state_stamp_ok(stamp, "joint_states"):
            return
        if not np.isfinite(position):
            self._event("gripper_joint_non_finite", f"joint_states gives '{printable(self.gripper.joint)}' the "
                                                    f"position {position}: no state, the arm holds", "error")
            return
        self._grippers.push(stamp, self.gripper.state(position))

    # ------------------------------------------------------------------ inference
    def _inference_loop(self) -> None:
        while self._running:
            with self._lock:
                self._frame_ready.wait_for(lambda: (self._frame is not None and self._active) or not self._running,
                                           timeout=0.5)
                if not self._active:
                    continue
                msg, self._frame = self._frame, None
                embedding = self._embedding
                since = self._acting_since
            if msg is None or not self._running:
                continue
            if stamp_to_sec(msg.header.stamp) < since:
                # Taken before activation (the arm may have been moved, or the world reset, since): the first
                # chunk comes from the first frame after it.
                self.counts["frames_before_activation"] += 1
                continue
            try:
                self._infer(msg, embedding)
            except Exception as e:  # keep the node alive; the arm holds without fresh chunks
                self._event("inference_error", f"inference failed, the arm holds: {printable(e)}", "error")

    def _infer(self, msg, embedding) -> None:
        from lapa_models.policy.runtime import PolicyInputError

        if not self._active:
            return
        if embedding is None:
            self._event("no_instruction", "waiting for a usable instruction (std_msgs/String on 'instruction'): "
                                          "the arm holds", "info")
            return
        stamp = stamp_to_sec(msg.header.stamp)
        now = self._clock_at_least(stamp)
        problem = input_age_problem(now, stamp, self.p.max_input_age, self.p.future_tolerance)
        if problem is not None:
            limit = (f"more than {self.p.future_tolerance} s ahead of this computer's clock" if problem == FROM_FUTURE
                     else f"older than max_input_age {self.p.max_input_age} s")
            self._event(f"{problem}_frame", f"frame refused: stamped {stamp - now:+.3f} s from now, {limit}; "
                                            f"the arm holds")
            return
        problem = None if isinstance(msg, CompressedImage) else mono_problem(msg.encoding, self.p.accept_mono)
        if problem:
            self._event("mono_image", f"frame refused: {printable(problem)}; the arm holds")
            return
        try:
            rgb = rgb_from_compressed_msg(msg, self.p.max_image_pixels) if isinstance(msg, CompressedImage) \
                else rgb_from_image_msg(msg, self.p.max_image_pixels)
        except ImageConversionError as e:
            self._event("bad_image", f"frame refused: {e}")
            return
        state = None
        if self.state_names:
            # The state nearest the frame's stamp, as the bag converter aligns the training data.
            # A state stamped with the frame may still be on its way (another subscription):
            # wait for it, at most state_tolerance, rather than act on an older one or skip.
            deadline = time.monotonic() + self.p.state_tolerance
            ee = self._ee_positions.wait_at(stamp, self.p.state_tolerance, self.p.state_tolerance)
            grip = self._grippers.wait_at(stamp, self.p.state_tolerance, deadline - time.monotonic())
            if ee is None or grip is None:
                self._event("no_state_near_frame", f"no robot state within {self.p.state_tolerance} s of the frame: "
                                                   f"the arm holds")
                return
            try:
                state = assemble_state(self.state_names, ee.value, grip.value)
            except ValueError as e:
                self._event("bad_state", f"robot state unusable, the arm holds: {e}")
                return
        t0 = time.perf_counter()
        try:
            chunk = self.runtime.predict(rgb, embedding, state)[0]
        except PolicyInputError as e:
            self._event("bad_input", f"frame refused by the model: {e}")
            return
        self.inference_ms.append((time.perf_counter() - t0) * 1e3)
        if not np.all(np.isfinite(chunk)):
            self._event("non_finite_output", "policy output has NaN/Inf: chunk dropped, the arm holds", "error")
            return
        with self._lock:
            if self._embedding is not embedding or not self._active:
                return  # the instruction changed, or the node was deactivated, during inference
            self.blender.add(stamp, chunk)
        done = self._clock_at_least(stamp)
        self.latencies.append((done - stamp) * 1e3)
        self.inference_times.append(done)
        self._publish_chunk(msg.header.stamp, chunk)
        # Act on a new chunk at once. A timer alone ticks at an arbitrary phase of the camera's period, fixed at
        # start-up: it would send the chunk's first action up to a period late, so a robot (or the simulated arm,
        # which reads the newest command at each of its steps) would act on the previous frame by an amount that
        # changes from one start to the next.
        self._send_command(done)

    def _publish_chunk(self, stamp, chunk: np.ndarray) -> None:
        traj = JointTrajectory(joint_names=list(self.runtime.action_names or []))
        traj.header.stamp = stamp
        traj.header.frame_id = self.p.base_frame
        points = []
        for k, a in enumerate(chunk):
            t = k * self.period
            points.append(JointTrajectoryPoint(positions=[float(v) for v in a],
                                               time_from_start=Duration(sec=int(t), nanosec=int(round((t % 1) * 1e9)))))
        traj.points = points
        self.pub_chunk.publish(traj)

    # ------------------------------------------------------------------ output
    def _on_control_tick(self) -> None:
        if not self._active:
            return
        now = self._now()
        with self._lock:
            self._follow_params()
        if 0.0 <= now - self._last_command < 0.99 / self.p.control_rate:
            return   # a new chunk's command went out within this control period
        self._send_command(now)

    def _follow_params(self) -> None:
        """Writable parameters changed at run time (`ros2 param set`: blend, ensemble_decay, max_chunk_age,
        future_tolerance, max_input_age) take effect from the next control tick: the blender and the clock
        monitors were made with the values at configure. Once per control period, not per frame or state
        message (call with self._lock held)."""
        b = self.blender
        b.mode, b.ensemble_decay, b.max_chunk_age = self.p.blend, float(self.p.ensemble_decay), \
            float(self.p.max_chunk_age)
        for monitor in self.clocks.values():
            monitor.future_tolerance, monitor.max_age = float(self.p.future_tolerance), float(self.p.max_input_age)

    def _send_command(self, now: float) -> None:
        """Publish the blended action for time now (from the control timer, and as each new chunk arrives)."""
        with self._send_lock:
            with self._lock:
                if not self._active:
                    return
                action = self.blender.action_at(now)
            if action is None:
                self.counts["no_chunk"] += 1
                return
            linear, angular, gripper = self.layout.to_command(action, self.period)
            stamp = sec_to_stamp(now)   # the time the blend was taken for (the controller's watchdog reads its age)
            if gripper is not None:
                self.pub_gripper.publish(Float64(data=float(gripper)))
            self.pub_twist.publish(twist_msg(linear, stamp, self.p.base_frame, angular))
            self._last_command = now
            self.publish_times.append(now)

    def _publish_diagnostics(self) -> None:
        def rate(times):
            t = list(times)
            return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        inf = np.array(self.inference_ms) if self.inference_ms else np.zeros(1)
        rt = self.runtime
        clock_problems = [m.describe(src) for src, m in self.clocks.items() if m.state() in ("ahead", "behind")]
        problems = clock_problems + ([rt.provider_warning] if rt and rt.provider_warning else []) \
            + ([self._frame_size_problem] if self._frame_size_problem else [])
        warn = bool(problems)
        message = "; ".join(problems) \
            or ("active" if self._active else "inactive")
        values = {"providers_in_use": ",".join(rt.providers_in_use) if rt else "", "precision": self.p.precision,
                  "instruction": self._instruction or "", "latency_ms_p50": f"{np.percentile(lat, 50):.2f}",
                  "latency_ms_p99": f"{np.percentile(lat, 99):.2f}", "inference_ms_p50": f"{np.percentile(inf, 50):.2f}",
                  "inference_ms_p99": f"{np.percentile(inf, 99):.2f}", "inference_rate_hz": f"{rate(self.inference_times):.1f}",
                  "command_rate_hz": f"{rate(self.publish_times):.1f}", "blend": self.p.blend,
                  "lifecycle_state": "active" if self._active else "inactive"}
        for source, monitor in self.clocks.items():
            values.update(monitor.values(source))
        values.update({f"count.{k}": str(v) for k, v in sorted(self.counts.items())})
        self.pub_diagnostics.publish(diagnostics_message(self, "lapa_ros: policy", 1 if warn else 0, message, values,
                                                         hardware_id=",".join(rt.providers_in_use) if rt else ""))


def main(args=None) -> int:
    from lapa_ros.interfaces.ros_common import run_node

    # Single-threaded: inference has its own thread; see lapa_ros.interfaces.ros_common.run_node.
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
