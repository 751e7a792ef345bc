"""Message helpers: stamps round-trip exactly, including values just below a whole second."""
import pytest

from lapa_ros.interfaces.messages import sec_to_stamp, stamp_to_sec


@pytest.mark.parametrize("t", [0.0, 3.0, 3.9999999999, 4.05, 1795565724.8935304, 0.05 * 80])
def test_stamp_round_trip_never_goes_back_a_second(t):
    stamp = sec_to_stamp(t)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert abs(stamp_to_sec(stamp) - t) < 1e-6


def test_accumulated_sim_time_stays_monotonic():
    t, last = 0.0, -1.0
    for _ in range(2000):
        t += 0.05
        now = stamp_to_sec(sec_to_stamp(t))
        assert now > last
        last = now


@pytest.mark.parametrize("nanoseconds", [12_850_000_000, 20_650_000_000, 1_796_413_520_815_222_792, 0, 999_999_999])
def test_a_stamp_reads_as_the_same_float_as_the_clock_at_that_instant(nanoseconds):
    # A node reads its clock as now().nanoseconds * 1e-9. A message stamped with that instant must read as the
    # same float, or "stamped at or after now" fails for it: the policy took the frame a simulator stamped at
    # its activation instant (12.85 s) for one taken before it, and a lockstep episode lost a second.
    from rclpy.time import Time as RosTime

    now = RosTime(nanoseconds=nanoseconds)
    assert stamp_to_sec(now.to_msg()) == now.nanoseconds * 1e-9


def test_stamps_and_clock_agree_on_every_instant_of_a_simulated_run():
    from rclpy.time import Time as RosTime

    t = 0.0
    for _ in range(2000):
        t += 0.05
        stamp = sec_to_stamp(t)
        clock = RosTime(seconds=stamp.sec, nanoseconds=stamp.nanosec)
        assert stamp_to_sec(stamp) == clock.nanoseconds * 1e-9
