"""What the two simulated worlds (lapa_sim.world.SimWorld: the Sawyer, lapa_sim.panda.world.PandaWorld)
share: the episode outcome and state, and the MuJoCo camera/renderer setup.

Plain Python with no ROS import, like the worlds.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from .tasks import CameraSpec


@dataclasses.dataclass
class StepResult:
    success: bool
    step: int
    done: bool  # success or step limit reached


class ArmWorld:
    """The part of a world that is the same for either arm. A subclass sets ``task``, ``step_count``,
    ``_success`` (latched per episode) and ``_renderer`` and has ``ee_position`` and ``gripper_state``."""

    STATE_NAMES = ("ee_x", "ee_y", "ee_z", "gripper")
    REWARD_SCALE = 10.0   # Meta-World v3's shaped rewards lie in 0..10
    _renderer = None

    @property
    def success(self) -> bool:
        """True once the task has been achieved in this episode (latched)."""
        return self._success

    @property
    def done(self) -> bool:
        return self._success or self.step_count >= self.task.max_steps

    @property
    def progress(self) -> Optional[float]:
        """How far this episode got, 0..1: 1 once it succeeded, else the best of the environment's own shaped
        reward so far over its scale (Meta-World's: 0..10, reaching then moving the object counts). None
        where the environment has no shaped reward (the Panda's tasks). A graded outcome for settings where
        success alone is at its floor (tasks a policy never saw demonstrated)."""
        if self._success:
            return 1.0
        best = getattr(self, "_best_reward", None)
        return None if best is None else float(min(max(best / self.REWARD_SCALE, 0.0), 1.0))

    @property
    def state(self) -> np.ndarray:
        """Proprioceptive state stored with episodes: ee x, y, z [m] and gripper [0..1]."""
        return np.concatenate([self.ee_position, [self.gripper_state]]).astype(np.float32)

    def close(self) -> None:
        if self._renderer is not None:
            try:
                self._renderer.close()
            except Exception:  # EGL teardown at interpreter exit can fail harmlessly
                pass
            self._renderer = None

    def __del__(self):
        self.close()


def apply_light(model, light: dict, diffuse: np.ndarray, specular: np.ndarray) -> None:
    """A view's lighting: headlight ambient/diffuse, and the model's lights at ``scale`` times these."""
    if "ambient" in light:
        model.vis.headlight.ambient[:] = light["ambient"]
    if "diffuse" in light:
        model.vis.headlight.diffuse[:] = light["diffuse"]
    if "scale" in light:
        model.light_diffuse[:] = diffuse * float(light["scale"])
        model.light_specular[:] = specular * float(light["scale"])


def make_renderer(model, height: int, width: int):
    """A renderer without shadows, reflections and skybox."""
    import mujoco

    renderer = mujoco.Renderer(model, height, width)
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                 mujoco.mjtRndFlag.mjRND_SKYBOX):
        renderer.scene.flags[flag] = 0
    return renderer


def camera_id(model, name: str) -> int:
    """The id of the model's camera ``name``; ValueError naming the model's cameras if it has none such."""
    import mujoco

    cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
    if cam_id < 0:
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        raise ValueError(f"camera '{name}' not in the model; cameras: {names}")
    return cam_id


def free_camera(spec: CameraSpec):
    """A free MuJoCo camera placed as ``spec`` says (lookat, distance, azimuth, elevation)."""
    import mujoco

    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:] = spec.lookat
    cam.distance = spec.distance
    cam.azimuth = spec.azimuth
    cam.elevation = spec.elevation
    return cam
