"""SafetyGate: arming, the latched e-stop, the watchdog, speed/workspace/joint/gripper limits, diagnostics."""
import math
import threading

import numpy as np
import pytest

from lapa_ros.core import safety
from lapa_ros.core.safety import GateState, SafetyGate, SafetyLimits

INSIDE = np.array([0.45, 0.0, 0.30])  # well inside the default box
SLOW = np.array([0.05, 0.0, 0.0])
ZERO = np.zeros(3)


def armed_gate(**limits) -> SafetyGate:
    gate = SafetyGate(SafetyLimits(**limits))
    ok, _ = gate.arm(now=0.0)
    assert ok
    return gate


def twist(gate, now=1.0, linear=SLOW, angular=ZERO, ee=INSIDE, stamp=None):
    return gate.filter_twist(now, linear, angular, ee, now if stamp is None else stamp)


# ------------------------------------------------------------------ state machine
def test_gate_starts_disarmed_and_holds():
    gate = SafetyGate()
    assert gate.state is GateState.DISARMED
    cmd = twist(gate)
    assert cmd.hold and cmd.reasons == (safety.DISARMED,)
    assert np.array_equal(cmd.linear, ZERO) and np.array_equal(cmd.angular, ZERO)


def test_armed_gate_passes_a_safe_command_unchanged():
    gate = armed_gate()
    cmd = twist(gate, angular=[0.0, 0.0, 0.1])
    assert not cmd.hold and cmd.reasons == ()
    np.testing.assert_array_equal(cmd.linear, SLOW)
    np.testing.assert_array_equal(cmd.angular, [0.0, 0.0, 0.1])


def test_disarm_holds_again():
    gate = armed_gate()
    assert gate.disarm() == (True, "disarmed")
    assert twist(gate).reasons == (safety.DISARMED,)


def test_estop_latches_until_released_and_rearmed():
    gate = armed_gate()
    gate.trigger_estop("operator button")
    assert gate.state is GateState.ESTOP and gate.estop_latched
    assert twist(gate, now=2.0).reasons == (safety.ESTOP,)
    ok, message = gate.arm(now=2.0)
    assert not ok and "operator button" in message and "release" in message
    gate.disarm()  # disarming does not clear the latch
    assert gate.state is GateState.ESTOP
    ok, message = gate.release_estop()
    assert ok and "operator button" in message
    assert gate.state is GateState.DISARMED
    assert twist(gate, now=3.0).reasons == (safety.DISARMED,)  # released is not armed
    assert gate.arm(now=3.0)[0]
    assert not twist(gate, now=3.5).hold


def test_estop_stops_motion_on_the_next_cycle():
    gate = armed_gate()
    assert not twist(gate, now=1.0).hold
    gate.trigger_estop("bumper")
    assert twist(gate, now=1.01).hold


def test_release_without_estop_is_harmless():
    gate = SafetyGate()
    assert gate.release_estop() == (True, "no e-stop was latched")
    assert gate.state is GateState.DISARMED


def test_commands_sent_before_arming_do_not_move_the_arm():
    gate = SafetyGate()
    gate.trigger_estop("test")
    gate.release_estop()
    gate.arm(now=10.0)
    # The last command before the e-stop is still "fresh" by the watchdog, but predates arming.
    cmd = twist(gate, now=10.05, stamp=9.99)
    assert cmd.hold and cmd.reasons == (safety.COMMAND_BEFORE_ARM,)
    assert not twist(gate, now=10.06, stamp=10.06).hold


def test_arm_without_time_refuses_commands_already_seen():
    gate = SafetyGate()  # no clock: arm() falls back to the newest stamp the gate has seen
    twist(gate, now=5.0, stamp=5.0)
    gate.arm()
    assert twist(gate, now=5.1, stamp=5.0).reasons == (safety.COMMAND_BEFORE_ARM,)
    assert not twist(gate, now=5.1, stamp=5.05).hold


def test_clock_is_used_when_no_time_is_given():
    t = [100.0]
    gate = SafetyGate(clock=lambda: t[0])
    gate.arm()
    assert twist(gate, now=100.1, stamp=99.9).reasons == (safety.COMMAND_BEFORE_ARM,)
    t[0] = 100.3
    twist(gate, now=100.2, stamp=100.2)
    assert gate.status()["last_command_age"] == pytest.approx(0.1)


def test_estop_from_another_thread_takes_effect():
    gate = armed_gate()
    worker = threading.Thread(target=gate.trigger_estop, args=("watchdog thread",))
    worker.start()
    worker.join()
    assert twist(gate).reasons == (safety.ESTOP,)


# ------------------------------------------------------------------ watchdog and bad input
def test_stale_command_holds_after_timeout():
    gate = armed_gate(command_timeout=0.2)
    assert not twist(gate, now=1.2, stamp=1.0).hold  # exactly at the timeout: still fresh
    cmd = twist(gate, now=1.21, stamp=1.0)
    assert cmd.hold and cmd.reasons == (safety.STALE_COMMAND,)


def test_missing_command_holds():
    gate = armed_gate()
    cmd = gate.filter_twist(1.0, SLOW, ZERO, INSIDE, None)
    assert cmd.hold and cmd.reasons == (safety.NO_COMMAND,)


def test_command_stamped_in_the_future_holds():
    # A clock mismatch (wall-clock stamps under sim time) would otherwise defeat the watchdog.
    gate = armed_gate(future_tolerance=0.05)
    assert not twist(gate, now=1.0, stamp=1.04).hold
    assert twist(gate, now=1.0, stamp=1.2).reasons == (safety.COMMAND_FROM_FUTURE,)


@pytest.mark.parametrize("linear, angular", [
    ([math.nan, 0, 0], [0, 0, 0]),
    ([0, 0, 0], [0, math.inf, 0]),
    ([0, -math.inf, 0], [math.nan, 0, 0]),
])
def test_nan_or_inf_command_holds(linear, angular):
    gate = armed_gate()
    cmd = twist(gate, linear=linear, angular=angular)
    assert cmd.hold and cmd.reasons == (safety.NON_FINITE_COMMAND,)
    assert np.all(np.isfinite(cmd.linear)) and np.all(np.isfinite(cmd.angular))


def test_non_finite_stamp_holds():
    gate = armed_gate()
    assert twist(gate, stamp=math.nan).reasons == (safety.NON_FINITE_COMMAND,)


@pytest.mark.parametrize("ee", [None, [0.4, math.nan, 0.3], [0.4, 0.3]])
def test_unknown_end_effector_position_holds(ee):
    gate = armed_gate()
    cmd = twist(gate, ee=ee)
    assert cmd.hold and cmd.reasons == (safety.NO_EE_POSITION,)


def test_wrong_twist_shape_is_a_caller_error():
    gate = armed_gate()
    with pytest.raises(ValueError, match="3 values"):
        twist(gate, linear=[0.1, 0.0])


# ------------------------------------------------------------------ speed clamps
def test_linear_speed_is_clamped_keeping_direction():
    gate = armed_gate(max_linear_speed=0.1)
    cmd = twist(gate, linear=[0.3, 0.4, 0.0])
    assert not cmd.hold and cmd.reasons == (safety.LINEAR_SPEED_CLAMPED,)
    np.testing.assert_allclose(cmd.linear, [0.06, 0.08, 0.0])


def test_angular_speed_is_clamped_keeping_direction():
    gate = armed_gate(max_angular_speed=0.5)
    cmd = twist(gate, linear=ZERO, angular=[0.0, 0.0, -2.0])
    assert cmd.reasons == (safety.ANGULAR_SPEED_CLAMPED,)
    np.testing.assert_allclose(cmd.angular, [0.0, 0.0, -0.5])


def test_translation_per_period_never_exceeds_the_speed_limit():
    gate = armed_gate(max_linear_speed=0.1, control_period=0.01)
    rng = np.random.default_rng(0)
    for _ in range(200):
        cmd = twist(gate, linear=rng.normal(scale=1.0, size=3))
        assert np.linalg.norm(cmd.linear) * 0.01 <= 0.1 * 0.01 + 1e-12


def test_filter_does_not_modify_the_callers_arrays():
    gate = armed_gate(max_linear_speed=0.1)
    linear = np.array([1.0, 0.0, 0.0])
    twist(gate, linear=linear)
    assert linear[0] == 1.0


# ------------------------------------------------------------------ workspace
BOX = dict(workspace_min=(0.0, -0.5, 0.0), workspace_max=(1.0, 0.5, 1.0), control_period=0.1, max_linear_speed=1.0)


def test_workspace_clamp_stops_outward_motion_at_the_boundary():
    gate = armed_gate(**BOX)
    at_wall = np.array([1.0, 0.0, 0.5])
    cmd = twist(gate, linear=[0.5, 0.2, 0.0], ee=at_wall)
    assert not cmd.hold and safety.WORKSPACE_CLAMPED in cmd.reasons
    np.testing.assert_allclose(cmd.linear, [0.0, 0.2, 0.0])  # slides along the wall


def test_workspace_clamp_scales_motion_to_land_on_the_boundary():
    gate = armed_gate(**BOX)
    near_wall = np.array([0.98, 0.0, 0.5])
    cmd = twist(gate, linear=[0.5, 0.0, 0.0], ee=near_wall)
    np.testing.assert_allclose(cmd.linear, [0.2, 0.0, 0.0])  # 0.98 + 0.2 * 0.1 = 1.0
    assert near_wall[0] + cmd.linear[0] * 0.1 <= 1.0 + 1e-12


def test_robot_outside_workspace_may_only_move_back_in():
    gate = armed_gate(**BOX)
    outside = np.array([0.5, 0.0, -0.05])  # below the table plane
    down = twist(gate, linear=[0.0, 0.0, -0.1], ee=outside)
    assert not down.hold and np.allclose(down.linear, 0.0)
    assert down.reasons == (safety.OUTSIDE_WORKSPACE, safety.WORKSPACE_CLAMPED)
    up = twist(gate, linear=[0.1, 0.0, 0.3], ee=outside)
    np.testing.assert_allclose(up.linear, [0.1, 0.0, 0.3])
    assert up.reasons == (safety.OUTSIDE_WORKSPACE,)


def test_workspace_clamp_keeps_random_commands_inside():
    gate = armed_gate(**BOX)
    rng = np.random.default_rng(1)
    lo, hi = np.array(BOX["workspace_min"]), np.array(BOX["workspace_max"])
    p = np.array([0.5, 0.0, 0.5])
    for _ in range(500):
        cmd = twist(gate, linear=rng.normal(scale=2.0, size=3), ee=p)
        p = p + cmd.linear * BOX["control_period"]
        assert np.all(p >= lo - 1e-9) and np.all(p <= hi + 1e-9)


# ------------------------------------------------------------------ joint space
JOINTS = dict(joint_position_lower=(-1.0, -2.0), joint_position_upper=(1.0, 2.0), joint_velocity_limits=(1.0, 2.0),
              joint_limit_margin=0.1)


def test_joint_targets_are_clipped_inside_limits_with_margin():
    gate = armed_gate(**JOINTS)
    out = gate.filter_joint_positions([5.0, -5.0], [0.85, -1.85], dt=1.0)
    assert not out.hold and out.reasons == (safety.JOINT_POSITION_CLAMPED,)
    np.testing.assert_allclose(out.positions, [0.9, -1.9])


def test_joint_step_is_scaled_to_velocity_limits_keeping_direction():
    gate = armed_gate(**JOINTS)
    out = gate.filter_joint_positions([0.5, 0.5], [0.0, 0.0], dt=0.1)  # asks 5 rad/s on both joints
    assert out.reasons == (safety.JOINT_VELOCITY_CLAMPED,)
    np.testing.assert_allclose(out.positions, [0.1, 0.1])  # joint 1 at its 1 rad/s, same direction


def test_joint_beyond_margin_may_move_back_but_not_further_out():
    gate = armed_gate(**JOINTS)
    out = gate.filter_joint_positions([0.97, 0.0], [0.95, 0.0], dt=1.0)
    np.testing.assert_allclose(out.positions, [0.95, 0.0])
    back = gate.filter_joint_positions([0.5, 0.0], [0.95, 0.0], dt=1.0)
    np.testing.assert_allclose(back.positions, [0.5, 0.0])


def test_joint_command_holds_at_current_positions_when_disarmed_or_nan():
    gate = SafetyGate(SafetyLimits(**JOINTS))
    out = gate.filter_joint_positions([0.5, 0.5], [0.1, 0.2], dt=0.1)
    assert out.hold and out.reasons == (safety.DISARMED,)
    np.testing.assert_array_equal(out.positions, [0.1, 0.2])
    gate.arm(now=0.0)
    nan = gate.filter_joint_positions([math.nan, 0.5], [0.1, 0.2], dt=0.1)
    assert nan.hold and nan.reasons == (safety.NON_FINITE_COMMAND,)
    unknown = gate.filter_joint_positions([0.1, 0.2], [math.nan, 0.2], dt=0.1)
    assert unknown.hold and unknown.positions is None and unknown.reasons == (safety.NON_FINITE_JOINT_STATE,)


def test_joint_command_watchdog_applies_when_times_are_given():
    gate = armed_gate(command_timeout=0.2, **JOINTS)
    assert not gate.filter_joint_positions([0.0, 0.0], [0.0, 0.0], 0.1, now=1.0, command_stamp=0.9).hold
    stale = gate.filter_joint_positions([0.0, 0.0], [0.0, 0.0], 0.1, now=1.5, command_stamp=0.9)
    assert stale.hold and stale.reasons == (safety.STALE_COMMAND,)


def test_joint_commands_need_joint_limits():
    gate = armed_gate()
    with pytest.raises(ValueError, match="joint_position_lower"):
        gate.filter_joint_positions([0.0], [0.0], 0.1)


def test_joint_command_length_must_match_limits():
    gate = armed_gate(**JOINTS)
    with pytest.raises(ValueError, match="2 joints"):
        gate.filter_joint_positions([0.0, 0.0, 0.0], [0.0, 0.0], 0.1)
    with pytest.raises(ValueError, match="dt"):
        gate.filter_joint_positions([0.0, 0.0], [0.0, 0.0], 0.0)


def test_continuous_joint_without_position_limits_is_only_velocity_limited():
    gate = armed_gate(joint_position_lower=(-math.inf,), joint_position_upper=(math.inf,),
                      joint_velocity_limits=(1.0,))
    out = gate.filter_joint_positions([10.0], [9.0], dt=2.0)
    np.testing.assert_allclose(out.positions, [10.0])


# ------------------------------------------------------------------ gripper
def test_gripper_command_is_clamped_to_unit_range():
    gate = armed_gate()
    assert gate.filter_gripper(0.3) == 0.3
    assert gate.filter_gripper(1.7) == 1.0
    assert gate.filter_gripper(-0.2) == 0.0
    assert gate.status()["counters"][safety.GRIPPER_CLAMPED] == 2


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "closed"])
def test_gripper_nan_is_rejected(value):
    gate = armed_gate()
    assert gate.filter_gripper(value) is None
    assert gate.status()["last_reason"] == safety.NON_FINITE_GRIPPER


def test_gripper_does_not_move_while_disarmed_or_estopped():
    gate = SafetyGate()
    assert gate.filter_gripper(1.0) is None
    gate.arm(now=0.0)
    gate.trigger_estop("test")
    assert gate.filter_gripper(1.0) is None
    assert gate.status()["counters"] == {safety.DISARMED: 1, safety.ESTOP: 1}


# ------------------------------------------------------------------ diagnostics
def test_status_reports_state_counters_last_reason_and_command_age():
    gate = armed_gate(max_linear_speed=0.1, command_timeout=0.2)
    twist(gate, now=1.0, linear=[1.0, 0.0, 0.0])
    twist(gate, now=1.5, stamp=1.0)
    twist(gate, now=1.6, stamp=1.0)
    status = gate.status(now=2.0)
    assert status["state"] == "ARMED"
    assert status["counters"] == {safety.LINEAR_SPEED_CLAMPED: 1, safety.STALE_COMMAND: 2}
    assert status["last_reason"] == safety.STALE_COMMAND
    assert status["holding"] is True and status["level"] == safety.DIAG_WARN
    assert status["last_command_age"] == pytest.approx(1.0)
    assert status["cycles"] == 3
    gate.trigger_estop("door opened")
    status = gate.status(now=2.0)
    assert status["state"] == "ESTOP" and status["level"] == safety.DIAG_ERROR
    assert status["estop_latched"] and status["estop_reason"] == "door opened" and status["estop_count"] == 1
    assert "door opened" in status["message"]


def test_status_without_time_or_command_has_no_age():
    status = SafetyGate().status()
    assert status["state"] == "DISARMED" and status["last_command_age"] is None
    assert status["level"] == safety.DIAG_OK and status["counters"] == {} and status["last_reason"] == ""


def test_reset_counters_keeps_the_state():
    gate = armed_gate()
    twist(gate, ee=None)
    gate.reset_counters()
    status = gate.status()
    assert status["counters"] == {} and status["last_reason"] == "" and status["state"] == "ARMED"


# ------------------------------------------------------------------ limits
def test_limits_from_dict_override_defaults_and_reject_unknown_keys():
    limits = SafetyLimits.from_dict({"max_linear_speed": 0.2, "workspace_min": [0, -1, 0], "command_timeout": 1})
    assert limits.max_linear_speed == 0.2 and limits.workspace_min == (0.0, -1.0, 0.0)
    assert limits.command_timeout == 1.0 and isinstance(limits.command_timeout, float)
    assert limits.max_angular_speed == SafetyLimits().max_angular_speed
    with pytest.raises(ValueError, match="max_linear_sped.*known: .*max_linear_speed"):
        SafetyLimits.from_dict({"max_linear_sped": 0.2})
    assert SafetyLimits.from_dict(limits.to_dict()) == limits
    assert SafetyLimits.from_dict({"joint_velocity_limits": []}).joint_velocity_limits is None  # ROS: no None


@pytest.mark.parametrize("bad, match", [
    (dict(max_linear_speed=-1.0), "max_linear_speed"),
    (dict(command_timeout=math.nan), "command_timeout"),
    (dict(control_period=0.0), "control_period"),
    (dict(workspace_min=(1.0, 0.0, 0.0), workspace_max=(0.5, 1.0, 1.0)), "workspace_min"),
    (dict(workspace_min=(0.0, 0.0)), "3 values"),
    (dict(joint_position_lower=(0.0, 0.0), joint_position_upper=(1.0,)), "differ in length"),
    (dict(joint_position_lower=(1.0,), joint_position_upper=(0.0,)), "above"),
    (dict(joint_velocity_limits=(0.0,)), "joint_velocity_limits"),
    (dict(joint_velocity_scale=1.5), "joint_velocity_scale"),
    (dict(max_angular_speed="fast"), "max_angular_speed"),
])
def test_invalid_limits_are_refused_with_the_field_named(bad, match):
    with pytest.raises(ValueError, match=match):
        SafetyLimits(**bad)


def test_with_joint_limits_copies_limits_from_a_chain():
    limits = SafetyLimits().with_joint_limits(np.array([-1.0, -2.0]), np.array([1.0, 2.0]), np.array([2.0, 2.0]))
    assert limits.joint_position_lower == (-1.0, -2.0) and limits.joint_velocity_limits == (2.0, 2.0)


def test_panda_urdf_limits_feed_the_gate():
    from pathlib import Path

    from lapa_ros.core.kinematics import KinematicChain

    chain = KinematicChain(Path(__file__).resolve().parents[2] / "urdf" / "panda.urdf", "panda_link0", "panda_hand_tcp")
    limits = SafetyLimits().with_joint_limits(chain.lower, chain.upper, chain.velocity_limits)
    gate = SafetyGate(limits)
    gate.arm(now=0.0)
    q = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
    # Joint 4 asked past its -0.0698 upper limit, fast: clipped to limit - margin, then to 2.175 rad/s.
    target = q.copy()
    target[3] = 0.5
    out = gate.filter_joint_positions(target, q, dt=0.01)
    assert out.reasons == (safety.JOINT_POSITION_CLAMPED, safety.JOINT_VELOCITY_CLAMPED)
    assert out.positions[3] - q[3] == pytest.approx(2.175 * 0.01)
    # The twist path: the gate's output drives the differential IK inside the box.
    cmd = gate.filter_twist(1.0, [0.5, 0.0, 0.0], ZERO, chain.forward(q)[:3, 3], 1.0)
    assert cmd.reasons == (safety.LINEAR_SPEED_CLAMPED,)
    q_next = chain.ik_step(q, cmd.linear, cmd.angular, limits.control_period)
    moved = chain.forward(q_next)[:3, 3] - chain.forward(q)[:3, 3]
    np.testing.assert_allclose(moved, [limits.max_linear_speed * limits.control_period, 0.0, 0.0], atol=2e-5)
