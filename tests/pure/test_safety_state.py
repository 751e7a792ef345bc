"""SafetyGate and the robot state's age: a state publisher that stopped holds the arm and refuses arming."""
import numpy as np
import pytest

from lapa_ros.core.safety import STALE_STATE, SafetyGate, SafetyLimits

INSIDE = np.array([0.45, 0.0, 0.30])
SLOW = np.array([0.05, 0.0, 0.0])
ZERO = np.zeros(3)


def test_no_state_age_is_checked_before_the_first_state():
    gate = SafetyGate(SafetyLimits(state_timeout=0.5))
    assert gate.arm(now=10.0)[0]
    assert not gate.filter_twist(10.1, SLOW, ZERO, INSIDE, 10.1).hold
    assert not gate.state_stale(100.0)


def test_a_stale_state_refuses_arming_and_holds_an_armed_gate_until_states_flow_again():
    gate = SafetyGate(SafetyLimits(state_timeout=0.5))
    gate.robot_state(1.0)
    ok, message = gate.arm(now=2.0)
    assert not ok and "1.00 s ago" in message and "not armed" in message
    gate.robot_state(2.0)
    assert gate.arm(now=2.1)[0]
    assert not gate.filter_twist(2.2, SLOW, ZERO, INSIDE, 2.2).hold
    cmd = gate.filter_twist(2.6, SLOW, ZERO, INSIDE, 2.6)
    assert cmd.hold and cmd.reasons == (STALE_STATE,) and gate.state_stale(2.6)
    gate.robot_state(2.7)
    assert not gate.filter_twist(2.75, SLOW, ZERO, INSIDE, 2.75).hold


def test_state_timeout_must_be_positive():
    with pytest.raises(ValueError, match="state_timeout"):
        SafetyLimits(state_timeout=0.0)
