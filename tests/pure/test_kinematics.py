"""URDF parsing, forward kinematics, Jacobian and the differential IK step, checked against the Panda's published DH table."""
import math
from pathlib import Path

import numpy as np
import pytest

from lapa_ros.core.kinematics import KinematicChain, UrdfError, parse_urdf, transform

PANDA_URDF = Path(__file__).resolve().parents[2] / "urdf" / "panda.urdf"


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """The rotation vector (axis * angle) of a rotation matrix, for small rotations as these tests use."""
    angle = math.acos(max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0)))
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2.0
    return w * (angle / math.sin(angle)) if angle > 1e-12 else w
Q_READY = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
# Franka's published modified DH table (Craig convention) and flange / hand offsets.
DH_A = [0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088]
DH_D = [0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0]
DH_ALPHA = [0.0, -math.pi / 2, math.pi / 2, math.pi / 2, -math.pi / 2, math.pi / 2, math.pi / 2]
FLANGE_D, TCP_D, HAND_YAW = 0.107, 0.1034, -math.pi / 4


@pytest.fixture(scope="module")
def panda() -> KinematicChain:
    return KinematicChain(PANDA_URDF, "panda_link0", "panda_hand_tcp")


@pytest.fixture(scope="module")
def flange() -> KinematicChain:
    return KinematicChain(PANDA_URDF, "panda_link0", "panda_link8")


def mdh_forward(q, tcp=True) -> np.ndarray:
    """Forward kinematics straight from the DH table, independent of the URDF parser."""
    T = np.eye(4)
    for a, d, alpha, theta in zip(DH_A, DH_D, DH_ALPHA, q):
        ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
        T = T @ np.array([[ct, -st, 0, a], [st * ca, ct * ca, -sa, -d * sa], [st * sa, ct * sa, ca, d * ca], [0, 0, 0, 1]])
    T = T @ transform((0, 0, FLANGE_D))
    if tcp:
        T = T @ transform((0, 0, 0), (0, 0, HAND_YAW)) @ transform((0, 0, TCP_D))
    return T


def random_q(chain, rng):
    return rng.uniform(chain.lower + 0.1, chain.upper - 0.1)


# ------------------------------------------------------------------ forward kinematics
def test_fk_matches_published_panda_home_pose(panda, flange):
    # The Panda "ready" pose: TCP at (0.307, 0, 0.487) pointing down, fingers along the base y axis.
    T = panda.forward(Q_READY)
    np.testing.assert_allclose(T[:3, 3], [0.30689, 0.0, 0.48688], atol=1e-4)
    np.testing.assert_allclose(T[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-9)
    np.testing.assert_allclose(flange.forward(Q_READY)[:3, 3], [0.30689, 0.0, 0.48688 + TCP_D], atol=1e-4)


def test_fk_with_a_right_angle_elbow_matches_hand_derivation(flange):
    # q4 = -pi/2 makes the forearm horizontal: wrist centre at (0.0825 + 0.384, 0, 0.333 + 0.316 + 0.0825);
    # q6 = pi/2 points the flange down after the 0.088 offset, so it sits 0.107 below.
    T = flange.forward([0, 0, 0, -math.pi / 2, 0, math.pi / 2, math.pi / 4])
    np.testing.assert_allclose(T[:3, 3], [0.0825 + 0.384 + 0.088, 0.0, 0.333 + 0.316 + 0.0825 - 0.107], atol=1e-12)


def test_fk_at_zero_configuration_is_the_stretched_arm(panda):
    T = panda.forward(np.zeros(7))
    np.testing.assert_allclose(T[:3, 3], [0.088, 0.0, 0.333 + 0.316 + 0.384 - FLANGE_D - TCP_D], atol=1e-12)


def test_fk_matches_modified_dh_table_for_random_configurations(panda, flange):
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = random_q(panda, rng)
        np.testing.assert_allclose(panda.forward(q), mdh_forward(q), atol=1e-12)
        np.testing.assert_allclose(flange.forward(q), mdh_forward(q, tcp=False), atol=1e-12)


def test_jacobian_matches_finite_differences(panda):
    rng = np.random.default_rng(1)
    eps = 1e-7
    for _ in range(5):
        q = random_q(panda, rng)
        J = panda.jacobian(q)
        T = panda.forward(q)
        for i in range(7):
            dq = np.zeros(7)
            dq[i] = eps
            T2 = panda.forward(q + dq)
            np.testing.assert_allclose(J[:3, i], (T2[:3, 3] - T[:3, 3]) / eps, atol=1e-6)
            np.testing.assert_allclose(J[3:, i], rotation_vector(T2[:3, :3] @ T[:3, :3].T) / eps, atol=1e-6)


def test_chain_reports_joint_names_and_limits_in_order(panda):
    assert panda.joint_names == tuple(f"panda_joint{i}" for i in range(1, 8))
    assert panda.dof == 7
    np.testing.assert_allclose(panda.lower, [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
    np.testing.assert_allclose(panda.upper, [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
    np.testing.assert_allclose(panda.velocity_limits, [2.175] * 4 + [2.61] * 3)
    assert "panda_link0 -> panda_hand_tcp" in repr(panda)


def test_wrong_number_of_joints_or_nan_is_refused(panda):
    with pytest.raises(ValueError, match="7 values.*panda_joint1"):
        panda.forward(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        panda.jacobian([0, 0, 0, math.nan, 0, 0, 0])


def test_positions_from_reorders_a_joint_state(panda):
    names = ["panda_finger_joint1"] + [f"panda_joint{i}" for i in range(7, 0, -1)]
    positions = [0.04] + list(range(7, 0, -1))
    np.testing.assert_array_equal(panda.positions_from(names, positions), [1, 2, 3, 4, 5, 6, 7])
    with pytest.raises(ValueError, match="lacks panda_joint7"):
        panda.positions_from(names[:-7] + names[2:], positions[:-7] + positions[2:])
    with pytest.raises(ValueError, match="8 joint names but 2 positions"):
        panda.positions_from(names, [0.0, 1.0])


# ------------------------------------------------------------------ differential IK
def test_ik_step_follows_commanded_twist(panda):
    v, w, dt = np.array([0.05, -0.02, 0.03]), np.array([0.0, 0.0, 0.2]), 0.01
    q = Q_READY.copy()
    T0 = panda.forward(q)
    for _ in range(100):  # 1 s
        q = panda.ik_step(q, v, w, dt)
    T1 = panda.forward(q)
    np.testing.assert_allclose(T1[:3, 3] - T0[:3, 3], v * 1.0, atol=2e-3)
    np.testing.assert_allclose(rotation_vector(T1[:3, :3] @ T0[:3, :3].T), w * 1.0, atol=5e-3)


def test_ik_step_with_zero_twist_keeps_the_tool_still(panda):
    q = Q_READY.copy()
    T0 = panda.forward(q)
    for _ in range(50):
        q = panda.ik_step(q, np.zeros(3), np.zeros(3), 0.01)
    np.testing.assert_allclose(panda.forward(q)[:3, 3], T0[:3, 3], atol=1e-3)


def test_ik_step_respects_joint_position_limits(panda):
    # Pushing the tool 1.2 m down drives the shoulder (joint 2) to its upper limit: it must stop there.
    q = Q_READY.copy()
    for _ in range(400):
        q = panda.ik_step(q, [0.0, 0.0, -0.3], [0.0, 0.0, 0.0], 0.01, limit_margin=0.02)
        assert np.all(q >= panda.lower + 0.02 - 1e-9) and np.all(q <= panda.upper - 0.02 + 1e-9)
    assert q[1] == pytest.approx(panda.upper[1] - 0.02, abs=1e-9)


def test_ik_step_near_the_stretched_singularity_stays_finite_and_bounded(panda):
    q = Q_READY.copy()
    for _ in range(400):  # 2 m forward: far beyond the reach, through the stretched-arm singularity
        q_next = panda.ik_step(q, [0.5, 0.0, 0.0], [0.0, 0.0, 0.0], 0.01)
        assert np.all(np.isfinite(q_next))
        assert np.all(np.abs(q_next - q) <= panda.velocity_limits * 0.01 + 1e-12)
        q = q_next
    assert panda.forward(q)[0, 3] > 0.8


def test_ik_step_respects_joint_velocity_limits(panda):
    q = Q_READY.copy()
    q_next = panda.ik_step(q, [10.0, 0.0, -10.0], [5.0, 0.0, 0.0], 0.01)
    assert np.all(np.abs(q_next - q) / 0.01 <= panda.velocity_limits * (1 + 1e-9))


def test_ik_step_lets_a_joint_outside_its_limits_move_back_only(panda):
    q = Q_READY.copy()
    q[3] = 0.1  # beyond the upper limit -0.0698
    for _ in range(20):
        q_next = panda.ik_step(q, [0.2, 0.0, 0.0], [0.0, 0.0, 0.0], 0.01)
        assert q_next[3] <= q[3] + 1e-12
        q = q_next


def test_ik_step_refuses_nan_twist_and_bad_period(panda):
    with pytest.raises(ValueError, match="NaN"):
        panda.ik_step(Q_READY, [math.nan, 0, 0], [0, 0, 0], 0.01)
    with pytest.raises(ValueError, match="dt"):
        panda.ik_step(Q_READY, [0, 0, 0], [0, 0, 0], 0.0)


# ------------------------------------------------------------------ iterative IK
# ------------------------------------------------------------------ parsing
XACRO_EXPANDED = """
<?xml version="1.0" encoding="utf-8"?>
<!-- generated by xacro -->
<robot name="two_dof" xmlns:xacro="http://www.ros.org/wiki/xacro">
  <material name="grey"><color rgba="0.5 0.5 0.5 1"/></material>
  <link name="world"/>
  <joint name="world_joint" type="fixed"><parent link="world"/><child link="base"/><origin xyz="0 0 1"/></joint>
  <link name="base">
    <visual><geometry><mesh filename="package://two_dof/meshes/base.dae"/></geometry></visual>
    <inertial><mass value="1"/><inertia ixx="1" ixy="0" ixz="0" iyy="1" iyz="0" izz="1"/></inertial>
  </link>
  <joint name="turn" type="continuous">
    <parent link="base"/><child link="arm"/>
    <origin xyz="0 0 0.5" rpy="0 0 0"/><axis xyz="0 0 1"/>
    <limit effort="10" velocity="1.5"/>
    <dynamics damping="0.1"/>
  </joint>
  <link name="arm"/>
  <joint name="slide" type="prismatic">
    <parent link="arm"/><child link="tool"/>
    <origin xyz="0.2 0 0"/><axis xyz="1 0 0"/>
    <limit lower="0" upper="0.3" effort="50" velocity="0.25"/>
    <safety_controller k_velocity="1"/>
  </joint>
  <link name="tool"/>
  <joint name="helper_mimic" type="prismatic">
    <parent link="arm"/><child link="helper"/><axis xyz="0 1 0"/>
    <limit lower="0" upper="0.1" effort="1" velocity="1"/>
    <mimic joint="slide" multiplier="1" offset="0"/>
  </joint>
  <link name="helper"/>
  <transmission name="turn_tx">
    <type>transmission_interface/SimpleTransmission</type>
    <joint name="turn"><hardwareInterface>EffortJointInterface</hardwareInterface></joint>
    <actuator name="turn_motor"><mechanicalReduction>1</mechanicalReduction></actuator>
  </transmission>
  <ros2_control name="sys" type="system">
    <joint name="slide"><command_interface name="position"/></joint>
    <joint name="not_a_kinematic_joint"><state_interface name="position"/></joint>
  </ros2_control>
  <gazebo reference="arm"><material>Gazebo/Grey</material></gazebo>
  <gazebo><plugin name="gz_ros2_control" filename="libgz_ros2_control-system.so"/></gazebo>
</robot>
"""


def test_parses_xacro_expanded_description_ignoring_transmissions_and_plugins():
    model = parse_urdf(XACRO_EXPANDED)
    assert model.name == "two_dof" and model.root == "world"
    assert list(model.joints) == ["world_joint", "turn", "slide", "helper_mimic"]
    assert model.links == ("world", "base", "arm", "tool", "helper")
    turn = model.joints["turn"]
    assert turn.type == "continuous" and turn.lower == -math.inf and turn.upper == math.inf
    assert turn.velocity == 1.5 and turn.effort == 10.0
    assert model.joints["helper_mimic"].mimic == "slide"
    assert model.joints["world_joint"].axis.tolist() == [1.0, 0.0, 0.0]  # URDF default axis
    assert model.parent_joint("tool").name == "slide" and model.parent_joint("world") is None


def test_continuous_and_prismatic_chain_kinematics():
    chain = KinematicChain(XACRO_EXPANDED, "world", "tool")
    assert chain.joint_names == ("turn", "slide")
    np.testing.assert_allclose(chain.lower, [-math.inf, 0.0])
    np.testing.assert_allclose(chain.velocity_limits, [1.5, 0.25])
    T = chain.forward([math.pi / 2, 0.1])
    np.testing.assert_allclose(T[:3, 3], [0.0, 0.3, 1.5], atol=1e-12)  # (0.2 + 0.1) along the turned x
    J = chain.jacobian([math.pi / 2, 0.1])
    np.testing.assert_allclose(J[:, 0], [-0.3, 0.0, 0.0, 0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(J[:, 1], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0], atol=1e-12)


def test_chain_on_a_branch_of_the_tree_takes_the_path_between_the_links():
    chain = KinematicChain(XACRO_EXPANDED, "base", "helper")
    assert chain.joint_names == ("turn", "helper_mimic")  # the mimic joint counts as an independent joint


def test_parses_from_a_path_or_text(tmp_path):
    path = tmp_path / "robot.urdf"
    path.write_text(XACRO_EXPANDED)
    assert parse_urdf(path).name == parse_urdf(str(path)).name == parse_urdf(XACRO_EXPANDED).name == "two_dof"
    with pytest.raises(FileNotFoundError, match="nope.urdf"):
        parse_urdf(tmp_path / "nope.urdf")


def test_unknown_link_lists_the_available_links():
    with pytest.raises(UrdfError, match="tip_link 'gripper' is not a link of robot 'two_dof'; links: world, base, arm"):
        KinematicChain(XACRO_EXPANDED, "world", "gripper")


def test_tip_that_is_not_below_the_base_is_refused():
    with pytest.raises(UrdfError, match="not below base_link 'tool'"):
        KinematicChain(XACRO_EXPANDED, "tool", "base")


def robot(joints: str, links=("a", "b", "c")) -> str:
    return f'<robot name="r">{"".join(f"<link name={chr(34)}{n}{chr(34)}/>" for n in links)}{joints}</robot>'


FIXED_AB = '<joint name="j1" type="fixed"><parent link="a"/><child link="b"/></joint>'


@pytest.mark.parametrize("text, match", [
    ("<robot name='r'><link name='a'>", "not well-formed XML"),
    ("<model name='r'/>", "root element is <model>"),
    ("<robot name='r'/>", "no <link> elements"),
    (robot('<joint name="j1" type="fixed"><parent link="a"/><child link="b"/><origin xyz="0 0"/></joint>'),
     r"joint 'j1' <origin xyz>: needs 3 finite numbers"),
    (robot('<joint name="j1" type="fixed"><parent link="a"/><child link="b"/><origin rpy="0 x 0"/></joint>'),
     r"joint 'j1' <origin rpy>: '0 x 0' is not a list of numbers"),
    (robot('<joint name="j1" type="fixed"><child link="b"/></joint>'), r"joint 'j1': missing <parent"),
    (robot('<joint name="j1" type="hinge"><parent link="a"/><child link="b"/></joint>'), "type 'hinge'"),
    (robot('<joint type="fixed"><parent link="a"/><child link="b"/></joint>'), "<joint> number 1 has no name"),
    (robot('<joint name="j1" type="revolute"><parent link="a"/><child link="b"/></joint>'), "needs a <limit>"),
    (robot('<joint name="j1" type="revolute"><parent link="a"/><child link="b"/>'
           '<limit lower="1" upper="0" velocity="1" effort="1"/></joint>'), "lower 1.0 is above upper 0.0"),
    (robot('<joint name="j1" type="revolute"><parent link="a"/><child link="b"/>'
           '<limit lower="0" upper="1" velocity="fast" effort="1"/></joint>'), "velocity='fast' is not a number"),
    (robot('<joint name="j1" type="revolute"><parent link="a"/><child link="b"/><axis xyz="0 0 0"/>'
           '<limit lower="0" upper="1" velocity="1" effort="1"/></joint>'), "zero vector"),
    (robot('<joint name="j1" type="fixed"><parent link="a"/><child link="z"/></joint>'),
     "child link 'z' is not defined"),
    (robot(FIXED_AB + '<joint name="j2" type="fixed"><parent link="c"/><child link="b"/></joint>'),
     "link 'b' has two parent joints"),
    (robot(FIXED_AB + FIXED_AB), "joint 'j1' is defined twice"),
    (robot(FIXED_AB, links=("a", "b", "b")), "link 'b' is defined twice"),
    (robot(FIXED_AB), "exactly one root link, found 2: a, c"),
])
def test_malformed_urdf_errors_name_the_element(text, match):
    with pytest.raises(UrdfError, match=match):
        parse_urdf(text)


def test_floating_joint_cannot_be_part_of_a_chain():
    text = robot('<joint name="free" type="floating"><parent link="a"/><child link="b"/></joint>'
                 '<joint name="j2" type="fixed"><parent link="b"/><child link="c"/></joint>')
    with pytest.raises(UrdfError, match="joint 'free' of type 'floating'"):
        KinematicChain(text, "a", "c")


def test_chain_accepts_a_parsed_model():
    model = parse_urdf(XACRO_EXPANDED)
    assert KinematicChain(model, "world", "tool").model is model


# ------------------------------------------------------------------ rotations
