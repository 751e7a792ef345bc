"""The Panda's tasks: object layout (seeded), success check and privileged state of each.

An environment is named by the task catalogue (``env: panda-push`` in lapa_sim/tasks.yaml); its
instructions, camera and step limit are there too. Every position is in the base frame
(panda_link0, the table top is z = 0).

  panda-reach  touch the floating blue target with the fingertips (within 2 cm); a cube stands by
  panda-push   push the red cube onto the green goal disc (centre within 3 cm of the goal's)
  panda-lift   grasp the red cube and lift it (its centre 7.5 cm above the table)

Plain Python, no ROS import.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple, Type

import numpy as np

from .model import CUBE_HALF

HIDDEN = np.array([0.0, 0.0, -5.0])   # unused markers go below the floor (they do not collide)


class PandaEnv:
    """What differs between the Panda tasks; the world (PandaWorld) owns the simulation."""

    name = ""
    privileged_names: Tuple[str, ...] = ()

    def layout(self, rng: np.random.Generator, tcp_home: np.ndarray) -> Dict[str, np.ndarray]:
        """Poses of the scene objects for a new episode: cube (x, y, yaw), goal (x, y, z), target (x, y, z)."""
        raise NotImplementedError

    def success(self, s: Dict[str, float]) -> bool:
        raise NotImplementedError


def _cube_xy_yaw(rng: np.random.Generator, x=(0.40, 0.58), y=(-0.18, 0.18)) -> np.ndarray:
    return np.array([rng.uniform(*x), rng.uniform(*y), rng.uniform(-0.3, 0.3)])


class ReachEnv(PandaEnv):
    name = "panda-reach"
    privileged_names = ("tcp_x", "tcp_y", "tcp_z", "gripper", "goal_x", "goal_y", "goal_z")
    TOLERANCE = 0.02

    def layout(self, rng, tcp_home):
        while True:
            target = np.array([rng.uniform(0.35, 0.62), rng.uniform(-0.25, 0.25), rng.uniform(0.12, 0.42)])
            if np.linalg.norm(target - tcp_home) > 0.15:
                break
        while True:   # a cube on the table, away from under the target
            cube = _cube_xy_yaw(rng)
            if np.linalg.norm(cube[:2] - target[:2]) > 0.12:
                break
        return {"cube": cube, "goal": HIDDEN.copy(), "target": target}

    def success(self, s):
        d = math.dist((s["tcp_x"], s["tcp_y"], s["tcp_z"]), (s["goal_x"], s["goal_y"], s["goal_z"]))
        return d < self.TOLERANCE


class PushEnv(PandaEnv):
    name = "panda-push"
    privileged_names = ("tcp_x", "tcp_y", "tcp_z", "gripper", "cube_x", "cube_y", "cube_z",
                        "goal_x", "goal_y", "goal_z")
    TOLERANCE = 0.03

    def layout(self, rng, tcp_home):
        while True:
            cube = _cube_xy_yaw(rng, x=(0.42, 0.55), y=(-0.15, 0.15))
            angle = rng.uniform(-math.pi, math.pi)
            distance = rng.uniform(0.12, 0.18)
            d = np.array([math.cos(angle), math.sin(angle)])
            goal = cube[:2] + distance * d
            behind = cube[:2] - (CUBE_HALF + 0.05) * d   # where the hand starts pushing from
            if all(0.33 <= p[0] <= 0.68 and abs(p[1]) <= 0.28 for p in (goal, behind)):
                break
        return {"cube": cube, "goal": np.array([goal[0], goal[1], 0.0]), "target": HIDDEN.copy()}

    def success(self, s):
        return math.dist((s["cube_x"], s["cube_y"]), (s["goal_x"], s["goal_y"])) < self.TOLERANCE


class LiftEnv(PandaEnv):
    name = "panda-lift"
    privileged_names = ("tcp_x", "tcp_y", "tcp_z", "gripper", "cube_x", "cube_y", "cube_z")
    HEIGHT = 0.10   # [m] cube centre above the table top (it rests at 0.025)

    def layout(self, rng, tcp_home):
        return {"cube": _cube_xy_yaw(rng), "goal": HIDDEN.copy(), "target": HIDDEN.copy()}

    def success(self, s):
        return s["cube_z"] > self.HEIGHT


ENVS: Dict[str, Type[PandaEnv]] = {cls.name: cls for cls in (ReachEnv, PushEnv, LiftEnv)}


def make_env(name: str) -> PandaEnv:
    if name not in ENVS:
        raise ValueError(f"the Panda has no environment '{name}'; environments: {', '.join(ENVS)}")
    return ENVS[name]()
