"""Scripted experts of the Panda tasks: privileged state -> the teleop/policy command.

Each expert is a function of the simulator's named privileged state (PandaWorld.privileged_names /
``sim/privileged_state``) alone, with no memory, and returns what a teleop device or the policy
sends: an end-effector linear velocity [m/s] in the base frame (panda_link0) and a gripper command
(0 open .. 1 closed). The hand keeps its orientation (pointing down).

Plain Python, no ROS import.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple, Type

import numpy as np

from .model import CUBE_HALF

MAX_SPEED = 0.2      # [m/s] the experts' top speed
GAIN = 4.0           # [1/s] position error -> velocity
# Gripper state (0 open .. 1 closed) when the fingers touch a 5 cm cube: 1 - 0.025 / 0.04.
GRIP_ON_CUBE = 1.0 - CUBE_HALF / 0.04


def _towards(target: np.ndarray, tcp: np.ndarray, max_speed: float = MAX_SPEED) -> np.ndarray:
    v = GAIN * (np.asarray(target, float) - tcp)
    n = float(np.linalg.norm(v))
    return v * (max_speed / n) if n > max_speed else v


class PandaExpert:
    """expert(names, values) -> (linear velocity [m/s], gripper [0..1])."""

    def __call__(self, names: Sequence[str], values: Sequence[float]) -> Tuple[np.ndarray, float]:
        s = dict(zip(names, (float(v) for v in values)))
        missing = [n for n in self.needs if n not in s]
        if missing:
            raise ValueError(f"{type(self).__name__}: privileged state lacks {', '.join(missing)}")
        v, g = self.act(s, np.array([s["tcp_x"], s["tcp_y"], s["tcp_z"]]))
        return np.asarray(v, dtype=np.float64), float(g)

    needs: Tuple[str, ...] = ("tcp_x", "tcp_y", "tcp_z", "gripper")

    def act(self, s: Mapping[str, float], tcp: np.ndarray):
        raise NotImplementedError


class PandaReachExpert(PandaExpert):
    needs = PandaExpert.needs + ("goal_x", "goal_y", "goal_z")

    def act(self, s, tcp):
        return _towards([s["goal_x"], s["goal_y"], s["goal_z"]], tcp), 0.0


class PandaPushExpert(PandaExpert):
    """Close the fingers into a paddle, go behind the cube on the goal's line (above it), lower the
    hand, push the cube along the line; re-approach from above whenever the hand is off the line."""

    needs = PandaExpert.needs + ("cube_x", "cube_y", "goal_x", "goal_y")
    PUSH_Z = 0.022       # [m] fingertip height while pushing
    CLEAR_Z = 0.09       # [m] fingertip height when moving around the cube
    BACK = CUBE_HALF + 0.04

    def act(self, s, tcp):
        cube = np.array([s["cube_x"], s["cube_y"]])
        goal = np.array([s["goal_x"], s["goal_y"]])
        line = goal - cube
        dist = float(np.linalg.norm(line))
        if dist < 0.005:
            return np.zeros(3), 1.0
        d = line / dist
        rel = tcp[:2] - cube
        along, across = float(rel @ d), float(rel @ np.array([-d[1], d[0]]))
        start = cube - self.BACK * d
        in_position = along < -CUBE_HALF and abs(across) < 0.012 and tcp[2] < self.PUSH_Z + 0.015
        if in_position:   # push along the line, steering the fingers back onto it
            end = goal - (self.BACK - 0.02) * d
            v_xy = _towards(np.append(end, 0.0), np.append(tcp[:2], 0.0), 0.12)[:2]
            v_xy = v_xy - 3.0 * across * np.array([-d[1], d[0]])
            return np.array([v_xy[0], v_xy[1], GAIN * (self.PUSH_Z - tcp[2])]), 1.0
        off = float(np.linalg.norm(tcp[:2] - start))
        if off > 0.01:
            if tcp[2] < self.CLEAR_Z - 0.02 and off > 0.02:   # lift clear of the cube before moving around it
                return np.array([0.0, 0.0, MAX_SPEED]), 1.0
            return _towards(np.append(start, self.CLEAR_Z), tcp), 1.0
        return _towards(np.append(start, self.PUSH_Z), tcp), 1.0   # above the start: go down


class PandaLiftExpert(PandaExpert):
    """Open above the cube, go down around it, close, lift once the fingers hold it."""

    needs = PandaExpert.needs + ("cube_x", "cube_y", "cube_z")
    LIFT_Z = 0.20
    ABOVE = 0.10

    def act(self, s, tcp):
        cube = np.array([s["cube_x"], s["cube_y"], s["cube_z"]])
        grip = s["gripper"]
        xy_err = float(np.linalg.norm(tcp[:2] - cube[:2]))
        dz = tcp[2] - cube[2]
        at_cube = xy_err < 0.015 and (dz < 0.008 or (grip > 0.1 and abs(dz) < 0.03))
        if at_cube:
            if grip >= GRIP_ON_CUBE - 0.02:   # fingers on the cube (or closed on nothing: lift and retry)
                return _towards([cube[0], cube[1], self.LIFT_Z], tcp, 0.15), 1.0
            return np.zeros(3), 1.0          # closing
        if xy_err > 0.008:
            if dz < self.ABOVE - 0.03 and xy_err > 0.02:   # up and clear before moving over the cube
                return np.array([0.0, 0.0, MAX_SPEED]), 0.0
            return _towards(cube + [0.0, 0.0, self.ABOVE], tcp), 0.0
        if grip > 0.05:                       # still closed: open before going down
            return np.zeros(3), 0.0
        return _towards(cube + [0.0, 0.0, 0.0], tcp), 0.0


EXPERTS: Dict[str, Type[PandaExpert]] = {cls.__name__: cls for cls in
                                         (PandaReachExpert, PandaPushExpert, PandaLiftExpert)}


def make_expert(name: str) -> PandaExpert:
    if name not in EXPERTS:
        raise ValueError(f"the Panda has no scripted expert '{name}'; experts: {', '.join(EXPERTS)}")
    return EXPERTS[name]()
