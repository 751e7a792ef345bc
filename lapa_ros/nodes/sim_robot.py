"""sim_robot: the simulated arm behind the same ROS 2 interfaces as a real one.

Publishes (relative names, so a namespace or remap places them):
  camera/image_raw, camera/camera_info   sensor_msgs/Image (rgb8) + CameraInfo, sensor-data QoS
  joint_states                           sensor_msgs/JointState (7 arm joints + 2 finger joints)
  ee_pose                                geometry_msgs/PoseStamped, tool centre point in `base_frame`
  sim/success                            std_msgs/Bool, latched per episode (true once the task is done)
  sim/task                               std_msgs/String, transient local: the current task name
  sim/privileged_state                   sensor_msgs/JointState used as a stamped named vector: the full
                                         Meta-World observation (objects, goal). Sim only, for the scripted expert.
  /clock                                 rosgraph_msgs/Clock when real_time is false
Subscribes:
  servo_node/delta_twist_cmds            geometry_msgs/TwistStamped, end-effector velocity [m/s] in
                                         `base_frame` (what MoveIt Servo takes); angular is ignored
                                         (the Sawyer hand orientation is fixed in these tasks)
  gripper/command                        std_msgs/Float64, 0 open .. 1 closed
Services:
  sim/reset                              std_srvs/Trigger: new episode (seed = `seed` parameter, then +1 per
                                         reset); answers "task=<name> seed=<n> stamp=<s>" where stamp is
                                         the header stamp of the episode's first image
Parameters: see PARAMS below and config/sim_robot.yaml. Setting `task` to an unknown name is refused
with the list of valid tasks; the new task starts at the next reset.

Timing: with real_time true the arm steps at its control rate (20 Hz by default) on the wall clock.
With real_time false it steps as fast as the machine allows, publishes /clock, and stamps everything
in simulated time (run the other nodes with use_sim_time). With lockstep true (and real_time false)
each step waits, up to lockstep_timeout, for a command stamped at or after the latest image: a slow
policy then slows the simulation instead of falling behind it. A reset advances the simulated clock by
RESET_CLOCK_GAP (1 s), so nothing computed before it counts in the new episode.
"""
from __future__ import annotations

import math
import time

import numpy as np
from rosgraph_msgs.msg import Clock
from geometry_msgs.msg import TwistStamped
from std_msgs.msg import Bool, Float64

from lapa_ros.interfaces.messages import sec_to_stamp, stamp_to_sec, twist_to_arrays
from lapa_ros.interfaces.ros_common import COMMAND_QOS, Param, run_node
from lapa_ros.nodes.sim_common import (CAMERA_FRAME, IMAGE_HEIGHT, IMAGE_WIDTH, RESET_CLOCK_GAP, SEED,
                                       SimulatedArmNode)

PARAMS = (
    Param("task", "push", "Simulated task (see lapa_sim/tasks.yaml). Takes effect at the next sim/reset."),
    SEED,
    IMAGE_WIDTH,
    IMAGE_HEIGHT,
    Param("substeps", 4, "Meta-World steps (12.5 ms) per control step: 4 -> 20 Hz.", read_only=True, range=(1, 40)),
    Param("real_time", True, "Step on the wall clock at the control rate; false: as fast as possible with /clock.",
          read_only=True),
    Param("lockstep", False, "With real_time false: wait for a command that answers the latest image before stepping.",
          read_only=True),
    Param("lockstep_timeout", 1.0, "Longest wait for a command in lockstep mode [s] (wall clock); then the arm holds.",
          range=(0.001, 60.0)),
    Param("command_timeout", 0.25, "A velocity command older than this [s] is dropped and the arm holds still.",
          range=(0.0, 10.0)),
    Param("base_frame", "world", "Frame of ee_pose and of accepted twist commands.", read_only=True),
    CAMERA_FRAME,
)


class SimRobotNode(SimulatedArmNode):
    NAME, ROBOT, ROBOT_LABEL = "sim_robot", "sawyer", "Sawyer"
    PARAMS = PARAMS

    def _setup(self) -> None:
        self._episode_seed = self.p.seed
        self._sim_time = 0.0
        # latest command: (linear velocity, time received [s, node clock], header stamp [s])
        self._velocity = np.zeros(3)
        self._velocity_time = -math.inf
        self._velocity_stamp = -math.inf
        self._gripper = 0.0
        self._warned_angular = False

    def _make_world(self):
        from lapa_sim.world import SimWorld

        world = SimWorld(self.p.task, seed=self.p.seed, image_size=(self.p.image_height, self.p.image_width),
                         substeps=self.p.substeps)
        self._period = world.control_period
        return world

    def _create_inputs(self) -> None:
        # The gripper first: a command's gripper value goes out before its twist, and when both wait at once the
        # executor takes them in the order the subscriptions were made, so a lockstep step never moves with the
        # twist of one command and the gripper of the one before.
        self.create_subscription(Float64, "gripper/command", self._on_gripper, COMMAND_QOS)
        self.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", self._on_twist, COMMAND_QOS)

    def _startup_message(self, mode: str) -> str:
        return (f"task '{self.world.task.name}', {1.0 / self._period:.1f} Hz, "
                f"{self.p.image_width}x{self.p.image_height} camera, {mode}")

    # ------------------------------------------------------------------ time
    def _now(self) -> float:
        if self.p.real_time:
            return self.get_clock().now().nanoseconds * 1e-9
        return self._sim_time

    # ------------------------------------------------------------------ inputs
    def _on_twist(self, msg: TwistStamped) -> None:
        linear, angular = twist_to_arrays(msg)
        if not (np.all(np.isfinite(linear)) and np.all(np.isfinite(angular))):
            self.rejected_commands += 1
            self.get_logger().warning("ignoring twist with NaN/Inf; the arm holds", throttle_duration_sec=1.0)
            self._set_velocity(np.zeros(3), stamp_to_sec(msg.header.stamp))
            return
        if msg.header.frame_id not in ("", self.p.base_frame):
            self.rejected_commands += 1
            self.get_logger().warning(f"ignoring twist in frame '{msg.header.frame_id}': only "
                                      f"'{self.p.base_frame}' is accepted", throttle_duration_sec=1.0)
            return
        if np.any(angular != 0.0) and not self._warned_angular:
            self._warned_angular = True
            self.get_logger().warning("angular velocity ignored: the simulated hand keeps a fixed orientation")
        self._set_velocity(linear, stamp_to_sec(msg.header.stamp))

    def _set_velocity(self, linear: np.ndarray, stamp: float) -> None:
        with self._lock:
            self._velocity = linear
            self._velocity_time = self._now()
            self._velocity_stamp = stamp
            self._lock.notify_all()

    def _on_gripper(self, msg: Float64) -> None:
        if not math.isfinite(msg.data):
            self.rejected_commands += 1
            self.get_logger().warning("ignoring gripper command NaN/Inf", throttle_duration_sec=1.0)
            return
        self._gripper = min(max(float(msg.data), 0.0), 1.0)

    def _do_reset(self) -> dict:
        seed = self._reset_world()
        self._episode_seed = seed
        with self._lock:
            self._velocity = np.zeros(3)
            self._velocity_time = -math.inf
            # The world resets with the gripper open; the last episode's gripper command must not close it
            # again in the steps before this episode's first command arrives.
            self._gripper = 0.0
        return {"task": self.world.task.name, "seed": seed}

    # ------------------------------------------------------------------ loop
    def _command_for_step(self) -> np.ndarray:
        with self._lock:
            if self._lockstep:
                self._wait_for_lockstep(self._answers_last_frame)
            fresh = (self._now() - self._velocity_time) <= self.p.command_timeout or \
                (self._lockstep and self._answers_last_frame())
            return self._velocity.copy() if fresh else np.zeros(3)

    def _answers_last_frame(self) -> bool:
        return self._velocity_stamp >= self._last_frame_stamp - 1e-6

    def _run(self) -> None:
        next_tick = time.monotonic()
        self._publish_state()
        while self._running:
            if self.p.real_time:
                next_tick += self._period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_tick = time.monotonic()  # fell behind: do not try to catch up in a burst
            resets = self._serve_resets()
            velocity = None if resets else self._command_for_step()
            if not self._running:
                break
            if velocity is not None and not self.world.done:
                self.world.step(velocity, self._gripper)
                self._sim_time += self._period
            elif not self.p.real_time:
                self._sim_time += RESET_CLOCK_GAP if resets else self._period
            try:
                self._publish_state()
            except Exception as e:  # publishing after shutdown started
                if self._running:
                    self.get_logger().error(f"publish failed: {e}")
                break
            finally:
                self._answer_resets(resets)

    def _answer_resets(self, served: list) -> None:
        for done, result in served:
            result["stamp"] = self._last_frame_stamp
            done.set()

    def _publish_state(self) -> None:
        rgb = self.world.render()
        success = self.world.success
        privileged = self.world.privileged_observation
        stamp = sec_to_stamp(self._now())
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=stamp))
        self._publish_arm_state(stamp)
        self.pub_success.publish(Bool(data=bool(success)))
        self._publish_privileged([f"obs_{i:02d}" for i in range(len(privileged))], privileged, stamp)
        self._publish_camera(rgb, stamp)


def main(args=None) -> int:
    # Single-threaded: the work has its own thread; see lapa_ros.interfaces.ros_common.run_node.
    return run_node(SimRobotNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
