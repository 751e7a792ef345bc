import numpy as np
import pytest

from lapa_ros.core.actions import ActionLayout
from lapa_models.data.robot_state import assemble_state, gripper_state_from_joint


def test_velocity_actions_map_to_twist_and_gripper():
    lin, ang, g = ActionLayout(["vx", "vy", "vz", "gripper"]).to_command(np.array([0.1, -0.2, 0.3, 0.9]), 0.05)
    assert np.allclose(lin, [0.1, -0.2, 0.3]) and np.allclose(ang, 0) and g == pytest.approx(0.9)


def test_delta_actions_are_divided_by_the_control_period():
    layout = ActionLayout(["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"])
    lin, ang, g = layout.to_command(np.array([0.01, 0, -0.005, 0.02, 0, 0, 0]), 0.1)
    assert np.allclose(lin, [0.1, 0, -0.05]) and np.allclose(ang, [0.2, 0, 0]) and g == 0


@pytest.mark.parametrize("names, match", [(["vx", "teleport"], "not understood"), (["vx", "dx"], "mix"),
                                          (["gripper"], "no end-effector motion"), (["vx", "vx"], "repeat")])
def test_unusable_action_spaces_are_refused_at_load(names, match):
    with pytest.raises(ValueError, match=match):
        ActionLayout(names)


def test_state_vector_follows_the_names_and_refuses_missing_parts():
    s = assemble_state(["ee_x", "ee_y", "ee_z", "gripper"], np.array([0.1, 0.2, 0.3]), 0.5)
    assert s.dtype == np.float32 and np.allclose(s, [0.1, 0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="no end-effector pose"):
        assemble_state(["ee_x"], None, 0.5)
    with pytest.raises(ValueError, match="unknown state 'joint_7'"):
        assemble_state(["joint_7"], np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        assemble_state(["ee_x", "gripper"], np.array([np.nan, 0, 0]), 0.0)


def test_gripper_state_maps_the_finger_joint_from_open_to_closed():
    assert gripper_state_from_joint(0.04, 0.04, 0.0) == 0.0  # Panda finger: 0.04 m open
    assert gripper_state_from_joint(0.0, 0.04, 0.0) == 1.0
    assert gripper_state_from_joint(0.02, 0.0, 0.04) == pytest.approx(0.5)
    assert gripper_state_from_joint(0.07, 0.0, 0.04) == 1.0


def test_gripper_mapping_round_trips_and_refuses_nonsense():
    from lapa_models.data.robot_state import GripperMapping

    m = GripperMapping("panda_finger_joint1", 0.04, 0.0)
    assert GripperMapping.from_json(m.to_json()) == m
    assert m.state(0.04) == 0.0 and m.state(0.0) == 1.0 and m.state(0.02) == pytest.approx(0.5)
    for bad in ({"joint": "", "open_position": 0, "closed_position": 1}, {"joint": "j", "open_position": 0.0,
                "closed_position": 0.0}, {"joint": "j", "open_position": float("nan"), "closed_position": 1.0},
                {"joint": "j", "open_position": 0.0}, None, "r_close"):
        with pytest.raises(ValueError):
            GripperMapping.from_json(bad)
