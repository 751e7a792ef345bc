"""The simulated arm: a Meta-World Sawyer task seen through a camera and driven like real hardware.

Commands are what a real arm stack takes: an end-effector linear velocity in m/s (base frame) and a
gripper position in [0, 1] (0 open, 1 closed). One control step holds the command for ``substeps``
Meta-World steps (12.5 ms each), so the default control rate is 20 Hz.

Plain Python with no ROS import: the ROS node (lapa_ros.nodes.sim_robot), the episode generator and
the tests all drive this class.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple

import numpy as np

from lapa_models.data.robot_state import GripperMapping

from .tasks import CameraSpec, TaskSpec, ViewSpec, get_task
from .world_common import ArmWorld, StepResult, apply_light, camera_id, free_camera, make_renderer

os.environ.setdefault("MUJOCO_GL", "egl")

# Meta-World moves the mocap by action * action_scale (1 cm) per 12.5 ms step: 1.0 <-> 0.8 m/s.
METAWORLD_ACTION_SCALE = 0.01
METAWORLD_STEP_SECONDS = 0.0125
# Fastest end-effector speed per axis [m/s]: a full-scale Meta-World action.
MAX_SPEED = METAWORLD_ACTION_SCALE / METAWORLD_STEP_SECONDS
ARM_JOINTS = ("right_j0", "right_j1", "right_j2", "right_j3", "right_j4", "right_j5", "right_j6")
GRIPPER_JOINTS = ("r_close", "l_close")
# Gripper state as a real stack computes it from joint_states: one finger joint mapped linearly from
# its open position (0) to its closed position (1). The Sawyer's right finger travels 0 .. 0.04 m.
# The gripper state of recorded episodes and of the simulated arm's joint_states: r_close, 0 m open,
# 0.04 m closed. Written into generated datasets (info.json "gripper") and from there into model cards.
GRIPPER = GripperMapping("r_close", 0.0, 0.04)


class SimWorld(ArmWorld):
    """One Meta-World task with a camera. Not thread-safe: callers serialize access.

    >>> world = SimWorld("push", seed=0)
    >>> world.step(np.array([0.0, 0.1, 0.0]), gripper=0.0)   # 10 cm/s along +y for one control step
    """

    def __init__(self, task: str | TaskSpec = "push", *, seed: int = 0,
                 image_size: Tuple[int, int] = (128, 128), substeps: int = 4,
                 camera: Optional[CameraSpec] = None, render: bool = True, view: Optional[ViewSpec] = None):
        if substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        self.image_height, self.image_width = int(image_size[0]), int(image_size[1])
        self.substeps = int(substeps)
        self._camera_override = camera
        self.view = view
        self._render_enabled = render
        self._env = None
        self._renderer = None
        self._expert = None
        self.task: TaskSpec = get_task(task) if isinstance(task, str) else task
        self.seed = int(seed)
        self.step_count = 0
        self._success = False
        self._best_reward = 0.0   # the best shaped reward of the episode (ArmWorld.progress)
        self._obs: Optional[np.ndarray] = None
        self._build()
        self.reset(seed)

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        import mujoco  # noqa: F401  (import here: MUJOCO_GL must be set first)
        import metaworld.policies as policies
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as envs

        self.close()
        key = f"{self.task.env}-goal-observable"
        if key not in envs:
            raise ValueError(f"task '{self.task.name}': Meta-World has no environment '{self.task.env}'")
        self._env = envs[key](seed=self.seed)
        self._env.max_path_length = 10**9  # episode length is ours (task.max_steps)
        self._expert = None
        if self.task.expert:
            expert_cls = getattr(policies, self.task.expert, None)
            if expert_cls is None:
                raise ValueError(f"task '{self.task.name}': metaworld.policies has no '{self.task.expert}'")
            self._expert = expert_cls()
        self.camera = self._camera_override or self.task.camera
        if self.view is not None and self.camera.name is None:
            self.camera = self.view.apply_camera(self.camera)
        self._setup_renderer()

    def _setup_renderer(self) -> None:
        if not self._render_enabled:
            return
        import mujoco

        model = self._env.model
        model.vis.quality.offsamples = 0  # no multisampling: 2x faster, sharp enough for 128 px
        model.vis.global_.fovy = self.camera.fovy
        if self.view is not None:
            apply_light(model, dict(self.view.light), model.light_diffuse, model.light_specular)
        self._renderer = make_renderer(model, self.image_height, self.image_width)
        self._rotate_180 = False
        if self.camera.name is not None:
            cam_id = camera_id(model, self.camera.name)
            mujoco.mj_forward(model, self._env.data)
            # Image 'up' is the camera's +y axis; when it points down the camera hangs upside down.
            self._rotate_180 = self._env.data.cam_xmat[cam_id].reshape(3, 3)[2, 1] < 0
            self._mjcam = self.camera.name
        else:
            self._mjcam = free_camera(self.camera)

    def set_task(self, task: str | TaskSpec, seed: Optional[int] = None) -> None:
        """Switch task (rebuilds the environment) and reset. Unknown names raise UnknownTaskError."""
        spec = get_task(task) if isinstance(task, str) else task
        self.task = spec
        if seed is not None:
            self.seed = int(seed)
        self._build()
        self.reset(self.seed)

    def close(self) -> None:
        super().close()
        self._env = None

    # ------------------------------------------------------------------ episode
    def reset(self, seed: Optional[int] = None) -> None:
        """New episode; the object and goal layout is a deterministic function of the seed."""
        if seed is not None:
            self.seed = int(seed)
        import mujoco

        env = self._env
        # Meta-World's reset moves the hand from wherever it was: start from the model's rest state
        # so that the episode depends on the seed alone, not on the previous episode.
        mujoco.mj_resetData(env.model, env.data)
        env.seed(self.seed)
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._obs, _ = env.reset()
        env._freeze_rand_vec = True
        self.step_count = 0
        self._success = False
        self._best_reward = 0.0

    @property
    def control_period(self) -> float:
        """Seconds of simulated time per control step."""
        return self.substeps * float(self._env.dt)

    @property
    def max_speed(self) -> float:
        """Largest end-effector speed per axis [m/s] the arm can follow."""
        return METAWORLD_ACTION_SCALE / float(self._env.dt)

    def step(self, linear_velocity: np.ndarray, gripper: float) -> StepResult:
        """Hold (linear velocity [m/s], gripper [0 open .. 1 closed]) for one control period."""
        v = np.asarray(linear_velocity, dtype=np.float64).reshape(3)
        if not (np.all(np.isfinite(v)) and np.isfinite(gripper)):
            raise ValueError(f"non-finite command: velocity={v}, gripper={gripper}")
        action = np.empty(4, dtype=np.float64)
        action[:3] = np.clip(v / self.max_speed, -1.0, 1.0)
        action[3] = np.clip(2.0 * float(gripper) - 1.0, -1.0, 1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(self.substeps):
                self._obs, reward, _, _, info = self._env.step(action)
                self._success = self._success or bool(info.get("success", False))
                if np.isfinite(reward):
                    self._best_reward = max(self._best_reward, float(reward))
        self.step_count += 1
        return StepResult(success=self._success, step=self.step_count, done=self.done)

    # ------------------------------------------------------------------ sensing
    def render(self) -> np.ndarray:
        """Current camera image, uint8 (H, W, 3) RGB, upright."""
        if self._renderer is None:
            raise RuntimeError("rendering is disabled for this world (render=False)")
        self._renderer.update_scene(self._env.data, camera=self._mjcam)
        img = self._renderer.render()
        if self._rotate_180:
            img = img[::-1, ::-1]
        return np.ascontiguousarray(img)

    @property
    def ee_position(self) -> np.ndarray:
        """Tool centre point in the base (world) frame [m]."""
        return np.array(self._env.tcp_center, dtype=np.float64)

    @property
    def hand_limits(self) -> Tuple[np.ndarray, np.ndarray]:
        """(low, high) corners of the box the hand is held in [m] (Meta-World's mocap limits)."""
        return np.array(self._env.mocap_low, dtype=np.float64), np.array(self._env.mocap_high, dtype=np.float64)

    @property
    def ee_orientation(self) -> np.ndarray:
        """Hand orientation as a quaternion (x, y, z, w)."""
        w, x, y, z = self._env.data.body("hand").xquat
        return np.array([x, y, z, w], dtype=np.float64)

    @property
    def gripper_state(self) -> float:
        """Normalized gripper state: 0 open .. 1 closed, from the finger joint (see GRIPPER)."""
        return GRIPPER.state(float(self._env.data.joint(GRIPPER.joint).qpos[0]))

    @property
    def joint_names(self) -> Tuple[str, ...]:
        return ARM_JOINTS + GRIPPER_JOINTS

    def joint_positions(self) -> np.ndarray:
        data = self._env.data
        return np.array([data.joint(n).qpos[0] for n in self.joint_names], dtype=np.float64)

    def joint_velocities(self) -> np.ndarray:
        data = self._env.data
        return np.array([data.joint(n).qvel[0] for n in self.joint_names], dtype=np.float64)

    @property
    def privileged_observation(self) -> np.ndarray:
        """Meta-World's full observation (hand, objects, goal): what the scripted expert sees.

        A real robot has no such thing; it is published only by the simulator, for the expert."""
        return np.array(self._obs, dtype=np.float64)

    # ------------------------------------------------------------------ expert
    def expert_command(self, observation: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float]:
        """The scripted expert's command for the current (or given) privileged observation:
        (linear velocity [m/s], gripper [0..1])."""
        if self._expert is None:
            raise ValueError(f"task '{self.task.name}' has no scripted expert in the catalogue")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the experts saturate by design
            action = self._expert.get_action(self._obs if observation is None else observation)
        return expert_action_to_command(action, self.max_speed)


# The action space of episodes and of the policy: end-effector velocity and gripper position.
ACTION_NAMES = ("vx", "vy", "vz", "gripper")


def expert_action_to_command(action: np.ndarray, max_speed: float) -> Tuple[np.ndarray, float]:
    """Meta-World action (dx, dy, dz, grip) in [-1, 1] -> (velocity [m/s], gripper [0..1])."""
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return a[:3] * max_speed, float((a[3] + 1.0) / 2.0)


def make_expert(task: str | TaskSpec):
    """The scripted expert of a task, as a callable privileged observation -> Meta-World action."""
    import metaworld.policies as policies

    spec = get_task(task) if isinstance(task, str) else task
    policy = getattr(policies, spec.expert)()

    def act(observation: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return policy.get_action(observation)

    return act
