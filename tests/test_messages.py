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
