"""The proprioceptive state vector the policy sees, assembled from what a robot publishes. No ROS import.

State names follow the episode datasets (``info.json: state_names``):
  ee_x, ee_y, ee_z      end-effector position [m] in the base frame (geometry_msgs/PoseStamped)
  gripper               0 open .. 1 closed, one finger joint of sensor_msgs/JointState mapped linearly
                        by a GripperMapping (which joint, its open and closed positions)
The mapping is written once where the data is made (the simulator's generator, the bag converter)
into the dataset's info.json (``gripper``), carried by finetuning into the policy's config and by
export into the model card (``state.gripper``), where the policy node reads it: training and
deployment map the gripper the same way, and one place says how.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

import numpy as np

KNOWN_STATE_NAMES = ("ee_x", "ee_y", "ee_z", "gripper")


def gripper_state_from_joint(position: float, open_position: float, closed_position: float) -> float:
    """A finger joint position -> 0 (open) .. 1 (closed)."""
    if closed_position == open_position:
        raise ValueError("gripper open and closed positions must differ")
    return float(np.clip((position - open_position) / (closed_position - open_position), 0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class GripperMapping:
    """Which finger joint of sensor_msgs/JointState gives the gripper state, and its positions when
    open and closed [m or rad] (the state is 0 open .. 1 closed, linear in between)."""

    joint: str
    open_position: float
    closed_position: float

    def __post_init__(self):
        if not isinstance(self.joint, str) or not self.joint:
            raise ValueError(f"gripper joint must be a joint name, got {self.joint!r}")
        for name in ("open_position", "closed_position"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise ValueError(f"gripper {name} must be a finite number, got {v!r}")
        if self.open_position == self.closed_position:
            raise ValueError("gripper open and closed positions must differ")

    def state(self, position: float) -> float:
        return gripper_state_from_joint(position, self.open_position, self.closed_position)

    def to_json(self) -> Dict[str, Any]:
        return {"joint": self.joint, "open_position": float(self.open_position),
                "closed_position": float(self.closed_position)}

    @classmethod
    def from_json(cls, d: Any, where: str = "gripper mapping") -> "GripperMapping":
        if not isinstance(d, dict) or set(d) != {"joint", "open_position", "closed_position"}:
            raise ValueError(f"{where}: expected {{joint, open_position, closed_position}}, got {d!r}")
        try:
            return cls(d["joint"], d["open_position"], d["closed_position"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


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
