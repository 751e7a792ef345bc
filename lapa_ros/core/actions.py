"""Policy action vectors -> arm commands (end-effector twist + gripper). No ROS import.

The action space comes from the training data and is named in the model card. Supported names:
  vx vy vz [m/s]   wx wy wz [rad/s]    end-effector velocity in the base frame
  dx dy dz [m]     droll dpitch dyaw [rad]   per-control-step deltas (the LAPA/Bridge convention):
                   divided by the control period to give a velocity
  gripper          0 open .. 1 closed
Any other name is refused when the policy is loaded, not when the arm is already moving.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

_LINEAR = {"vx": 0, "vy": 1, "vz": 2}
_ANGULAR = {"wx": 0, "wy": 1, "wz": 2}
_DELTA_LINEAR = {"dx": 0, "dy": 1, "dz": 2}
_DELTA_ANGULAR = {"droll": 0, "dpitch": 1, "dyaw": 2}
KNOWN = tuple(_LINEAR) + tuple(_ANGULAR) + tuple(_DELTA_LINEAR) + tuple(_DELTA_ANGULAR) + ("gripper",)


class ActionLayout:
    def __init__(self, names: Sequence[str]):
        names = list(names)
        unknown = [n for n in names if n not in KNOWN]
        if unknown:
            raise ValueError(f"action names {unknown} are not understood; known: {', '.join(KNOWN)}")
        if len(set(names)) != len(names):
            raise ValueError(f"action names repeat: {names}")
        if any(n in _LINEAR for n in names) and any(n in _DELTA_LINEAR for n in names):
            raise ValueError("mix of velocity (vx..) and delta (dx..) actions")
        if not any(n in _LINEAR or n in _DELTA_LINEAR for n in names):
            raise ValueError(f"no end-effector motion in the action space {names}")
        self.names = names

    def to_command(self, action: np.ndarray, period: float) -> Tuple[np.ndarray, np.ndarray, Optional[float]]:
        """(linear [m/s], angular [rad/s], gripper or None) for one action vector."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (len(self.names),):
            raise ValueError(f"action has {a.size} values, the layout {self.names} has {len(self.names)}")
        linear, angular, gripper = np.zeros(3), np.zeros(3), None
        for value, name in zip(a, self.names):
            if name in _LINEAR:
                linear[_LINEAR[name]] = value
            elif name in _ANGULAR:
                angular[_ANGULAR[name]] = value
            elif name in _DELTA_LINEAR:
                linear[_DELTA_LINEAR[name]] = value / period
            elif name in _DELTA_ANGULAR:
                angular[_DELTA_ANGULAR[name]] = value / period
            else:
                gripper = float(value)
        return linear, angular, gripper
