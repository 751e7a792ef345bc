"""panda_sim: the simulated Franka Panda (lapa_sim.panda) behind ros2_control's standard topics.

The joint-level counterpart of sim_robot: the arm takes what joint_trajectory_controller and
forward_position_controller take on a real Franka, so the arm controller's joint backends (IK on
urdf/panda.urdf) run closed loop in simulation. Started under the node name `sim_robot` (the
simulated robot of the sim graphs): `lapa eval`, the episode runner, the recorder and the scripted
expert use the same names for either robot.

Subscribes (relative names):
  joint_trajectory_controller/joint_trajectory  trajectory_msgs/JointTrajectory: joint_trajectory_controller
                        semantics (lapa_sim.panda.trajectory): joints by name in any order, points after
                        the header stamp (0: on arrival), linear (or cubic, with velocities) interpolation
                        from the arm's state, a new trajectory replaces the current one
  forward_position_controller/commands          std_msgs/Float64MultiArray: joint position targets in the
                        order of the `joints` parameter
  gripper/command                               std_msgs/Float64, 0 open .. 1 closed
  Refused, with a log line (first time, then at most once per `log_throttle` s with a count), the arm
  keeping its current motion: unknown/missing/duplicate joint names, wrong lengths, NaN/Inf, a
  trajectory that ends before it arrives or was stamped before the current episode, a position
  command further than `max_position_jump` from the arm (a real Franka stops on such a jump).
Publishes:
  joint_states          sensor_msgs/JointState: 7 arm joints + 2 finger joints (position, velocity,
                        effort) at `update_rate`
  ee_pose               geometry_msgs/PoseStamped: panda_hand_tcp in `base_frame` (panda_link0), at update_rate
  camera/image_raw, camera/camera_info   rgb8 + pinhole info at `camera_rate`, sensor-data QoS
  sim/success           std_msgs/Bool, latched per episode, with each frame
  sim/task              std_msgs/String, transient local: the current task
  sim/privileged_state  sensor_msgs/JointState as a stamped named vector (tcp, gripper, cube, goal: the
                        task's names), with each frame. Sim only, for the scripted expert.
  /clock                rosgraph_msgs/Clock when real_time is false
Services:
  sim/reset             std_srvs/Trigger: new episode, as sim_robot's: "task=<name> seed=<n> stamp=<s>",
                        stamp = the header stamp of the episode's first image
Parameters: PARAMS below and config/panda_sim.yaml; `task` and `seed` take effect at the next reset.

Timing: physics every `timestep` (2 ms), controllers and joint_states every 1/update_rate, camera
frames every 1/camera_rate. real_time true: on the wall clock, stamped with it. real_time false: as
fast as possible in simulated time with /clock (run the other nodes with use_sim_time); with
lockstep, each controller period waits (up to lockstep_timeout) for the next arm command, so a
controller running on /clock keeps pace with the simulation.
"""
from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Bool, Float64, Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from lapa_models.text import printable
from lapa_sim.panda.model import ARM_JOINTS, SCENE_CAMERA, WRIST_FOVY
from lapa_sim.panda.trajectory import JointTrajectoryFollower, TrajectoryError
from lapa_sim.tasks import CameraSpec

from lapa_ros.core.events import EventLog, suffix
from lapa_ros.interfaces.messages import sec_to_stamp, stamp_to_sec
from lapa_ros.interfaces.ros_common import COMMAND_QOS, Param, StartupError, run_node
from lapa_ros.nodes.sim_common import (CAMERA_FRAME, IMAGE_HEIGHT, IMAGE_WIDTH, RESET_CLOCK_GAP, SEED,
                                       SimulatedArmNode)

MODEL_CAMERAS = {"scene": SCENE_CAMERA["fovy"], "wrist": WRIST_FOVY}   # name -> vertical field of view [deg]

PARAMS = (
    Param("task", "panda-reach", "Simulated Panda task (robot: panda in lapa_sim/tasks.yaml). Takes effect at the "
                                 "next sim/reset."),
    SEED,
    IMAGE_WIDTH,
    IMAGE_HEIGHT,
    Param("camera", "", "Camera: empty for the task's (catalogue), or one of the model: scene, wrist.", read_only=True),
    Param("timestep", 0.002, "Physics step [s].", read_only=True, range=(0.0001, 0.002)),
    Param("update_rate", 100.0, "Controller update rate [Hz]: commands applied, joint_states and ee_pose "
                                "published. A whole number of physics steps.", read_only=True, range=(100.0, 1000.0)),
    Param("camera_rate", 30.0, "Camera frame rate [Hz].", read_only=True, range=(1.0, 100.0)),
    Param("real_time", True, "Run on the wall clock; false: as fast as possible in simulated time with /clock.",
          read_only=True),
    Param("lockstep", False, "With real_time false: each controller period waits for the next arm command.",
          read_only=True),
    Param("lockstep_timeout", 0.5, "Longest wait for an arm command in lockstep mode [s] (wall clock).",
          range=(0.001, 60.0)),
    Param("joints", list(ARM_JOINTS), "Arm joints in the order of forward_position_controller/commands.",
          read_only=True),
    Param("open_loop_control", False, "Trajectories start from the last reference instead of the measured "
                                      "joints (joint_trajectory_controller's open_loop_control).", read_only=True),
    Param("max_position_jump", 0.2, "Position commands further than this [rad] from the measured joints are "
                                    "refused (a real Franka stops on such a jump).", read_only=True,
          range=(0.001, 10.0)),
    Param("log_throttle", 5.0, "After its first line, each kind of refused command is logged at most once per "
                               "this many seconds (with its count).", read_only=True, range=(0.0, 3600.0)),
    Param("base_frame", "panda_link0", "Frame of ee_pose (the URDF's base link).", read_only=True),
    CAMERA_FRAME,
)


class PandaSimNode(SimulatedArmNode):
    NAME, ROBOT, ROBOT_LABEL = "panda_sim", "panda", "Panda"
    PARAMS = PARAMS

    def _setup(self) -> None:
        if sorted(self.p.joints) != sorted(ARM_JOINTS):
            raise StartupError(f"panda_sim: parameter 'joints' must list the arm joints {', '.join(ARM_JOINTS)} in "
                               f"some order, got {list(self.p.joints)}")
        self.events = EventLog(self.p.log_throttle)
        self._checker = JointTrajectoryFollower(ARM_JOINTS)   # validates trajectories on arrival
        self._trajectory = None          # latest JointTrajectory not yet applied
        self._positions = None           # latest position command not yet applied
        self._gripper: Optional[float] = None
        self._arm_commands = 0           # arm commands received (lockstep counts them)

    def _make_world(self):
        from lapa_sim.panda.world import PandaWorld

        camera = None
        if self.p.camera:
            if self.p.camera not in MODEL_CAMERAS:
                raise ValueError(f"camera '{self.p.camera}': the model has {', '.join(MODEL_CAMERAS)}")
            camera = CameraSpec(name=self.p.camera, fovy=MODEL_CAMERAS[self.p.camera])
        return PandaWorld(self.p.task, seed=self.p.seed, image_size=(self.p.image_height, self.p.image_width),
                          camera=camera, timestep=self.p.timestep, control_rate=self.p.update_rate,
                          frame_rate=self.p.camera_rate)

    def _create_inputs(self) -> None:
        # The gripper first (see sim_robot): taken before an arm command that waits with it.
        self.create_subscription(Float64, "gripper/command", self._on_gripper, COMMAND_QOS)
        self.create_subscription(JointTrajectory, "joint_trajectory_controller/joint_trajectory", self._on_trajectory,
                                 COMMAND_QOS)
        self.create_subscription(Float64MultiArray, "forward_position_controller/commands", self._on_positions,
                                 COMMAND_QOS)

    def _startup_message(self, mode: str) -> str:
        return (f"Panda, task '{self.world.task.name}': physics {self.p.timestep * 1e3:g} ms, "
                f"controllers {self.p.update_rate:g} Hz, camera {self.p.camera_rate:g} Hz "
                f"{self.p.image_width}x{self.p.image_height}, {mode}")

    # ------------------------------------------------------------------ inputs (executor thread)
    def _refuse(self, key: str, message: str) -> None:
        self.rejected_commands += 1
        due = self.events.report(key, time.monotonic())
        if due is not None:
            self.get_logger().warning(f"{message}; the arm keeps its current motion" + suffix(*due))

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        points = [(list(p.positions), list(p.velocities), p.time_from_start.sec + p.time_from_start.nanosec * 1e-9)
                  for p in msg.points]
        try:   # what does not depend on time, on arrival (the rest when applied, at the next controller update)
            self._checker.check_trajectory(list(msg.joint_names), points)
        except TrajectoryError as e:
            self._refuse(f"trajectory.{e.kind}", f"joint trajectory refused: {printable(str(e), 300)}")
            return
        received = self._clock_now() if self.p.real_time else None   # simulated time: applied on arrival
        with self._lock:
            self._trajectory = (list(msg.joint_names), points, stamp_to_sec(msg.header.stamp), received)
            self._positions = None
            self._arm_commands += 1
            self._lock.notify_all()

    def _on_positions(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=float)
        if data.shape != (len(self.p.joints),):
            self._refuse("positions.length", f"position command refused: {data.size} values for the "
                                              f"{len(self.p.joints)} joints {', '.join(self.p.joints)}")
            return
        if not np.all(np.isfinite(data)):
            self._refuse("positions.nan", "position command refused: NaN/Inf")
            return
        with self._lock:
            self._positions = data
            self._trajectory = None
            self._arm_commands += 1
            self._lock.notify_all()

    def _on_gripper(self, msg: Float64) -> None:
        if not math.isfinite(msg.data):
            self._refuse("gripper.nan", "gripper command refused: NaN/Inf")
            return
        with self._lock:
            self._gripper = float(msg.data)

    # ------------------------------------------------------------------ loop (simulation thread)
    def _clock_now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _run(self) -> None:
        w = self.world
        self._next_origin = 0.0            # real_time false: the /clock time of the next episode's world time 0
        self._begin_episode()
        while self._running:
            resets = self._serve_resets()
            if resets:
                for done, _ in resets:
                    done.set()
                continue
            tick = (w.physics_steps // w.tick_steps + 1) * w.tick_steps
            target = min(tick, self._next_frame)
            if self._lockstep and w.physics_steps % w.tick_steps == 0:
                self._wait_for_command()
            self._apply_commands()
            w.advance(target - w.physics_steps)
            if self.p.real_time:
                self._pace()
            if not self._running:
                break
            t = self._origin + w.time
            try:
                if self.pub_clock is not None:
                    self.pub_clock.publish(Clock(clock=sec_to_stamp(t)))
                if w.physics_steps % w.tick_steps == 0:
                    self._publish_state(t)
                if w.physics_steps == self._next_frame:
                    self._publish_frame(t)
            except Exception as e:   # publishing after shutdown started
                if self._running:
                    self.get_logger().error(f"publish failed: {e}")
                break

    def _pace(self) -> None:
        """Real time: wait until the wall clock reaches the world's time; resynchronise after a long stall."""
        delay = self._wall_origin + self.world.time - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.25:
            behind = -delay
            self._wall_origin += behind
            self._origin += behind
            due = self.events.report("late", time.monotonic())
            if due is not None:
                self.get_logger().warning(f"simulation fell {behind:.2f} s behind real time (machine busy): that "
                                          "time is skipped" + suffix(*due))

    def _wait_for_command(self) -> None:
        with self._lock:
            self._wait_for_lockstep(lambda: self._arm_commands > self._commands_at_tick)
            self._commands_at_tick = self._arm_commands

    def _apply_commands(self) -> None:
        with self._lock:
            trajectory, positions, gripper = self._trajectory, self._positions, self._gripper
            self._trajectory = self._positions = self._gripper = None
        w = self.world
        if gripper is not None:
            w.set_gripper(gripper)
        if trajectory is not None:
            names, points, stamp, received = trajectory
            start = None if stamp == 0.0 else stamp - self._origin
            received = None if received is None else received - self._origin
            if start is not None and stamp < self._episode_stamp - 1e-9:
                self._refuse("trajectory.stale", f"joint trajectory refused: stamped {self._episode_stamp - stamp:.3f} s "
                                                 "before the current episode began")
            else:
                try:
                    w.follow_trajectory(names, points, start_time=start, received=received)
                except TrajectoryError as e:
                    self._refuse(f"trajectory.{e.kind}", f"joint trajectory refused: {printable(str(e), 300)}")
        if positions is not None:
            q = np.asarray(positions)[[list(self.p.joints).index(n) for n in ARM_JOINTS]]
            jump = float(np.max(np.abs(q - w.arm_positions)))
            if jump > self.p.max_position_jump:
                self._refuse("positions.jump", f"position command refused: {jump:.3f} rad from the arm's position "
                                               f"(max_position_jump {self.p.max_position_jump} rad)")
            else:
                w.set_joint_targets(q)

    # ------------------------------------------------------------------ episodes
    def _begin_episode(self) -> None:
        """World time 0 of the episode (the world was just reset): commands from before it are dropped; stamps
        restart from the wall clock (real time) or continue the simulated clock; the first frame goes out."""
        with self._lock:
            self._trajectory = self._positions = None
            self._gripper = None
            self._commands_at_tick = self._arm_commands
        if self.p.real_time:
            self._origin = self._clock_now()
            self._wall_origin = time.monotonic()
        else:
            self._origin = self._next_origin
            self.pub_clock.publish(Clock(clock=sec_to_stamp(self._origin)))
        self._episode_stamp = stamp_to_sec(sec_to_stamp(self._origin))   # as subscribers see it
        self._publish_state(self._origin)
        self._publish_frame(self._origin)

    def _do_reset(self) -> dict:
        self._next_origin = self._origin + self.world.time + max(1.0 / self.p.update_rate, RESET_CLOCK_GAP)
        seed = self._reset_world()
        self._begin_episode()
        return {"task": self.world.task.name, "seed": seed, "stamp": self._episode_stamp}

    # ------------------------------------------------------------------ outputs
    def _publish_state(self, t: float) -> None:
        self._publish_arm_state(sec_to_stamp(t), effort=self.world.joint_efforts().tolist())

    def _publish_frame(self, t: float) -> None:
        w = self.world
        stamp = sec_to_stamp(t)
        rgb = w.render()
        self._publish_privileged(w.privileged_names, w.privileged_observation, stamp)
        self.pub_success.publish(Bool(data=bool(w.success)))
        self._publish_camera(rgb, stamp)
        self._next_frame = w.next_frame_step()


def main(args=None) -> int:
    # Single-threaded: the simulation has its own thread; see lapa_ros.interfaces.ros_common.run_node.
    return run_node(PandaSimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
