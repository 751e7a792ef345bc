"""ChunkBlender: coverage, hold / linear interpolation, latest / ensemble / average blending, ageing and bad chunks."""
import math
import threading

import numpy as np
import pytest

from lapa_models.policy.chunking import ChunkBlender

DT = 0.1


def ramp(start: float, steps: int, dim: int = 2) -> np.ndarray:
    """Chunk whose action k is start + k in every dimension."""
    return np.repeat((start + np.arange(steps, dtype=float))[:, None], dim, axis=1)


def blender(mode="ensemble", **kw) -> ChunkBlender:
    kw.setdefault("max_chunk_age", 10.0)
    return ChunkBlender(action_dim=2, period=DT, mode=mode, **kw)


def test_no_chunk_means_hold():
    assert blender().action_at(0.0) is None


def test_action_k_is_for_t0_plus_k_periods():
    b = blender("latest")
    b.add(1.0, ramp(0.0, 5))
    for k in range(5):
        np.testing.assert_allclose(b.action_at(1.0 + k * DT), [k, k])


def test_chunk_does_not_cover_before_its_stamp_or_after_its_last_period():
    b = blender("latest")
    b.add(1.0, ramp(0.0, 5))
    assert b.action_at(0.99) is None
    np.testing.assert_allclose(b.action_at(1.0 + 4.9 * DT), [4.0, 4.0])   # the last action holds its period
    assert b.action_at(1.0 + 5 * DT) is None


def test_by_default_each_action_holds_for_its_whole_period():
    b = blender("latest")
    b.add(0.0, ramp(0.0, 4))
    for t, k in [(0.0, 0), (0.04, 0), (0.099, 0), (0.1, 1), (2.5 * DT, 2), (2.9 * DT, 2), (3.99 * DT, 3)]:
        np.testing.assert_allclose(b.action_at(t), [k, k])


def test_held_actions_do_not_depend_on_the_phase_of_the_query():
    # A controller ticking at any phase of the frame period sends, from the newest chunk, the action of the
    # period it is in: with linear interpolation a tick late in the period would send the next action.
    for phase in (0.0, 0.3, 0.7, 0.999):
        b = blender("latest")
        for frame in range(5):
            b.add(frame * DT, ramp(10.0 * frame, 8))
            np.testing.assert_allclose(b.action_at((frame + phase) * DT), [10.0 * frame, 10.0 * frame])


def test_with_linear_interpolation_actions_between_steps_are_interpolated():
    b = blender("latest", interpolation="linear")
    b.add(0.0, ramp(0.0, 4))
    np.testing.assert_allclose(b.action_at(2.5 * DT), [2.5, 2.5])
    np.testing.assert_allclose(b.action_at(2.9 * DT), [2.9, 2.9])
    assert b.action_at(3 * DT + 0.01) is None   # a linear chunk ends at its last step


def test_float_rounding_does_not_uncover_the_last_step():
    b = blender("latest")
    t0 = 1700000000.123456  # an epoch stamp: t - t0 carries rounding error
    b.add(t0, ramp(0.0, 3))
    np.testing.assert_allclose(b.action_at(t0 + 2 * DT), [2.0, 2.0])


def test_latest_uses_only_the_newest_covering_chunk():
    b = blender("latest")
    b.add(0.0, ramp(0.0, 10))
    b.add(0.3, ramp(100.0, 10))
    np.testing.assert_allclose(b.action_at(0.2), [2.0, 2.0])      # the newer chunk starts later
    np.testing.assert_allclose(b.action_at(0.5), [102.0, 102.0])  # from 0.3 on, only the newer one


def test_ensemble_blends_overlapping_chunks():
    m = 0.5
    b = blender("ensemble", ensemble_decay=m)
    b.add(0.0, ramp(0.0, 10))    # at t = 0.4: 4
    b.add(0.2, ramp(10.0, 10))   # at t = 0.4: 12
    b.add(0.3, ramp(20.0, 10))   # at t = 0.4: 21
    w = np.exp(-m * np.arange(3))  # oldest first
    expected = (w @ np.array([4.0, 12.0, 21.0])) / w.sum()
    np.testing.assert_allclose(b.action_at(0.4), [expected, expected])


def test_ensemble_with_positive_decay_weights_the_oldest_chunk_most():
    b = blender("ensemble", ensemble_decay=5.0)
    b.add(0.0, np.zeros((10, 2)))
    b.add(0.1, np.ones((10, 2)))
    assert b.action_at(0.2)[0] < 0.01


def test_ensemble_with_negative_decay_weights_the_newest_chunk_most():
    b = blender("ensemble", ensemble_decay=-5.0)
    b.add(0.0, np.zeros((10, 2)))
    b.add(0.1, np.ones((10, 2)))
    assert b.action_at(0.2)[0] > 0.99


def test_ensemble_weights_stay_finite_for_large_decay():
    b = blender("ensemble", ensemble_decay=-1000.0)
    for i in range(5):
        b.add(i * DT, np.full((10, 2), float(i)))
    np.testing.assert_allclose(b.action_at(0.45), [4.0, 4.0])


def test_average_is_the_uniform_mean():
    b = blender("average")
    b.add(0.0, np.zeros((10, 2)))
    b.add(0.1, np.full((10, 2), 3.0))
    b.add(0.2, np.full((10, 2), 6.0))
    np.testing.assert_allclose(b.action_at(0.2), [3.0, 3.0])


def test_ensemble_with_zero_decay_equals_average():
    rng = np.random.default_rng(0)
    chunks = [(i * 0.05, rng.normal(size=(8, 2))) for i in range(6)]
    e, a = blender("ensemble", ensemble_decay=0.0), blender("average")
    for t0, chunk in chunks:
        e.add(t0, chunk)
        a.add(t0, chunk)
    for t in np.arange(0.25, 0.6, 0.013):
        np.testing.assert_allclose(e.action_at(t), a.action_at(t))


def test_only_chunks_that_cover_t_contribute():
    b = blender("average")
    b.add(0.0, np.zeros((3, 2)))          # covers 0.0 .. 0.2
    b.add(0.1, np.full((10, 2), 9.0))     # covers 0.1 .. 1.0
    np.testing.assert_allclose(b.action_at(0.5), [9.0, 9.0])


def test_chunks_older_than_max_age_stop_contributing():
    b = blender("average", max_chunk_age=0.25)
    b.add(0.0, np.zeros((10, 2)))
    b.add(0.2, np.full((10, 2), 4.0))
    np.testing.assert_allclose(b.action_at(0.25), [2.0, 2.0])
    np.testing.assert_allclose(b.action_at(0.3), [4.0, 4.0])  # the first is now 0.3 s old
    assert b.action_at(0.5) is None                           # both too old: the caller holds


def test_expired_chunks_are_discarded():
    b = blender("latest", max_chunk_age=0.5)
    for i in range(20):
        b.add(i * DT, ramp(0.0, 4))
        b.action_at(i * DT)
    assert len(b) <= 4  # only chunks that still cover now


def test_late_chunk_that_cannot_be_used_is_refused():
    b = blender("latest", max_chunk_age=0.5)
    b.action_at(2.0)
    assert b.add(0.0, ramp(0.0, 5)) is False  # ended at 0.4
    assert b.add(1.9, ramp(0.0, 5)) is True
    assert len(b) == 1


def test_chunks_arriving_out_of_order_are_kept_sorted_by_stamp():
    b = blender("latest")
    b.add(0.3, ramp(30.0, 10))
    b.add(0.0, ramp(0.0, 10))
    np.testing.assert_allclose(b.action_at(0.4), [31.0, 31.0])  # newest by stamp, not by arrival


def test_chunk_with_the_same_stamp_replaces_the_old_one():
    b = blender("average")
    b.add(0.0, np.zeros((5, 2)))
    b.add(0.0, np.ones((5, 2)))
    assert len(b) == 1
    np.testing.assert_allclose(b.action_at(0.1), [1.0, 1.0])


def test_stored_chunk_is_a_copy():
    b = blender("latest")
    chunk = np.zeros((5, 2))
    b.add(0.0, chunk)
    chunk[:] = 7.0
    np.testing.assert_allclose(b.action_at(0.1), [0.0, 0.0])


def test_max_chunks_bounds_memory():
    b = blender("latest", max_chunks=3)
    for i in range(10):
        b.add(i * 0.01, ramp(0.0, 50))
    assert len(b) == 3


def test_reset_forgets_everything():
    b = blender()
    b.add(0.0, ramp(0.0, 5))
    b.action_at(0.1)
    b.reset()
    assert len(b) == 0 and b.action_at(0.1) is None and b.covered_until() is None
    assert b.add(0.0, ramp(0.0, 5))  # the query time was forgotten too


def test_covered_until_is_the_end_of_the_last_chunk():
    b = blender()
    b.add(0.0, ramp(0.0, 5))
    b.add(0.2, ramp(0.0, 2))
    assert b.covered_until() == pytest.approx(0.5)      # the last action's period ends at 5 periods
    linear = blender(interpolation="linear")
    linear.add(0.0, ramp(0.0, 5))
    assert linear.covered_until() == pytest.approx(0.4)  # a linear chunk ends at its last step


def test_single_step_chunk_covers_one_period_or_with_linear_only_its_stamp():
    b = blender("latest")
    b.add(1.0, np.array([[3.0, 4.0]]))
    np.testing.assert_allclose(b.action_at(1.05), [3.0, 4.0])
    assert b.action_at(1.1) is None
    linear = blender("latest", interpolation="linear")
    linear.add(1.0, np.array([[3.0, 4.0]]))
    np.testing.assert_allclose(linear.action_at(1.0), [3.0, 4.0])
    assert linear.action_at(1.05) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_chunk_is_rejected_with_its_position(bad):
    b = blender()
    chunk = ramp(0.0, 5)
    chunk[3, 1] = bad
    with pytest.raises(ValueError, match="step 3, dimension 1"):
        b.add(0.0, chunk)
    assert len(b) == 0


@pytest.mark.parametrize("chunk, match", [
    (np.zeros((5, 3)), r"shape \(H, 2\)"),
    (np.zeros(2), r"shape \(H, 2\)"),
    (np.zeros((0, 2)), "H >= 1"),
])
def test_wrong_chunk_shape_is_rejected(chunk, match):
    with pytest.raises(ValueError, match=match):
        blender().add(0.0, chunk)


def test_non_finite_times_are_rejected():
    b = blender()
    with pytest.raises(ValueError, match="t0"):
        b.add(math.nan, ramp(0.0, 3))
    with pytest.raises(ValueError, match="query time"):
        b.action_at(math.inf)


@pytest.mark.parametrize("kwargs, match", [
    (dict(action_dim=0), "action_dim"),
    (dict(period=0.0), "period"),
    (dict(max_chunk_age=-1.0), "max_chunk_age"),
    (dict(mode="median"), "unknown chunk blending mode 'median'; one of: latest, ensemble, average"),
    (dict(ensemble_decay=math.nan), "ensemble_decay"),
    (dict(max_chunks=0), "max_chunks"),
    (dict(interpolation="cubic"), "unknown interpolation 'cubic'; one of: hold, linear"),
])
def test_invalid_configuration_is_refused(kwargs, match):
    args = dict(action_dim=2, period=0.1, max_chunk_age=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ChunkBlender(**args)


def test_concurrent_add_and_query():
    b = blender("ensemble", max_chunk_age=1.0)
    errors = []

    def producer():
        try:
            for i in range(300):
                b.add(i * 0.01, ramp(0.0, 20))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    worker = threading.Thread(target=producer)
    worker.start()
    actions = []
    for i in range(300):
        actions.append(b.action_at(i * 0.01))
    worker.join()
    assert not errors
    got = [a for a in actions if a is not None]
    # Every answer is a blend of ramps 0..19 (finite, in range); once the producer is done, "now" is covered
    # and the blend of the chunks covering it is exact: all chunks started within max_chunk_age.
    assert all(np.all(np.isfinite(a)) and np.all((a >= 0.0) & (a <= 19.0)) for a in got)
    final = b.action_at(3.0)
    assert final is not None and np.all((final > 0.0) & (final <= 19.0)), final
