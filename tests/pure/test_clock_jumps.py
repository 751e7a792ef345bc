"""A clock that jumps back (a simulator restarted under use_sim_time): noticed once, and the gate forgets the
old time so that fresh commands move the arm again once it is armed."""
import math

import numpy as np

from lapa_ros.core.clock import BackwardJumpDetector, ClockOffsetMonitor
from lapa_ros.core.safety import CLOCK_JUMPED_BACK, COMMAND_BEFORE_ARM, GateState, SafetyGate

INSIDE = np.array([0.45, 0.0, 0.30])
SLOW = np.array([0.05, 0.0, 0.0])


def test_a_jump_back_is_reported_once_with_its_size_and_time_goes_on_from_the_new_time():
    d = BackwardJumpDetector()
    assert [d.check(t) for t in (0.0, 100.0, 100.05, 100.05, 100.1)] == [None] * 5
    assert math.isclose(d.check(1.0), 99.1)
    assert [d.check(t) for t in (1.0, 1.05, 2.0)] == [None] * 3
    assert d.check(math.nan) is None and d.check(2.1) is None
    assert BackwardJumpDetector(tolerance=0.5).check(10.0) is None


def test_after_a_jump_back_the_gate_is_disarmed_and_fresh_commands_move_the_arm_once_armed():
    gate = SafetyGate()
    assert gate.arm(now=100.0)[0]
    assert not gate.filter_twist(100.1, SLOW, np.zeros(3), INSIDE, 100.1).hold
    gate.clock_jumped_back()
    assert gate.state is GateState.DISARMED
    assert gate.filter_twist(1.1, SLOW, np.zeros(3), INSIDE, 1.1).hold   # not armed again yet
    assert gate.arm(now=1.2)[0]
    assert not gate.filter_twist(1.3, SLOW, np.zeros(3), INSIDE, 1.3).hold
    assert gate.status(1.3)["counters"][CLOCK_JUMPED_BACK] == 1


def test_without_it_the_old_arm_time_refuses_every_command_of_the_new_time():
    """What the node saw before: arm() with the new time still works, but commands stamped before the old arm
    time (without a clock, the newest stamp seen) stay refused."""
    gate = SafetyGate()
    gate.arm(now=100.0)
    gate.filter_twist(100.1, SLOW, np.zeros(3), INSIDE, 100.1)
    gate.disarm()
    gate.arm()   # no time given, no clock: the newest stamp seen (100.1)
    assert gate.filter_twist(1.1, SLOW, np.zeros(3), INSIDE, 1.1).reasons == (COMMAND_BEFORE_ARM,)
    gate.clock_jumped_back()
    gate.arm()
    assert not gate.filter_twist(1.1, SLOW, np.zeros(3), INSIDE, 1.1).hold


def test_a_latched_estop_stays_latched_across_a_jump_back():
    gate = SafetyGate()
    gate.arm(now=100.0)
    gate.trigger_estop("test")
    gate.clock_jumped_back()
    assert gate.state is GateState.ESTOP and not gate.arm(now=1.0)[0]


def test_a_clock_offset_monitor_forgets_the_delays_of_the_old_time():
    m = ClockOffsetMonitor(10, 0.05, 0.2)
    m.add(103.0, 1.0)   # a command of the old time arriving after the jump
    assert m.state() == "ahead"
    m.reset()
    m.add(1.0, 1.01)
    assert m.state() == "ok"
