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
policy then slows the simulation instead of falling behind it.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from typing import Optional

import numpy as np
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from geometry_msgs.msg import PoseStamped, TwistStamped
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node

from lapa_sim.tasks import UnknownTaskError, get_task, task_names

from lapa_ros.interfaces.messages import image_msg, pinhole_camera_info, pose_msg, sec_to_stamp, stamp_to_sec, twist_to_arrays
from lapa_ros.interfaces.ros_common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, Param, StartupError, declare_params, run_node

PARAMS = (
    Param("task", "push", "Simulated task (see lapa_sim/tasks.yaml). Takes effect at the next sim/reset."),
    Param("seed", 0, "Seed of the next episode's object layout; each reset then adds 1.", range=(0, 2**31 - 1)),
    Param("image_width", 128, "Camera image width [px].", read_only=True, range=(16, 1920)),
    Param("image_height", 128, "Camera image height [px].", read_only=True, range=(16, 1080)),
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
    Param("camera_frame", "sim_camera_optical_frame", "frame_id of camera images.", read_only=True),
)


class SimRobotNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_robot", **kwargs)
        self.p = declare_params(self, PARAMS)
        try:
            robot = get_task(self.p.task).robot
        except UnknownTaskError as e:
            raise StartupError(f"sim_robot: {e}") from e
        if robot != "sawyer":   # the Panda's tasks run in panda_sim (graph argument robot:=panda)
            raise StartupError(f"sim_robot: task '{self.p.task}' runs on the {robot}; Sawyer tasks: "
                               f"{', '.join(task_names('sawyer'))}")
        self._command_cv = threading.Condition()
        self._publishers_ready = threading.Event()
        self._reset_requests: "queue.Queue" = queue.Queue()
        self._running = True
        # The world lives in the loop thread: its OpenGL (EGL) context is bound to the thread that made it.
        self._ready = threading.Event()
        self._startup_error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._loop, name="sim_robot_loop", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=120.0)
        if self._startup_error is not None or not self._ready.is_set():
            self._running = False
            raise StartupError(f"sim_robot: the simulator did not start: {self._startup_error or 'timeout'}")
        self._period = self.world.control_period
        self._next_seed = self.p.seed + 1
        self._episode_seed = self.p.seed
        self._pending_task: Optional[str] = None
        self._sim_time = 0.0
        self._last_frame_stamp = 0.0
        # latest command: (linear velocity, time received [s, node clock], header stamp [s])
        self._velocity = np.zeros(3)
        self._velocity_time = -math.inf
        self._velocity_stamp = -math.inf
        self._gripper = 0.0
        self.rejected_commands = 0
        self._warned_angular = False

        self.pub_image = self.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.pub_info = self.create_publisher(CameraInfo, "camera/camera_info", SENSOR_QOS)
        self.pub_joints = self.create_publisher(JointState, "joint_states", COMMAND_QOS)
        self.pub_pose = self.create_publisher(PoseStamped, "ee_pose", COMMAND_QOS)
        self.pub_success = self.create_publisher(Bool, "sim/success", COMMAND_QOS)
        self.pub_task = self.create_publisher(String, "sim/task", LATCHED_QOS)
        self.pub_privileged = self.create_publisher(JointState, "sim/privileged_state", COMMAND_QOS)
        self.pub_clock = None if self.p.real_time else self.create_publisher(Clock, "/clock", COMMAND_QOS)
        self.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", self._on_twist, COMMAND_QOS)
        self.create_subscription(Float64, "gripper/command", self._on_gripper, COMMAND_QOS)
        self.create_service(Trigger, "sim/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.pub_task.publish(String(data=self.world.task.name))
        self._publishers_ready.set()
        mode = "real time" if self.p.real_time else ("lockstep" if self.p.lockstep else "as fast as possible")
        self.get_logger().info(f"task '{self.world.task.name}', {1.0 / self._period:.1f} Hz, "
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
        with self._command_cv:
            self._velocity = linear
            self._velocity_time = self._now()
            self._velocity_stamp = stamp
            self._command_cv.notify_all()

    def _on_gripper(self, msg: Float64) -> None:
        if not math.isfinite(msg.data):
            self.rejected_commands += 1
            self.get_logger().warning("ignoring gripper command NaN/Inf", throttle_duration_sec=1.0)
            return
        self._gripper = min(max(float(msg.data), 0.0), 1.0)

    def _on_set_parameters(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "task":
                if prm.value not in task_names("sawyer"):
                    return SetParametersResult(successful=False,
                                               reason=str(UnknownTaskError(prm.value, task_names("sawyer"))))
                self._pending_task = prm.value
            elif prm.name == "seed":
                self._next_seed = int(prm.value)
        return SetParametersResult(successful=True)

    def _on_reset(self, request, response):
        done = threading.Event()
        result = {}
        self._reset_requests.put((done, result))
        with self._command_cv:
            self._command_cv.notify_all()
        if not done.wait(timeout=30.0):
            response.success, response.message = False, "simulator did not reset within 30 s"
            return response
        response.success = "error" not in result
        # The stamp of the episode's first image: frames stamped earlier belong to the previous episode.
        response.message = result.get("error") or \
            f"task={result['task']} seed={result['seed']} stamp={result['stamp']:.9f}"
        return response

    def _do_reset(self) -> dict:
        seed = self._next_seed
        if self._pending_task and self._pending_task != self.world.task.name:
            self.world.set_task(self._pending_task, seed=seed)
            self.pub_task.publish(String(data=self.world.task.name))
        else:
            self.world.reset(seed)
        self._pending_task = None
        self._episode_seed = seed
        self._next_seed = seed + 1
        with self._command_cv:
            self._velocity = np.zeros(3)
            self._velocity_time = -math.inf
        return {"task": self.world.task.name, "seed": seed}

    # ------------------------------------------------------------------ loop
    def _command_for_step(self) -> np.ndarray:
        with self._command_cv:
            if self.p.lockstep and not self.p.real_time:
                self._command_cv.wait_for(lambda: self._answers_last_frame() or not self._running
                                          or not self._reset_requests.empty(), timeout=self.p.lockstep_timeout)
            fresh = (self._now() - self._velocity_time) <= self.p.command_timeout or \
                (self.p.lockstep and not self.p.real_time and self._answers_last_frame())
            return self._velocity.copy() if fresh else np.zeros(3)

    def _answers_last_frame(self) -> bool:
        return self._velocity_stamp >= self._last_frame_stamp - 1e-6

    def _loop(self) -> None:
        from lapa_sim.world import SimWorld

        try:
            self.world = SimWorld(self.p.task, seed=self.p.seed, image_size=(self.p.image_height, self.p.image_width),
                                  substeps=self.p.substeps)
        except Exception as e:  # reported by the constructor as a StartupError
            self._startup_error = e
            self._ready.set()
            return
        self._ready.set()
        self._publishers_ready.wait()
        try:
            self._run()
        finally:
            self.world.close()

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
                self._sim_time += self._period
            try:
                self._publish_state()
            except Exception as e:  # publishing after shutdown started
                if self._running:
                    self.get_logger().error(f"publish failed: {e}")
                break
            finally:
                self._answer_resets(resets)

    def _serve_resets(self) -> list:
        """Reset for every queued request; the requests are answered after the first frame is out."""
        served = []
        while not self._reset_requests.empty():
            done, result = self._reset_requests.get()
            try:
                result.update(self._do_reset())
            except Exception as e:
                result["error"] = f"reset failed: {e}"
            served.append((done, result))
        return served

    def _answer_resets(self, served: list) -> None:
        for done, result in served:
            result["stamp"] = self._last_frame_stamp
            done.set()

    def _publish_state(self) -> None:
        rgb = self.world.render()
        joints = self.world.joint_positions()
        joint_vel = self.world.joint_velocities()
        names = list(self.world.joint_names)
        pos, quat = self.world.ee_position, self.world.ee_orientation
        success = self.world.success
        privileged = self.world.privileged_observation
        now = self._now()
        stamp = sec_to_stamp(now)
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=stamp))
        js = JointState(name=names, position=joints.tolist(), velocity=joint_vel.tolist())
        js.header.stamp = stamp
        self.pub_joints.publish(js)
        self.pub_pose.publish(pose_msg(pos, quat, stamp, self.p.base_frame))
        self.pub_success.publish(Bool(data=bool(success)))
        ps = JointState(name=[f"obs_{i:02d}" for i in range(len(privileged))], position=privileged.tolist())
        ps.header.stamp = stamp
        self.pub_privileged.publish(ps)
        self.pub_info.publish(pinhole_camera_info(rgb.shape[1], rgb.shape[0], self.world.camera.fovy, stamp,
                                                  self.p.camera_frame))
        self._last_frame_stamp = stamp_to_sec(stamp)  # what subscribers see, after nanosecond rounding
        self.pub_image.publish(image_msg(rgb, stamp, self.p.camera_frame))

    def close(self) -> None:
        self._running = False
        self._publishers_ready.set()
        with self._command_cv:
            self._command_cv.notify_all()
        self._thread.join(timeout=5.0)


def main(args=None) -> int:
    # Single-threaded: the work has its own thread; see lapa_ros.interfaces.ros_common.run_node.
    return run_node(SimRobotNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
