"""The MuJoCo model of the Panda: compiled from urdf/panda.urdf, at a table with objects, lights, cameras.

The arm is MuJoCo's own import of the URDF (its joint origins, axes and limits, unchanged), so the
simulated kinematics are exactly those the arm controller's IK uses. Added around it, here:

  * compiler settings: every URDF link kept as a body (``fusestatic`` off: panda_hand_tcp and the
    camera frames exist), inertia from the primitive shapes (the URDF has none), gravity compensation
    on the arm (as the Franka's own controller does);
  * actuators: one PD position servo per arm joint emulating the Franka position interface
    (torque = kp (q_ref - q) + kv (qd_ref - qd), clipped to the URDF effort limit; the damping is
    integrated implicitly so stiff gains are stable at the 2 ms step); one for the fingers, the
    second finger coupled to the first (the URDF's ``mimic``);
  * the table (its top at z = 0 of panda_link0), a cube, goal/target markers, lights, a fixed scene
    camera and a wrist camera at camera_color_optical_frame.

Plain Python, no ROS import.
"""
from __future__ import annotations

import math
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from lapa_models.data.robot_state import GripperMapping

os.environ.setdefault("MUJOCO_GL", "egl")

ARM_JOINTS: Tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS: Tuple[str, ...] = ("panda_finger_joint1", "panda_finger_joint2")
BASE_LINK = "panda_link0"
TCP_LINK = "panda_hand_tcp"
WRIST_CAMERA_LINK = "camera_color_optical_frame"
# The "ready" pose of franka_description / MoveIt: hand pointing down, fingers along the base y axis.
Q_HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
FINGER_OPEN = 0.04            # [m] each finger, from the URDF limit
# The gripper state of joint_states, as the bag converter reads a real Franka hand: 0.04 m open, 0 closed.
GRIPPER = GripperMapping("panda_finger_joint1", FINGER_OPEN, 0.0)

# Joint-space PD of the position interface [N m/rad], [N m s/rad]: stiff, about critically damped with
# the link inertias of the model (a real Franka tracks its position command within ~1 mrad).
ARM_KP = (6000.0, 6000.0, 5000.0, 5000.0, 2500.0, 2500.0, 2000.0)
ARM_KV = (250.0, 250.0, 200.0, 200.0, 60.0, 60.0, 40.0)
ARM_ARMATURE = (0.3, 0.3, 0.3, 0.3, 0.1, 0.1, 0.1)   # [kg m^2] rotor inertia seen at the joint
ARM_DAMPING = 0.5                                     # [N m s/rad] joint friction
FINGER_KP, FINGER_KV, FINGER_FORCE = 1000.0, 20.0, 40.0   # [N/m], [N s/m], [N] per finger

TABLE_SIZE = (0.7, 0.6, 0.025)        # half sizes [m]
TABLE_CENTER = (0.4, 0.0)             # [m] in the base frame; its top is the base plane z = 0
CUBE_HALF = 0.025                     # [m] a 5 cm cube
CUBE_MASS = 0.08                      # [kg]

SCENE_CAMERA = dict(lookat=(0.42, 0.0, 0.18), distance=1.3, azimuth=205.0, elevation=-28.0, fovy=45.0)
WRIST_FOVY = 42.5                     # [deg] D435 colour imager, vertical


def find_urdf(name: str = "panda.urdf") -> Path:
    """urdf/<name> of the lapa_ros package: beside the source tree, or installed under share/lapa_ros.

    $LAPA_PANDA_URDF overrides it (a path)."""
    override = os.environ.get("LAPA_PANDA_URDF")
    candidates = [Path(override)] if override else []
    candidates += [Path(__file__).resolve().parents[2] / "urdf" / name,
                   Path(sys.prefix) / "share" / "lapa_ros" / "urdf" / name]
    try:   # a colcon install: the ament index knows the share directory
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory("lapa_ros")) / "urdf" / name)
    except Exception:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"robot description {name} not found; looked in: {', '.join(map(str, candidates))}")


def _urdf_for_mujoco(urdf_text: str) -> str:
    """The URDF with MuJoCo compiler settings injected and names on its geometry (no kinematic change)."""
    root = ET.fromstring(urdf_text.lstrip().encode("utf-8"))
    if root.tag != "robot":
        raise ValueError(f"robot description root element is <{root.tag}>, expected <robot>")
    for ext in root.findall("mujoco"):
        root.remove(ext)
    ext = ET.Element("mujoco")
    ET.SubElement(ext, "compiler", fusestatic="false", discardvisual="true", inertiafromgeom="true",
                  balanceinertia="true", strippath="false")
    root.insert(0, ext)
    for link in root.findall("link"):
        for kind in ("collision", "visual"):
            for i, el in enumerate(link.findall(kind)):
                el.set("name", f"{link.get('name')}_{kind}{i}")
    return ET.tostring(root, encoding="unicode")


def _quat_from_matrix(R: np.ndarray) -> np.ndarray:
    import mujoco

    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R, dtype=np.float64).reshape(9))
    return q


def free_camera_pose(lookat: Sequence[float], distance: float, azimuth: float, elevation: float
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Position and quaternion (w, x, y, z) of a fixed MuJoCo camera seeing what a free camera with these
    parameters sees (MuJoCo's convention: azimuth about +z from +x, elevation negative looking down)."""
    az, el = math.radians(azimuth), math.radians(elevation)
    forward = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    pos = np.asarray(lookat, dtype=float) - distance * forward
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    R = np.stack([right, up, -forward], axis=1)   # camera x right, y up, looking along -z
    return pos, _quat_from_matrix(R)


def build_spec(urdf: Optional[str] = None, timestep: float = 0.002):
    """The MjSpec of the scene. ``urdf``: the robot description's text (default: find_urdf())."""
    import mujoco

    if not 0.0 < timestep <= 0.002:
        raise ValueError(f"physics timestep must be in (0, 0.002] s, got {timestep}")
    text = urdf if urdf is not None else find_urdf().read_text()
    spec = mujoco.MjSpec.from_string(_urdf_for_mujoco(text))
    spec.modelname = "panda_table"
    spec.compiler.discardvisual = False   # keep the non-colliding markers added below (the URDF's visuals are gone)
    spec.option.timestep = timestep
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    spec.visual.quality.offsamples = 0
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.45, 0.45, 0.45]
    spec.visual.headlight.specular = [0.1, 0.1, 0.1]
    spec.visual.global_.offwidth = 1920
    spec.visual.global_.offheight = 1080

    for name in ARM_JOINTS + FINGER_JOINTS:
        if spec.joint(name) is None:
            raise ValueError(f"robot description has no joint '{name}'")
    for name in (BASE_LINK, TCP_LINK):
        if spec.body(name) is None:
            raise ValueError(f"robot description has no link '{name}'")

    # The robot: white links, grey fingers; it collides with the world, not with itself (its envelopes are
    # coarse; the real arm's self-collision avoidance is not modelled).
    fingers = {"panda_leftfinger", "panda_rightfinger"}
    for body in spec.worldbody.find_all(mujoco.mjtObj.mjOBJ_BODY):
        body.gravcomp = 1.0
        for geom in body.geoms:
            geom.contype, geom.conaffinity = 2, 1
            grey = body.name in fingers or body.name in ("panda_link7", "camera_link")
            geom.rgba = [0.3, 0.3, 0.32, 1.0] if grey else [0.92, 0.92, 0.92, 1.0]
            if body.name in fingers:
                geom.friction = [1.5, 0.01, 0.001]
                geom.condim = 4
    for i, name in enumerate(ARM_JOINTS):
        j = spec.joint(name)
        j.armature, j.damping = ARM_ARMATURE[i], ARM_DAMPING
        a = spec.add_actuator(name=f"{name}_servo", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        a.gaintype, a.biastype = mujoco.mjtGain.mjGAIN_FIXED, mujoco.mjtBias.mjBIAS_AFFINE
        a.gainprm[0] = ARM_KP[i]
        a.biasprm[0:3] = [0.0, -ARM_KP[i], -ARM_KV[i]]
        effort = urdf_joint_limits(text, name)["effort"]
        effort = effort if math.isfinite(effort) else 87.0
        a.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        a.forcerange = [-effort, effort]
    for name in FINGER_JOINTS:
        spec.joint(name).armature = 0.01
    a = spec.add_actuator(name="panda_finger_servo", target=FINGER_JOINTS[0], trntype=mujoco.mjtTrn.mjTRN_JOINT)
    a.gaintype, a.biastype = mujoco.mjtGain.mjGAIN_FIXED, mujoco.mjtBias.mjBIAS_AFFINE
    a.gainprm[0] = FINGER_KP
    a.biasprm[0:3] = [0.0, -FINGER_KP, -FINGER_KV]
    a.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    a.forcerange = [-FINGER_FORCE, FINGER_FORCE]
    eq = spec.add_equality(type=mujoco.mjtEq.mjEQ_JOINT, name="finger_mimic", objtype=mujoco.mjtObj.mjOBJ_JOINT)
    eq.name1, eq.name2 = FINGER_JOINTS[1], FINGER_JOINTS[0]
    eq.data[0:5] = [0.0, 1.0, 0.0, 0.0, 0.0]   # q2 = q1
    eq.solref = [0.005, 1.0]

    spec.body(TCP_LINK).add_site(name="tcp", size=[0.005, 0, 0], rgba=[0, 0, 0, 0])
    cam_body = spec.body(WRIST_CAMERA_LINK)
    if cam_body is not None:   # optical frame: z forward, y down; a MuJoCo camera looks along -z with y up
        cam_body.add_camera(name="wrist", quat=[0.0, 1.0, 0.0, 0.0], fovy=WRIST_FOVY)

    world = spec.worldbody
    world.add_light(name="key", pos=[0.6, -0.6, 1.6], dir=[-0.2, 0.4, -1.0], diffuse=[0.6, 0.6, 0.6],
                    specular=[0.1, 0.1, 0.1], castshadow=False)
    world.add_light(name="fill", pos=[-0.4, 0.8, 1.4], dir=[0.5, -0.5, -1.0], diffuse=[0.3, 0.3, 0.3],
                    specular=[0.0, 0.0, 0.0], castshadow=False)
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], pos=[0, 0, -0.75],
                   rgba=[0.45, 0.45, 0.48, 1.0], contype=1, conaffinity=3)
    world.add_geom(name="wall", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.02, 4.0, 1.5], pos=[-0.9, 0.0, 0.75],
                   rgba=[0.75, 0.78, 0.8, 1.0], contype=0, conaffinity=0)
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(TABLE_SIZE),
                   pos=[TABLE_CENTER[0], TABLE_CENTER[1], -TABLE_SIZE[2]], rgba=[0.62, 0.48, 0.33, 1.0],
                   friction=[0.5, 0.005, 0.0001], contype=1, conaffinity=3)
    # Task objects: a cube on the table, a goal disc on it, a reach target in the air (markers do not collide).
    cube = world.add_body(name="cube", pos=[0.5, 0.0, CUBE_HALF])
    cube.add_freejoint(name="cube_free")
    cube.add_geom(name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF] * 3, mass=CUBE_MASS,
                  rgba=[0.85, 0.15, 0.12, 1.0], friction=[0.5, 0.005, 0.0001], condim=4, contype=1, conaffinity=3,
                  solref=[0.01, 1.0])
    goal = world.add_body(name="goal", pos=[0.5, 0.2, 0.0], mocap=True)
    goal.add_geom(name="goal", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.04, 0.001, 0], pos=[0, 0, 0.0015],
                  rgba=[0.15, 0.75, 0.2, 1.0], contype=0, conaffinity=0)
    target = world.add_body(name="target", pos=[0.5, 0.0, 0.3], mocap=True)
    target.add_geom(name="target", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.02, 0, 0],
                    rgba=[0.1, 0.55, 0.95, 1.0], contype=0, conaffinity=0)
    pos, quat = free_camera_pose(SCENE_CAMERA["lookat"], SCENE_CAMERA["distance"], SCENE_CAMERA["azimuth"],
                                 SCENE_CAMERA["elevation"])
    world.add_camera(name="scene", pos=list(pos), quat=list(quat), fovy=SCENE_CAMERA["fovy"])
    return spec


def urdf_joint_limits(urdf_text: str, joint: str) -> dict:
    """The <limit> of a URDF joint: lower, upper [rad or m], velocity, effort (inf when not given)."""
    root = ET.fromstring(urdf_text.lstrip().encode("utf-8"))
    for j in root.findall("joint"):
        if j.get("name") == joint:
            limit = j.find("limit")
            get = (lambda k, d, limit=limit: float(limit.get(k, d))) if limit is not None else (lambda k, d: float(d))
            return {"lower": get("lower", "-inf"), "upper": get("upper", "inf"), "velocity": get("velocity", "inf"),
                    "effort": get("effort", "inf")}
    raise ValueError(f"robot description has no joint '{joint}'")


def build_model(urdf: Optional[str] = None, timestep: float = 0.002):
    """The compiled MjModel of the scene (see build_spec)."""
    return build_spec(urdf, timestep).compile()
