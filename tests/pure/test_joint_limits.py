"""The joint-limit band and velocity ratio shared by the IK step and the safety gate."""
import math

import numpy as np

from lapa_ros.core.joint_limits import limit_band, velocity_ratio


def test_band_is_the_range_less_the_margin_widened_to_the_current_position():
    lo, hi = limit_band([-1.0, 0.0], [1.0, 2.0], 0.1, [0.0, 2.5])
    np.testing.assert_allclose(lo, [-0.9, 0.1])
    np.testing.assert_allclose(hi, [0.9, 2.5])   # joint 2 is beyond its limit: it may come back, not go further


def test_margin_wider_than_half_the_range_leaves_the_middle_and_continuous_joints_stay_free():
    lo, hi = limit_band([0.0, -math.inf], [1.0, math.inf], 0.8, [0.5, 10.0])
    np.testing.assert_allclose([lo[0], hi[0]], [0.5, 0.5])
    assert lo[1] == -math.inf and hi[1] == math.inf


def test_velocity_ratio_is_the_worst_joint_and_ignores_unlimited_ones():
    assert math.isclose(velocity_ratio([0.1, 0.4], [1.0, 2.0], 0.1), 2.0)
    assert velocity_ratio([5.0], [math.inf], 0.1) == 0.0
    assert math.isclose(velocity_ratio([0.0, 0.01], [0.0, 1.0], 0.1), 0.1)   # a locked joint that does not move
    assert velocity_ratio([0.01, 0.0], [0.0, 1.0], 0.1) == math.inf  # ... and one that would
