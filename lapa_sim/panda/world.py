"""The simulated Panda: a position-controlled arm at a table, driven like ros2_control drives a Franka.

Time runs in physics steps (``timestep``, 2 ms by default). The arm's joint servos track a reference
sampled at every physics step from one of:
  * a joint trajectory  (follow_trajectory: joint_trajectory_controller semantics, see trajectory.py)
  * a position target   (set_joint_targets: forward_position_controller)
  * an end-effector velocity (step / set_ee_velocity: a servo doing damped least-squares IK on the
    model, one step per control tick, as the arm controller does over ROS; used in-process by the
    episode generator and the tests)
The gripper follows its command (0 open .. 1 closed) at the URDF finger speed.

Control ticks come every ``1 / control_rate`` s (100 Hz by default; the ROS node publishes
joint_states on them) and camera frames every ``1 / frame_rate`` s (30 Hz), on the physics step
nearest their time. ``step(velocity, gripper)`` runs one frame period, as SimWorld.step runs one
control period: episode generation drives both worlds the same way.

Plain Python, no ROS import: the ROS node (lapa_ros.nodes.panda_sim), the generator and the tests
drive this class. Not thread-safe: callers serialize access.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..tasks import CameraSpec, TaskSpec, ViewSpec, get_task
from ..world_common import ArmWorld, StepResult, apply_light, camera_id, free_camera, make_renderer
from .envs import make_env
from .experts import make_expert
from .model import (ARM_JOINTS, ARM_KP, ARM_KV, FINGER_JOINTS, FINGER_OPEN, GRIPPER, Q_HOME, build_model,
                    find_urdf, urdf_joint_limits)
from .trajectory import JointTrajectoryFollower

os.environ.setdefault("MUJOCO_GL", "egl")

SERVO_DAMPING = 0.02         # damped least squares
SERVO_ORIENTATION_GAIN = 5.0  # [1/s] holds the hand orientation of the episode start
SERVO_NULLSPACE_GAIN = 1.0    # [1/s] pulls the redundant elbow towards the home posture
SERVO_VELOCITY_SCALE = 0.5    # of the URDF joint velocity limits
SERVO_LIMIT_MARGIN = 0.05     # [rad]
SERVO_TRACKING_TOLERANCE = 0.05   # [rad] beyond this the next IK step starts from the measured joints


class PandaWorld(ArmWorld):
    """One Panda task: arm, table, objects and a camera.

    >>> world = PandaWorld("panda-reach", seed=0)
    >>> world.step(np.array([0.0, 0.1, 0.0]), gripper=0.0)   # 10 cm/s along +y for one frame period
    """

    ARM_JOINTS = ARM_JOINTS
    GRIPPER = GRIPPER

    def __init__(self, task: str | TaskSpec = "panda-reach", *, seed: int = 0,
                 image_size: Tuple[int, int] = (128, 128), camera: Optional[CameraSpec] = None,
                 render: bool = True, view: Optional[ViewSpec] = None, timestep: float = 0.002,
                 control_rate: float = 100.0, frame_rate: float = 30.0, max_speed: float = 0.5,
                 urdf: Optional[str] = None):
        import mujoco

        if not 0.0 < timestep <= 0.002:
            raise ValueError(f"physics timestep must be in (0, 0.002] s, got {timestep}")
        ticks = 1.0 / (control_rate * timestep)
        if control_rate < 100.0 or abs(ticks - round(ticks)) > 1e-6 or round(ticks) < 1:
            raise ValueError(f"control_rate must be >= 100 Hz and a whole number of {timestep * 1e3:g} ms physics "
                             f"steps per tick, got {control_rate} Hz")
        if not 1.0 <= frame_rate <= control_rate:
            raise ValueError(f"frame_rate must be in [1, control_rate], got {frame_rate}")
        self.timestep = float(timestep)
        self.control_rate = float(control_rate)
        self.frame_rate = float(frame_rate)
        self.tick_steps = int(round(ticks))
        self.max_speed = float(max_speed)
        self.image_height, self.image_width = int(image_size[0]), int(image_size[1])
        self._camera_override = camera
        self.view = view
        self._render_enabled = render
        self._renderer = None
        self.urdf_text = urdf if urdf is not None else find_urdf().read_text()
        self.model = build_model(self.urdf_text, timestep)
        self._lights = (self.model.light_diffuse.copy(), self.model.light_specular.copy())
        self.data = mujoco.MjData(self.model)
        self._kin = mujoco.MjData(self.model)   # the servo's kinematics (at the reference, not the measured joints)
        m = self.model
        self._arm_qpos = np.array([m.joint(n).qposadr[0] for n in ARM_JOINTS])
        self._arm_dof = np.array([m.joint(n).dofadr[0] for n in ARM_JOINTS])
        self._finger_qpos = np.array([m.joint(n).qposadr[0] for n in FINGER_JOINTS])
        self._finger_dof = np.array([m.joint(n).dofadr[0] for n in FINGER_JOINTS])
        self._cube_qpos = m.joint("cube_free").qposadr[0]
        self._goal_mocap = m.body("goal").mocapid[0]
        self._target_mocap = m.body("target").mocapid[0]
        self._tcp_site = m.site("tcp").id
        self._finger_actuator = m.actuator("panda_finger_servo").id
        self._arm_actuators = np.array([m.actuator(f"{n}_servo").id for n in ARM_JOINTS])
        self._ff = np.array(ARM_KV) / np.array(ARM_KP)   # ctrl offset giving the velocity feedforward
        limits = [urdf_joint_limits(self.urdf_text, n) for n in ARM_JOINTS]
        self.lower = np.array([lim["lower"] for lim in limits])
        self.upper = np.array([lim["upper"] for lim in limits])
        self.velocity_limits = np.array([lim["velocity"] for lim in limits])
        self.finger_speed = urdf_joint_limits(self.urdf_text, FINGER_JOINTS[0])["velocity"]
        if not math.isfinite(self.finger_speed):
            self.finger_speed = 0.2
        self.follower = JointTrajectoryFollower(ARM_JOINTS, self.lower, self.upper)
        self.task: TaskSpec = get_task(task) if isinstance(task, str) else task
        self.seed = int(seed)
        self._set_env()
        self._setup_renderer()
        self.reset(seed)

    # ------------------------------------------------------------------ setup
    def _set_env(self) -> None:
        if self.task.robot != "panda":
            raise ValueError(f"task '{self.task.name}' runs on the {self.task.robot}, not the panda")
        self.env = make_env(self.task.env)
        self._expert = make_expert(self.task.expert) if self.task.expert else None
        self.camera = self._camera_override or self.task.camera
        if self.view is not None and self.camera.name is None:
            self.camera = self.view.apply_camera(self.camera)

    def _setup_renderer(self) -> None:
        if not self._render_enabled:
            return
        model = self.model
        model.vis.global_.fovy = self.camera.fovy
        if self.view is not None:   # the model's own lights scaled (set_task sets up the renderer again)
            apply_light(model, dict(self.view.light), *self._lights)
        if self._renderer is None:
            self._renderer = make_renderer(model, self.image_height, self.image_width)
        if self.camera.name is not None:
            model.cam_fovy[camera_id(model, self.camera.name)] = self.camera.fovy
            self._mjcam = self.camera.name
        else:
            self._mjcam = free_camera(self.camera)

    def set_task(self, task: str | TaskSpec, seed: Optional[int] = None) -> None:
        """Switch task (same model, new objects and camera) and reset."""
        self.task = get_task(task) if isinstance(task, str) else task
        if seed is not None:
            self.seed = int(seed)
        self._set_env()
        self._setup_renderer()
        self.reset(self.seed)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: Optional[int] = None) -> None:
        """New episode: the arm at home, gripper open, objects laid out as a function of the seed alone."""
        import mujoco

        if seed is not None:
            self.seed = int(seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self._arm_qpos] = Q_HOME
        d.qpos[self._finger_qpos] = FINGER_OPEN
        rng = np.random.default_rng(self.seed)
        layout = self.env.layout(rng, self._tcp_of(Q_HOME))
        x, y, yaw = layout["cube"]
        d.qpos[self._cube_qpos:self._cube_qpos + 7] = [x, y, 0.025, math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        d.mocap_pos[self._goal_mocap] = layout["goal"]
        d.mocap_pos[self._target_mocap] = layout["target"]
        mujoco.mj_forward(m, d)
        self._steps = 0
        self.step_count = 0
        self._success = False
        self.follower.hold(Q_HOME, now=0.0)
        self._finger_ref = FINGER_OPEN
        self._finger_target = FINGER_OPEN
        self._servo_velocity: Optional[np.ndarray] = None
        self._servo_q: Optional[np.ndarray] = None
        self._hand_rotation = d.site_xmat[self._tcp_site].reshape(3, 3).copy()
        self._apply_controls()
        self._check_success()

    @property
    def time(self) -> float:
        """Simulated seconds since the reset."""
        return self._steps * self.timestep

    @property
    def physics_steps(self) -> int:
        return self._steps

    @property
    def control_period(self) -> float:
        """Seconds per step(): one camera frame period."""
        return 1.0 / self.frame_rate

    def frame_step(self, k: int) -> int:
        """The physics step of the k-th camera frame of the episode (frame 0 at the reset)."""
        return int(round(k / (self.frame_rate * self.timestep)))

    def next_frame_step(self) -> int:
        """The physics step of the next camera frame after now."""
        k = int(self._steps * self.frame_rate * self.timestep)
        while self.frame_step(k) <= self._steps:
            k += 1
        return self.frame_step(k)

    # ------------------------------------------------------------------ commands
    def follow_trajectory(self, joint_names: Sequence[str], points, start_time: Optional[float] = None,
                          received: Optional[float] = None) -> None:
        """joint_trajectory_controller: points = [(positions, velocities or None, time_from_start)], times on
        this world's clock (``time``; ``received``: when it arrived, if before now); raises TrajectoryError
        (and keeps the current motion) if refused."""
        self.follower.set_trajectory(joint_names, points, self.time, self.data.qpos[self._arm_qpos],
                                     self.data.qvel[self._arm_dof], start_time, received)
        self._servo_velocity = None

    def set_joint_targets(self, positions: Sequence[float], joint_names: Optional[Sequence[str]] = None) -> None:
        """forward_position_controller: position targets (order of ARM_JOINTS, or of joint_names)."""
        q = np.asarray(positions, dtype=float)
        if joint_names is not None:
            if sorted(joint_names) != sorted(ARM_JOINTS) or len(joint_names) != len(q):
                from .trajectory import TrajectoryError
                raise TrajectoryError(f"position command for joints {list(joint_names)}; this arm has "
                                      f"{list(ARM_JOINTS)}", "missing_joints")
            q = q[[list(joint_names).index(n) for n in ARM_JOINTS]]
        self.follower.set_position_target(q, self.time)
        self._servo_velocity = None

    def set_gripper(self, command: float) -> None:
        """0 open .. 1 closed (clipped); the fingers move at the URDF finger speed."""
        c = float(command)
        if not math.isfinite(c):
            raise ValueError(f"gripper command is not finite: {command}")
        self._finger_target = FINGER_OPEN * (1.0 - min(max(c, 0.0), 1.0))

    def set_ee_velocity(self, linear_velocity: Sequence[float]) -> None:
        """Servo the tool centre point at this linear velocity [m/s] (base frame), orientation held."""
        v = np.asarray(linear_velocity, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"non-finite velocity: {v}")
        n = float(np.linalg.norm(v))
        self._servo_velocity = v * (self.max_speed / n) if n > self.max_speed else v

    def hold(self) -> None:
        """Stop where the arm is."""
        self.follower.hold(self.data.qpos[self._arm_qpos], self.time)
        self._servo_velocity = None

    # ------------------------------------------------------------------ time
    def advance(self, steps: int) -> None:
        """Run ``steps`` physics steps (control ticks at their steps)."""
        import mujoco

        for _ in range(int(steps)):
            if self._steps % self.tick_steps == 0:
                self._tick()
            self._apply_controls()
            mujoco.mj_step(self.model, self.data)
            self._steps += 1
        if self._steps % self.tick_steps == 0:
            self._check_success()

    def step(self, linear_velocity: np.ndarray, gripper: float) -> StepResult:
        """Hold (linear velocity [m/s], gripper [0 open .. 1 closed]) for one frame period."""
        v = np.asarray(linear_velocity, dtype=np.float64).reshape(3)
        if not (np.all(np.isfinite(v)) and np.isfinite(gripper)):
            raise ValueError(f"non-finite command: velocity={v}, gripper={gripper}")
        self.set_ee_velocity(v)
        self.set_gripper(gripper)
        self.advance(self.next_frame_step() - self._steps)
        self.step_count += 1
        return StepResult(success=self._success, step=self.step_count, done=self.done)

    def _tick(self) -> None:
        self._check_success()
        if self._servo_velocity is not None:
            self._servo_tick()

    def _apply_controls(self) -> None:
        q_ref, qd_ref = self.follower.sample(self.time)
        self.data.ctrl[self._arm_actuators] = q_ref + self._ff * qd_ref
        step = self.finger_speed * self.timestep
        self._finger_ref += min(max(self._finger_target - self._finger_ref, -step), step)
        self.data.ctrl[self._finger_actuator] = self._finger_ref

    def _servo_tick(self) -> None:
        """One damped least-squares IK step of one control period from the last target (or, when the arm
        lags beyond the tracking tolerance, from the measured joints), sent as a one-point trajectory."""
        import mujoco

        dt = self.tick_steps * self.timestep
        measured = self.data.qpos[self._arm_qpos].copy()
        base = self._servo_q
        if base is None or np.max(np.abs(base - measured)) > SERVO_TRACKING_TOLERANCE:
            base = measured
        self._kin.qpos[:] = self.data.qpos
        self._kin.qpos[self._arm_qpos] = base
        mujoco.mj_kinematics(self.model, self._kin)
        mujoco.mj_comPos(self.model, self._kin)
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, self._kin, jacp, jacr, self._tcp_site)
        J = np.vstack([jacp[:, self._arm_dof], jacr[:, self._arm_dof]])
        R = self._kin.site_xmat[self._tcp_site].reshape(3, 3)
        w = SERVO_ORIENTATION_GAIN * _rotation_vector(self._hand_rotation @ R.T)
        twist = np.concatenate([self._servo_velocity, w])
        A = J @ J.T + SERVO_DAMPING ** 2 * np.eye(6)
        J_pinv = J.T @ np.linalg.solve(A, np.eye(6))
        qd = J_pinv @ twist + (np.eye(7) - J_pinv @ J) @ (SERVO_NULLSPACE_GAIN * (Q_HOME - base))
        ratio = np.max(np.abs(qd) / (SERVO_VELOCITY_SCALE * self.velocity_limits))
        if ratio > 1.0:
            qd /= ratio
        target = np.clip(base + qd * dt, self.lower + SERVO_LIMIT_MARGIN, self.upper - SERVO_LIMIT_MARGIN)
        self._servo_q = target
        now = self.time
        ref = self.follower.sample(now)[0]
        self.follower.set_trajectory(ARM_JOINTS, [(target, None, dt)], now, ref)

    def _tcp_of(self, q: np.ndarray) -> np.ndarray:
        import mujoco

        self._kin.qpos[:] = self.data.qpos
        self._kin.qpos[self._arm_qpos] = q
        mujoco.mj_kinematics(self.model, self._kin)
        return self._kin.site_xpos[self._tcp_site].copy()

    # ------------------------------------------------------------------ outcome
    def _check_success(self) -> None:
        if not self._success and self.env.success(self.privileged_dict()):
            self._success = True

    # ------------------------------------------------------------------ sensing
    def render(self) -> np.ndarray:
        """Current camera image, uint8 (H, W, 3) RGB."""
        if self._renderer is None:
            raise RuntimeError("rendering is disabled for this world (render=False)")
        self._renderer.update_scene(self.data, camera=self._mjcam)
        return np.ascontiguousarray(self._renderer.render())

    @property
    def joint_names(self) -> Tuple[str, ...]:
        return ARM_JOINTS + FINGER_JOINTS

    def joint_positions(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[self._arm_qpos], self.data.qpos[self._finger_qpos]])

    def joint_velocities(self) -> np.ndarray:
        return np.concatenate([self.data.qvel[self._arm_dof], self.data.qvel[self._finger_dof]])

    def joint_efforts(self) -> np.ndarray:
        """Actuator torques [N m] of the arm joints and finger forces [N]."""
        f = self.data.actuator_force
        finger = float(f[self._finger_actuator])
        return np.concatenate([f[self._arm_actuators], [finger, finger]])

    @property
    def arm_positions(self) -> np.ndarray:
        return self.data.qpos[self._arm_qpos].copy()

    @property
    def ee_position(self) -> np.ndarray:
        """Tool centre point (panda_hand_tcp) in the base frame panda_link0 [m]."""
        return self.data.site_xpos[self._tcp_site].copy()

    @property
    def ee_rotation(self) -> np.ndarray:
        return self.data.site_xmat[self._tcp_site].reshape(3, 3).copy()

    @property
    def ee_orientation(self) -> np.ndarray:
        """Tool centre point orientation as a quaternion (x, y, z, w)."""
        import mujoco

        q = np.zeros(4)
        mujoco.mju_mat2Quat(q, self.data.site_xmat[self._tcp_site])
        return np.array([q[1], q[2], q[3], q[0]])

    @property
    def gripper_state(self) -> float:
        """0 open .. 1 closed, from panda_finger_joint1 as a real stack reads joint_states (see GRIPPER)."""
        return GRIPPER.state(float(self.data.qpos[self._finger_qpos[0]]))

    @property
    def privileged_names(self) -> Tuple[str, ...]:
        return self.env.privileged_names

    def privileged_dict(self) -> Dict[str, float]:
        d = self.data
        tcp = d.site_xpos[self._tcp_site]
        cube = d.qpos[self._cube_qpos:self._cube_qpos + 3]
        goal = d.mocap_pos[self._goal_mocap] if self.task.env != "panda-reach" else d.mocap_pos[self._target_mocap]
        values = {"tcp_x": tcp[0], "tcp_y": tcp[1], "tcp_z": tcp[2], "gripper": self.gripper_state,
                  "cube_x": cube[0], "cube_y": cube[1], "cube_z": cube[2],
                  "goal_x": goal[0], "goal_y": goal[1], "goal_z": goal[2]}
        return {n: float(values[n]) for n in self.privileged_names}

    @property
    def privileged_observation(self) -> np.ndarray:
        """The task's privileged state (names: privileged_names): what the scripted expert sees.
        A real robot has no such thing; only the simulator publishes it."""
        s = self.privileged_dict()
        return np.array([s[n] for n in self.privileged_names], dtype=np.float64)

    # ------------------------------------------------------------------ expert
    def expert_command(self, observation: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float]:
        """The scripted expert's command for the current (or given) privileged state:
        (linear velocity [m/s], gripper [0..1])."""
        if self._expert is None:
            raise ValueError(f"task '{self.task.name}' has no scripted expert in the catalogue")
        obs = self.privileged_observation if observation is None else observation
        return self._expert(self.privileged_names, obs)


def _rotation_vector(R: np.ndarray) -> np.ndarray:
    """Axis * angle of a rotation matrix."""
    import mujoco

    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R).reshape(9))
    v = np.zeros(3)
    mujoco.mju_quat2Vel(v, q, 1.0)
    return v
