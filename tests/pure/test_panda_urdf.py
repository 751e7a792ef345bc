"""urdf/panda.urdf: Franka's published limits, the hand offsets, and the wrist camera frames."""
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from lapa_ros.core.kinematics import KinematicChain, parse_urdf, rpy_to_matrix

PANDA_URDF = Path(__file__).resolve().parents[2] / "urdf" / "panda.urdf"
# Franka Control Interface docs, "Limits for Panda".
Q_MIN = [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]
Q_MAX = [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]
DQ_MAX = [2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100]
D435_COLOR_HALF_FOV = (math.radians(69.0 / 2), math.radians(42.0 / 2))  # horizontal, vertical


@pytest.fixture(scope="module")
def model():
    return parse_urdf(PANDA_URDF)


def test_panda_description_has_the_standard_links(model):
    expected = {f"panda_link{i}" for i in range(9)} | {
        "panda_hand", "panda_hand_tcp", "panda_leftfinger", "panda_rightfinger",
        "camera_link", "camera_color_frame", "camera_color_optical_frame"}
    assert set(model.links) == expected
    assert model.root == "panda_link0"


def test_panda_joint_limits_match_franka_documentation(model):
    for i in range(7):
        joint = model.joints[f"panda_joint{i + 1}"]
        assert joint.type == "revolute"
        assert (joint.lower, joint.upper, joint.velocity) == (Q_MIN[i], Q_MAX[i], DQ_MAX[i])
    for name in ("panda_finger_joint1", "panda_finger_joint2"):
        finger = model.joints[name]
        assert finger.type == "prismatic" and (finger.lower, finger.upper) == (0.0, 0.04)
    assert model.joints["panda_finger_joint2"].mimic == "panda_finger_joint1"


def test_tcp_is_0_1034_m_from_the_flange_rotated_minus_45_degrees(model):
    T = KinematicChain(model, "panda_link8", "panda_hand_tcp").forward([])
    np.testing.assert_allclose(T[:3, 3], [0.0, 0.0, 0.1034], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], rpy_to_matrix(0, 0, -math.pi / 4), atol=1e-12)


def test_fingers_open_symmetrically_along_the_hand_y_axis(model):
    left = KinematicChain(model, "panda_hand", "panda_leftfinger").forward([0.04])
    right = KinematicChain(model, "panda_hand", "panda_rightfinger").forward([0.04])
    np.testing.assert_allclose(left[:3, 3], [0.0, 0.04, 0.0584], atol=1e-12)
    np.testing.assert_allclose(right[:3, 3], [0.0, -0.04, 0.0584], atol=1e-12)


def test_camera_optical_frame_is_z_forward_x_right_y_down(model):
    R = KinematicChain(model, "camera_color_frame", "camera_color_optical_frame").forward([])[:3, :3]
    body_forward, body_left, body_up = np.eye(3)
    np.testing.assert_allclose(R[:, 2], body_forward, atol=1e-12)  # optical z = body x
    np.testing.assert_allclose(R[:, 0], -body_left, atol=1e-12)    # optical x = right
    np.testing.assert_allclose(R[:, 1], -body_up, atol=1e-12)      # optical y = down
    offset = KinematicChain(model, "camera_link", "camera_color_frame").forward([])[:3, 3]
    np.testing.assert_allclose(offset, [0.0, 0.015, 0.0])


def test_wrist_camera_looks_along_the_gripper_and_sees_the_fingertips(model):
    cam = KinematicChain(model, "panda_hand", "camera_color_optical_frame").forward([])
    view = cam[:3, 2]  # optical axis in the hand frame
    assert math.degrees(math.acos(view @ [0.0, 0.0, 1.0])) == pytest.approx(30.0)
    tcp_in_camera = np.linalg.inv(cam) @ np.array([0.0, 0.0, 0.1034, 1.0])
    x, y, z = tcp_in_camera[:3]
    assert z > 0.05  # in front of the lens
    assert abs(math.atan2(x, z)) < D435_COLOR_HALF_FOV[0] and abs(math.atan2(y, z)) < D435_COLOR_HALF_FOV[1]
    assert y > 0  # below the image centre: the camera sits above the fingers and looks past them


def test_camera_pose_in_base_frame_follows_the_arm(model):
    chain = KinematicChain(model, "panda_link0", "camera_color_optical_frame")
    assert chain.joint_names == tuple(f"panda_joint{i}" for i in range(1, 8))
    q_ready = [0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4]
    T = chain.forward(q_ready)
    assert T[2, 2] < -0.8  # pointing mostly down at the table from the ready pose
    assert 0.5 < T[2, 3] < 0.65


def test_description_uses_only_primitive_shapes():
    root = ET.parse(PANDA_URDF).getroot()
    assert not root.findall(".//mesh")
    assert root.findall(".//visual") and root.findall(".//collision")
