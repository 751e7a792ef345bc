"""The proprioceptive state vector the policy sees, assembled from what a robot publishes. No ROS import.

State names follow the episode datasets (``info.json: state_names``):
  ee_x, ee_y, ee_z      end-effector position [m] in the base frame (geometry_msgs/PoseStamped)
  gripper               0 open .. 1 closed, one finger joint of sensor_msgs/JointState mapped linearly
The simulator builds its recorded states with the same functions, so training and deployment agree.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

KNOWN_STATE_NAMES = ("ee_x", "ee_y", "ee_z", "gripper")


def gripper_state_from_joint(position: float, open_position: float, closed_position: float) -> float:
    """A finger joint position -> 0 (open) .. 1 (closed)."""
    if closed_position == open_position:
        raise ValueError("gripper open and closed positions must differ")
    return float(np.clip((position - open_position) / (closed_position - open_position), 0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class GripperJoint:
    name: str
    open_position: float
    closed_position: float


def assemble_state(names: Sequence[str], ee_position: Optional[np.ndarray], gripper: Optional[float]) -> np.ndarray:
    """State vector in the order of ``names``; raises ValueError naming what is missing or unknown."""
    out = np.empty(len(names), dtype=np.float32)
    for i, n in enumerate(names):
        if n in ("ee_x", "ee_y", "ee_z"):
            if ee_position is None:
                raise ValueError("no end-effector pose received yet")
            out[i] = ee_position["xyz".index(n[-1])]
        elif n == "gripper":
            if gripper is None:
                raise ValueError("no gripper joint state received yet")
            out[i] = gripper
        else:
            raise ValueError(f"unknown state '{n}'; this stack provides {', '.join(KNOWN_STATE_NAMES)}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"state has NaN/Inf: {dict(zip(names, out.tolist()))}")
    return out
