"""Time alignment: nearest / previous matching, gaps, and the live buffer."""
import math
import threading
import time

import numpy as np
import pytest

from lapa_ros.core.alignment import (
    StampedBuffer, find_gaps, nearest_indices, previous_indices,
)


# ------------------------------------------------------------------ nearest
def test_nearest_picks_the_closest_stamp_within_tolerance():
    stamps = [0.0, 0.1, 0.2, 0.3]
    idx = nearest_indices([0.04, 0.06, 0.31, 0.5, -0.2], stamps, max_dt=0.05)
    np.testing.assert_array_equal(idx, [0, 1, 3, -1, -1])


def test_nearest_tolerance_is_inclusive_and_ties_go_to_the_earlier_sample():
    np.testing.assert_array_equal(nearest_indices([0.5], [0.0, 1.0], max_dt=0.5), [0])
    np.testing.assert_array_equal(nearest_indices([0.25], [0.0, 0.5], max_dt=0.25), [0])


def test_nearest_returns_indices_into_unsorted_input():
    stamps = [0.3, 0.0, 0.2, 0.1]
    np.testing.assert_array_equal(nearest_indices([0.0, 0.1, 0.2, 0.3], stamps, 0.01), [1, 3, 2, 0])


def test_nearest_among_equal_stamps_takes_the_first_in_input_order():
    stamps = [0.5, 0.1, 0.1, 0.9]
    np.testing.assert_array_equal(nearest_indices([0.1, 0.12, 0.08], stamps, 0.1), [1, 1, 1])


def test_nearest_without_limit_always_matches():
    np.testing.assert_array_equal(nearest_indices([100.0, -100.0], [0.0, 1.0], None), [1, 0])
    np.testing.assert_array_equal(nearest_indices([100.0], [0.0, 1.0], math.inf), [1])


def test_empty_inputs_give_no_matches():
    assert nearest_indices([0.0, 1.0], [], 1.0).tolist() == [-1, -1]
    assert previous_indices([], [0.0], 1.0).tolist() == []


def test_scalar_reference_is_accepted():
    assert nearest_indices(0.11, [0.0, 0.1], 0.05).tolist() == [1]


def test_nearest_matches_brute_force_on_random_streams():
    rng = np.random.default_rng(0)
    stamps = rng.uniform(0, 10, size=300)
    ref = rng.uniform(-1, 11, size=500)
    idx = nearest_indices(ref, stamps, 0.02)
    for r, i in zip(ref, idx):
        d = np.abs(stamps - r)
        if d.min() <= 0.02:
            assert i >= 0 and d[i] == d.min()
        else:
            assert i == -1


# ------------------------------------------------------------------ previous (zero-order hold)
def test_previous_is_the_latest_sample_at_or_before_the_reference():
    stamps = [0.0, 0.1, 0.2]
    np.testing.assert_array_equal(previous_indices([-0.01, 0.0, 0.15, 0.2, 5.0], stamps), [-1, 0, 1, 2, 2])


def test_previous_respects_max_age():
    np.testing.assert_array_equal(previous_indices([0.15, 0.4], [0.0, 0.1], max_age=0.1), [1, -1])


def test_previous_never_takes_a_future_sample():
    np.testing.assert_array_equal(previous_indices([0.099], [0.1], max_age=None), [-1])


def test_previous_among_equal_stamps_takes_the_last_received():
    np.testing.assert_array_equal(previous_indices([0.2], [0.1, 0.1, 0.0, 0.1], None), [3])


def test_previous_with_unsorted_input():
    np.testing.assert_array_equal(previous_indices([0.25, 0.05], [0.2, 0.0, 0.3, 0.1]), [0, 1])


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_stamps_are_refused_with_their_position(bad):
    with pytest.raises(ValueError, match=r"stamps\[2\] is .*finite"):
        nearest_indices([0.0], [0.0, 0.1, bad], 0.1)
    with pytest.raises(ValueError, match=r"reference_stamps\[0\]"):
        previous_indices([bad], [0.0], 0.1)


def test_two_dimensional_stamps_are_refused():
    with pytest.raises(ValueError, match="1-D"):
        nearest_indices([0.0], [[0.0, 0.1]], 0.1)


@pytest.mark.parametrize("tolerance", [-0.1, math.nan])
def test_negative_or_nan_tolerance_is_refused(tolerance):
    with pytest.raises(ValueError, match="max_dt"):
        nearest_indices([0.0], [0.0], tolerance)


# ------------------------------------------------------------------ gaps
def test_find_gaps_reports_each_dropout():
    stamps = list(np.arange(0, 1, 0.1)) + list(np.arange(1.5, 2.0, 0.1)) + [3.0]
    gaps = find_gaps(stamps, expected_period=0.1, factor=2.0)
    assert len(gaps) == 2
    start, end, duration = gaps[0]
    assert start == pytest.approx(0.9) and end == pytest.approx(1.5) and duration == pytest.approx(0.6)
    assert gaps[1][1] == 3.0


def test_find_gaps_sorts_first_and_handles_short_streams():
    assert find_gaps([0.2, 0.0, 0.1], 0.1) == []
    assert find_gaps([1.0], 0.1) == []
    with pytest.raises(ValueError, match="expected_period"):
        find_gaps([0.0, 1.0], 0.0)


# ------------------------------------------------------------------ live buffer
def test_buffer_returns_nearest_sample_within_tolerance():
    buf = StampedBuffer(maxlen=10)
    for i in range(5):
        buf.push(i * 0.1, f"js{i}")
    hit = buf.at(0.21, max_dt=0.02)
    assert hit.stamp == pytest.approx(0.2) and hit.value == "js2"
    assert buf.at(0.25, max_dt=0.01) is None
    tie = StampedBuffer(maxlen=2)
    tie.push(0.5, "later")
    tie.push(0.0, "earlier")
    assert tie.at(0.25, max_dt=0.25).value == "earlier"  # exactly between: the earlier


def test_buffer_keeps_out_of_order_samples_sorted_and_drops_the_oldest():
    buf = StampedBuffer(maxlen=3)
    for stamp in [0.3, 0.1, 0.4, 0.2]:
        buf.push(stamp, stamp)
    np.testing.assert_allclose(buf.stamps(), [0.2, 0.3, 0.4])
    assert buf.latest() == (0.4, 0.4) and len(buf) == 3
    buf.push(0.0, "too old")  # older than everything in a full buffer: dropped at once
    np.testing.assert_allclose(buf.stamps(), [0.2, 0.3, 0.4])


def test_buffer_same_stamp_replaces_value():
    buf = StampedBuffer(maxlen=3)
    buf.push(1.0, "old")
    buf.push(1.0, "new")
    assert len(buf) == 1 and buf.latest().value == "new"


def test_buffer_empty_and_clear():
    buf = StampedBuffer(maxlen=2)
    assert buf.latest() is None and buf.at(0.0, None) is None
    buf.push(0.0, 1)
    buf.clear()
    assert len(buf) == 0


def test_buffer_refuses_bad_input():
    with pytest.raises(ValueError, match="maxlen"):
        StampedBuffer(0)
    buf = StampedBuffer(2)
    with pytest.raises(ValueError, match="finite"):
        buf.push(math.nan, 1)
    with pytest.raises(ValueError, match="finite"):
        buf.at(math.inf, 0.1)
    with pytest.raises(ValueError, match="max_dt"):
        buf.at(0.0, max_dt=-1.0)


def test_buffer_agrees_with_the_offline_functions():
    rng = np.random.default_rng(1)
    stamps = rng.uniform(0, 5, size=200)
    buf = StampedBuffer(maxlen=500)
    for i, s in enumerate(stamps):
        buf.push(s, i)
    for t in rng.uniform(-0.5, 5.5, size=200):
        near = nearest_indices([t], stamps, 0.03)[0]
        hit = buf.at(t, 0.03)
        assert (hit is None) == (near < 0) and (hit is None or hit.value == near)


def test_buffer_concurrent_push_and_read():
    buf = StampedBuffer(maxlen=50)
    done = threading.Event()

    def producer():
        for i in range(2000):
            buf.push(i * 0.001, i)
        done.set()

    worker = threading.Thread(target=producer)
    worker.start()
    while not done.is_set():
        latest = buf.latest()
        assert latest is None or latest.value == round(latest.stamp * 1000)
        assert len(buf) <= 50
    worker.join()
    assert buf.latest().value == 1999


def test_stamped_buffer_waits_for_the_state_of_a_frame_that_arrived_first():
    buf = StampedBuffer(maxlen=10)
    buf.push(0.95, "previous")
    threading.Timer(0.05, buf.push, args=(1.0, "same instant")).start()
    t0 = time.monotonic()
    got = buf.wait_at(1.0, max_dt=0.04, timeout=2.0)
    assert got is not None and got.value == "same instant"
    assert time.monotonic() - t0 < 1.0  # woke on arrival, not on the timeout
    # Nothing newer comes: the answer after the timeout is what at() says (here: none within 0.01 s).
    t0 = time.monotonic()
    assert buf.wait_at(2.0, max_dt=0.01, timeout=0.1) is None
    assert 0.09 <= time.monotonic() - t0 < 1.0
    # A sample at or after t is already there: no waiting at all.
    t0 = time.monotonic()
    assert buf.wait_at(0.96, max_dt=0.1, timeout=5.0).value == "previous"
    assert time.monotonic() - t0 < 0.5
