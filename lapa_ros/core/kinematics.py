"""URDF kinematics for serial arms: parse, forward kinematics, Jacobian, differential IK.

No ROS import and no dependency beyond numpy: the arm controller turns an end-effector twist into
joint targets with it, the safety layer reads joint limits from it, and the offline tools compute
end-effector poses from recorded joint states.

    chain = KinematicChain(robot_description, "panda_link0", "panda_hand_tcp")
    T = chain.forward(q)                  # 4x4 pose of the tip in the base frame [m]
    J = chain.jacobian(q)                 # 6xN, rows (vx, vy, vz, wx, wy, wz) in the base frame
    q_next = chain.ik_step(q, v, w, dt)   # follow a twist for one period, inside the joint limits

Parsing follows the URDF spec (wiki.ros.org/urdf/XML): only the <link> and <joint> elements that
are direct children of <robot> are read, so the xacro-expanded descriptions robots publish on
`robot_description` (meshes, <transmission>, <gazebo>, <ros2_control>, all of which also hold
<joint> tags of their own) parse as they are. Joint origins are `Trans(xyz) * Rot(rpy)` with
rpy = fixed-axis roll (x), pitch (y), yaw (z), i.e. R = Rz(yaw) Ry(pitch) Rx(roll). <mimic> is read
and ignored: a chain through a mimic joint treats it as an independent joint.
Malformed input raises UrdfError (a ValueError) with a sentence naming the element at fault.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from lapa_ros.core.joint_limits import limit_band, velocity_ratio

JOINT_TYPES = ("revolute", "continuous", "prismatic", "fixed", "floating", "planar")
CHAIN_JOINT_TYPES = ("revolute", "continuous", "prismatic", "fixed")


class UrdfError(ValueError):
    """A robot description that cannot be parsed or used as asked (unknown link, not a chain, ...)."""


# ---------------------------------------------------------------------------------------- rotations
def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF rpy (fixed axes x, y, z) -> 3x3 rotation Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def axis_angle_to_matrix(axis: Sequence[float], angle: float) -> np.ndarray:
    """Rodrigues: rotation of `angle` [rad] about the unit vector `axis`."""
    x, y, z = np.asarray(axis, dtype=float)
    c, s = math.cos(angle), math.sin(angle)
    C = 1.0 - c
    return np.array([
        [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
        [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
        [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
    ])


def transform(xyz: Sequence[float] = (0.0, 0.0, 0.0), rpy: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 transform Trans(xyz) * Rot(rpy), as a URDF <origin> defines it."""
    T = np.eye(4)
    T[:3, :3] = rpy_to_matrix(*rpy)
    T[:3, 3] = xyz
    return T


# ---------------------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Joint:
    """One URDF <joint>. Units: m and rad; limits are +-inf where the URDF gives none (continuous)."""

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray        # 4x4 parent link frame -> joint frame (at q = 0)
    axis: np.ndarray          # unit vector in the joint frame
    lower: float = -math.inf
    upper: float = math.inf
    velocity: float = math.inf  # [rad/s] or [m/s]
    effort: float = math.inf    # [N m] or [N]
    mimic: Optional[str] = None  # name of the joint it mimics (read, not used)

    @property
    def movable(self) -> bool:
        return self.type != "fixed"


@dataclass(frozen=True)
class UrdfModel:
    """The kinematic tree of a robot description: link names and joints by name (file order)."""

    name: str
    links: Tuple[str, ...]
    joints: Dict[str, Joint]

    @property
    def root(self) -> str:
        children = {j.child for j in self.joints.values()}
        return next(link for link in self.links if link not in children)

    def parent_joint(self, link: str) -> Optional[Joint]:
        """The joint whose child is `link`; None for the root."""
        for joint in self.joints.values():
            if joint.child == link:
                return joint
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # drop an XML namespace, if any


def _floats(text: Optional[str], count: int, default: Sequence[float], where: str) -> np.ndarray:
    if text is None:
        return np.asarray(default, dtype=float)
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise UrdfError(f"{where}: '{text}' is not a list of numbers") from None
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise UrdfError(f"{where}: needs {count} finite numbers, got '{text}'")
    return np.asarray(values, dtype=float)


def _float_attr(elem: ET.Element, attr: str, default: float, where: str) -> float:
    text = elem.get(attr)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise UrdfError(f"{where}: {attr}='{text}' is not a number") from None
    if math.isnan(value):
        raise UrdfError(f"{where}: {attr} is NaN")
    return value


def _parse_joint(elem: ET.Element, index: int) -> Joint:
    name = elem.get("name")
    if not name:
        raise UrdfError(f"<joint> number {index + 1} has no name attribute")
    where = f"joint '{name}'"
    jtype = elem.get("type")
    if jtype not in JOINT_TYPES:
        raise UrdfError(f"{where}: type '{jtype}' is not a URDF joint type ({', '.join(JOINT_TYPES)})")
    links = {}
    for tag in ("parent", "child"):
        sub = elem.find(tag)
        if sub is None or not sub.get("link"):
            raise UrdfError(f"{where}: missing <{tag} link='...'/>")
        links[tag] = sub.get("link")
    origin = elem.find("origin")
    xyz = _floats(None if origin is None else origin.get("xyz"), 3, (0, 0, 0), f"{where} <origin xyz>")
    rpy = _floats(None if origin is None else origin.get("rpy"), 3, (0, 0, 0), f"{where} <origin rpy>")
    axis_elem = elem.find("axis")
    axis = _floats(None if axis_elem is None else axis_elem.get("xyz"), 3, (1, 0, 0), f"{where} <axis xyz>")
    norm = float(np.linalg.norm(axis))
    if jtype in ("revolute", "continuous", "prismatic") and norm < 1e-9:
        raise UrdfError(f"{where}: <axis xyz> is the zero vector")
    axis = axis / norm if norm > 0 else axis
    lower, upper, velocity, effort = -math.inf, math.inf, math.inf, math.inf
    limit = elem.find("limit")
    if jtype in ("revolute", "prismatic"):
        if limit is None:
            raise UrdfError(f"{where}: a {jtype} joint needs a <limit> element (URDF spec)")
        lower = _float_attr(limit, "lower", 0.0, f"{where} <limit>")
        upper = _float_attr(limit, "upper", 0.0, f"{where} <limit>")
        if lower > upper:
            raise UrdfError(f"{where} <limit>: lower {lower} is above upper {upper}")
    if limit is not None:
        velocity = _float_attr(limit, "velocity", math.inf, f"{where} <limit>")
        effort = _float_attr(limit, "effort", math.inf, f"{where} <limit>")
        if velocity <= 0:
            raise UrdfError(f"{where} <limit>: velocity must be positive, got {velocity}")
    mimic = elem.find("mimic")
    return Joint(name=name, type=jtype, parent=links["parent"], child=links["child"], origin=transform(xyz, rpy),
                 axis=axis, lower=lower, upper=upper, velocity=velocity, effort=effort,
                 mimic=None if mimic is None else mimic.get("joint"))


def parse_urdf(urdf: Union[str, os.PathLike]) -> UrdfModel:
    """URDF text (a `robot_description` string) or a path to a .urdf file -> UrdfModel.

    A str whose first non-blank character is '<' is XML text; anything else is a path.
    """
    if isinstance(urdf, os.PathLike) or not str(urdf).lstrip().startswith("<"):
        path = Path(urdf)
        if not path.is_file():
            raise FileNotFoundError(f"URDF file not found: {path}")
        text = path.read_text(encoding="utf-8")
    else:
        text = str(urdf)
    try:
        # bytes: ET refuses a str that carries an encoding declaration; lstrip: a declaration must come first
        root = ET.fromstring(text.lstrip().encode("utf-8"))
    except ET.ParseError as e:
        raise UrdfError(f"robot description is not well-formed XML: {e}") from None
    if _local(root.tag) != "robot":
        raise UrdfError(f"robot description root element is <{_local(root.tag)}>, expected <robot>")
    links: List[str] = []
    joints: Dict[str, Joint] = {}
    for child in root:
        tag = _local(child.tag) if isinstance(child.tag, str) else ""
        if tag == "link":
            name = child.get("name")
            if not name:
                raise UrdfError(f"<link> number {len(links) + 1} has no name attribute")
            if name in links:
                raise UrdfError(f"link '{name}' is defined twice")
            links.append(name)
        elif tag == "joint":
            joint = _parse_joint(child, len(joints))
            if joint.name in joints:
                raise UrdfError(f"joint '{joint.name}' is defined twice")
            joints[joint.name] = joint
    if not links:
        raise UrdfError("robot description has no <link> elements")
    known = set(links)
    parent_of: Dict[str, str] = {}
    for joint in joints.values():
        for role, link in (("parent", joint.parent), ("child", joint.child)):
            if link not in known:
                raise UrdfError(f"joint '{joint.name}': {role} link '{link}' is not defined by a <link> element")
        if joint.child in parent_of:
            raise UrdfError(f"link '{joint.child}' has two parent joints ('{parent_of[joint.child]}' and "
                            f"'{joint.name}'): the description is not a tree")
        parent_of[joint.child] = joint.name
    roots = [link for link in links if link not in parent_of]
    if len(roots) != 1:
        raise UrdfError(f"robot description must have exactly one root link, found {len(roots)}: "
                        f"{', '.join(roots) or 'none (the joints form a loop)'}")
    return UrdfModel(name=root.get("name", ""), links=tuple(links), joints=joints)


# ---------------------------------------------------------------------------------------- chain
class KinematicChain:
    """The serial chain from `base_link` to `tip_link` of a robot description.

    Movable joints (revolute, continuous, prismatic) in base-to-tip order give the joint vector q
    (rad or m); fixed joints are folded into constant transforms. All poses and twists are in the
    base_link frame; the twist reference point is the tip link's origin.
    """

    def __init__(self, urdf: Union[str, os.PathLike, UrdfModel], base_link: str, tip_link: str):
        model = urdf if isinstance(urdf, UrdfModel) else parse_urdf(urdf)
        for role, link in (("base_link", base_link), ("tip_link", tip_link)):
            if link not in model.links:
                raise UrdfError(f"{role} '{link}' is not a link of robot '{model.name}'; links: "
                                f"{', '.join(model.links)}")
        path: List[Joint] = []
        link = tip_link
        parent_joint = {j.child: j for j in model.joints.values()}
        while link != base_link:
            joint = parent_joint.get(link)
            if joint is None:
                raise UrdfError(f"tip_link '{tip_link}' is not below base_link '{base_link}': going up from the "
                                f"tip reaches the root '{link}' ({' <- '.join([link] + [j.child for j in path])})")
            path.append(joint)
            link = joint.parent
        path.reverse()
        for joint in path:
            if joint.type not in CHAIN_JOINT_TYPES:
                raise UrdfError(f"joint '{joint.name}' of type '{joint.type}' cannot be part of a kinematic chain "
                                f"(supported: {', '.join(CHAIN_JOINT_TYPES)})")
        self.model = model
        self.base_link = base_link
        self.tip_link = tip_link
        # Segment i: constant transform from the previous movable joint's frame to joint i's frame.
        self._pre: List[np.ndarray] = []
        self._axes: List[np.ndarray] = []
        self._prismatic: List[bool] = []
        movable: List[Joint] = []
        acc = np.eye(4)
        for joint in path:
            acc = acc @ joint.origin
            if joint.movable:
                self._pre.append(acc)
                self._axes.append(joint.axis.copy())
                self._prismatic.append(joint.type == "prismatic")
                movable.append(joint)
                acc = np.eye(4)
        self._tail = acc
        self.joints: Tuple[Joint, ...] = tuple(movable)
        self.joint_names: Tuple[str, ...] = tuple(j.name for j in movable)
        self.lower = np.array([j.lower for j in movable], dtype=float)
        self.upper = np.array([j.upper for j in movable], dtype=float)
        self.velocity_limits = np.array([j.velocity for j in movable], dtype=float)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def __repr__(self) -> str:
        return f"KinematicChain({self.base_link} -> {self.tip_link}, joints={list(self.joint_names)})"

    # ------------------------------------------------------------------ helpers
    def _check_q(self, q, name: str = "q") -> np.ndarray:
        arr = np.asarray(q, dtype=float)
        if arr.shape != (self.dof,):
            raise ValueError(f"{name} needs {self.dof} values ({', '.join(self.joint_names)}), got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} has NaN/Inf: {arr.tolist()}")
        return arr

    def positions_from(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray:
        """Pick this chain's joints, in chain order, out of a JointState's (name, position) lists."""
        if len(names) != len(positions):
            raise ValueError(f"{len(names)} joint names but {len(positions)} positions")
        index = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.joint_names if n not in index]
        if missing:
            raise ValueError(f"joint state lacks {', '.join(missing)} (it has: {', '.join(names) or 'nothing'})")
        return np.array([positions[index[n]] for n in self.joint_names], dtype=float)

    def _middle(self, fallback: Optional[np.ndarray] = None) -> np.ndarray:
        """Middle of each joint range; `fallback` (default 0) for joints without finite limits."""
        finite = np.isfinite(self.lower) & np.isfinite(self.upper)
        mid = (np.where(finite, self.lower, 0.0) + np.where(finite, self.upper, 0.0)) / 2.0
        return np.where(finite, mid, 0.0 if fallback is None else fallback)

    def _joint_motion(self, i: int, qi: float) -> np.ndarray:
        if self._prismatic[i]:
            T = np.eye(4)
            T[:3, 3] = self._axes[i] * qi
            return T
        T = np.eye(4)
        T[:3, :3] = axis_angle_to_matrix(self._axes[i], qi)
        return T

    def _frames(self, q: np.ndarray) -> Tuple[List[np.ndarray], np.ndarray]:
        """Base-frame pose of each movable joint's frame (before its own motion), and the tip pose."""
        frames = []
        T = np.eye(4)
        for i in range(self.dof):
            T = T @ self._pre[i]
            frames.append(T)
            T = T @ self._joint_motion(i, q[i])
        return frames, T @ self._tail

    # ------------------------------------------------------------------ kinematics
    def forward(self, q) -> np.ndarray:
        """4x4 pose of tip_link in base_link at joint positions q."""
        return self._frames(self._check_q(q))[1]

    def jacobian(self, q) -> np.ndarray:
        """Geometric Jacobian (6 x N) in the base frame: [v; w] of the tip origin = J @ dq."""
        frames, tip = self._frames(self._check_q(q))
        J = np.zeros((6, self.dof))
        if not frames:
            return J
        axes = np.array([F[:3, :3] @ a for F, a in zip(frames, self._axes)])  # (N, 3), base frame
        origins = np.array([F[:3, 3] for F in frames])
        prismatic = np.array(self._prismatic)
        # One vectorised cross product: np.cross per 3-vector costs more than the rest of the Jacobian.
        J[:3] = np.where(prismatic[:, None], axes, np.cross(axes, tip[:3, 3] - origins)).T
        J[3:] = np.where(prismatic[:, None], 0.0, axes).T
        return J

    # ------------------------------------------------------------------ inverse kinematics
    @staticmethod
    def _dls(J: np.ndarray, twist: np.ndarray, damping: float) -> Tuple[np.ndarray, np.ndarray]:
        """Damped least squares: (dq, J#) with J# = J^T (J J^T + damping^2 I)^-1."""
        A = J @ J.T + (damping ** 2) * np.eye(J.shape[0])
        J_pinv = J.T @ np.linalg.solve(A, np.eye(J.shape[0]))
        return J_pinv @ twist, J_pinv

    def ik_step(self, q, linear_velocity, angular_velocity=(0.0, 0.0, 0.0), dt: float = 0.01, damping: float = 0.02,
                limit_margin: float = 0.0, limit_avoidance_gain: float = 0.2) -> np.ndarray:
        """Joint positions after following the twist (linear [m/s], angular [rad/s], base frame) for dt [s].

        Damped least squares (damping 0.02: under 1% tracking error away from singularities, bounded
        steps near them), plus a
        null-space pull towards the middle of each joint range (`limit_avoidance_gain` [1/s], 0 turns
        it off) that does not disturb the twist on a redundant arm. Joints that would cross
        [lower + margin, upper - margin] are stopped at the limit and the twist is re-solved with the
        others; then the step is scaled down uniformly until every joint is within its velocity limit.
        A joint already outside its limits may move back in, never further out.
        """
        q = self._check_q(q)
        twist = np.concatenate([np.asarray(linear_velocity, dtype=float).reshape(3),
                                np.asarray(angular_velocity, dtype=float).reshape(3)])
        if not np.all(np.isfinite(twist)):
            raise ValueError(f"twist has NaN/Inf: {twist.tolist()}")
        if not (dt > 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a positive number of seconds, got {dt}")
        lo, hi = limit_band(self.lower, self.upper, limit_margin, q)
        target = twist * dt  # the displacement to achieve this period
        J = self.jacobian(q)
        finite = np.isfinite(self.lower) & np.isfinite(self.upper)
        span = np.where(finite, self.upper - self.lower, 1.0)
        # Normalised pull to mid-range; zero for joints without finite limits (continuous).
        pull_all = -limit_avoidance_gain * dt * 2.0 * (q - self._middle(fallback=q)) / np.maximum(span, 1e-9)
        free = np.ones(self.dof, dtype=bool)
        dq = np.zeros(self.dof)
        for _ in range(self.dof):
            # Saturated joints contribute their fixed step; the free ones solve for what remains.
            rest = target - J[:, ~free] @ dq[~free]
            Jf = J[:, free]
            step, Jf_pinv = self._dls(Jf, rest, damping)
            if limit_avoidance_gain > 0:
                step = step + (np.eye(Jf.shape[1]) - Jf_pinv @ Jf) @ pull_all[free]
            dq[free] = step
            q_new = q + dq
            over = free & ((q_new > hi + 1e-12) | (q_new < lo - 1e-12))
            if not over.any():
                break
            dq[over] = np.clip(q_new[over], lo[over], hi[over]) - q[over]
            free &= ~over
            if not free.any():
                break
        ratio = velocity_ratio(dq, self.velocity_limits, dt)
        if ratio > 1.0:
            dq /= ratio
        return np.clip(q + dq, lo, hi)
