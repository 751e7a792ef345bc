"""The benchmark's statistics: success rates, paired bootstrap intervals, the gap-closure ratio."""
import numpy as np
import pytest

from lapa_sim.benchmark.stats import bootstrap, gap_closure, success_rate, summarize, summarize_replicates


def _arm(rates, seeds=3, episodes=20, seed=0):
    """{task: {seed: outcomes}} with each task's success rate exactly `rate` (outcomes shuffled)."""
    rng = np.random.default_rng(seed)
    out = {}
    for task, rate in rates.items():
        out[task] = {}
        for s in range(seeds):
            eps = np.zeros(episodes)
            eps[: int(round(rate * episodes))] = 1
            out[task][s] = rng.permutation(eps).tolist()
    return out


def test_success_rate_weighs_tasks_equally():
    arm = {"a": {0: [1, 1, 1, 1]}, "b": {0: [0] * 40}}
    assert success_rate(arm) == pytest.approx(0.5)


def test_interval_contains_the_rate_and_shrinks_with_more_episodes():
    small = summarize({"scratch": _arm({"a": 0.5, "b": 0.3}, episodes=10)})["arms"]["scratch"]
    large = summarize({"scratch": _arm({"a": 0.5, "b": 0.3}, episodes=200)})["arms"]["scratch"]
    for s in (small, large):
        assert s["ci"][0] <= s["success"] <= s["ci"][1]
    assert (large["ci"][1] - large["ci"][0]) < 0.5 * (small["ci"][1] - small["ci"][0])


def test_clear_gap_gives_a_difference_interval_above_zero_and_the_right_g():
    arms = {"scratch": _arm({"a": 0.2, "b": 0.1}, seed=1), "lapa": _arm({"a": 0.6, "b": 0.5}, seed=2),
            "action": _arm({"a": 0.8, "b": 0.7}, seed=3)}
    out = summarize(arms)
    assert out["lapa_minus_scratch"]["value"] == pytest.approx(0.4)
    assert out["lapa_minus_scratch"]["ci"][0] > 0.2
    assert out["gap_closure"]["value"] == pytest.approx(0.4 / 0.6)
    lo, hi = out["gap_closure"]["ci"]
    assert lo < 0.4 / 0.6 < hi and lo > 0.3


def test_no_gap_gives_an_interval_around_zero():
    arms = {"scratch": _arm({"a": 0.5}, seed=1), "lapa": _arm({"a": 0.5}, seed=2)}
    lo, hi = summarize(arms)["lapa_minus_scratch"]["ci"]
    assert lo < 0 < hi


def test_seed_variance_widens_the_interval():
    """Two arms with the same pooled rate: one consistent across seeds, one all-or-nothing per seed."""
    steady = {"a": {s: [1, 0] * 10 for s in range(3)}}
    erratic = {"a": {0: [1] * 20, 1: [0] * 20, 2: [1] * 10 + [0] * 10}}
    ci_steady = summarize({"scratch": steady})["arms"]["scratch"]["ci"]
    ci_erratic = summarize({"scratch": erratic})["arms"]["scratch"]["ci"]
    assert (ci_erratic[1] - ci_erratic[0]) > 1.5 * (ci_steady[1] - ci_steady[0])


def test_gap_closure_is_undefined_without_an_upper_bound():
    assert gap_closure(0.5, 0.5, 0.5) is None
    assert gap_closure(0.7, 0.5, 0.4) is None
    assert gap_closure(0.6, 0.4, 0.8) == pytest.approx(0.5)


def test_unpaired_arms_are_an_error():
    with pytest.raises(ValueError, match="different tasks"):
        bootstrap({"scratch": _arm({"a": 0.5}), "lapa": _arm({"b": 0.5})})
    with pytest.raises(ValueError, match="different numbers"):
        bootstrap({"scratch": _arm({"a": 0.5}, seeds=3), "lapa": _arm({"a": 0.5}, seeds=2)})


# ---------------------------------------------------------------------------- pretraining replicates
def test_replicates_pool_to_the_mean_and_their_spread_widens_the_interval():
    """Three pretraining replicates of LAPA that disagree (0.4, 0.6, 0.8) against one shared scratch arm:
    the pooled rate is their mean, and its interval is wider than that of replicates that agree."""
    scratch = _arm({"a": 0.3, "b": 0.3}, seed=9)
    spread = [{"scratch": scratch, "lapa": _arm({"a": r, "b": r}, seed=i)} for i, r in enumerate((0.4, 0.6, 0.8))]
    agree = [{"scratch": scratch, "lapa": _arm({"a": 0.6, "b": 0.6}, seed=i)} for i in range(3)]
    wide, narrow = summarize_replicates(spread), summarize_replicates(agree)
    assert wide["arms"]["lapa"]["success"] == pytest.approx(0.6)
    assert [r["arms"]["lapa"]["success"] for r in wide["replicates"]] == pytest.approx([0.4, 0.6, 0.8])
    assert wide["lapa_minus_scratch"]["value"] == pytest.approx(0.3)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(wide["arms"]["lapa"]["ci"]) > 1.5 * width(narrow["arms"]["lapa"]["ci"])
    assert width(wide["lapa_minus_scratch"]["ci"]) > width(narrow["lapa_minus_scratch"]["ci"])
    lo, hi = wide["arms"]["lapa"]["ci"]
    assert lo < 0.6 < hi


def test_an_arm_shared_by_every_replicate_counts_once():
    """The scratch cells that replicates share are one set of training runs: pooling them three times
    must not narrow their interval (as three independent sets would)."""
    scratch = _arm({"a": 0.5, "b": 0.2}, seed=4)
    replicates = [{"scratch": scratch, "lapa": _arm({"a": 0.7, "b": 0.4}, seed=i)} for i in range(3)]
    pooled = summarize_replicates(replicates)["arms"]["scratch"]["ci"]
    single = summarize({"scratch": scratch})["arms"]["scratch"]["ci"]
    assert pooled == pytest.approx(single, abs=0.03)
    independent = [{"scratch": _arm({"a": 0.5, "b": 0.2}, seed=10 + i), "lapa": r["lapa"]} for i, r in enumerate(replicates)]
    narrower = summarize_replicates(independent)["arms"]["scratch"]["ci"]
    assert narrower[1] - narrower[0] < 0.8 * (pooled[1] - pooled[0])


def test_replicates_must_have_the_same_arms():
    with pytest.raises(ValueError, match="arms"):
        summarize_replicates([{"scratch": _arm({"a": 0.5})}, {"lapa": _arm({"a": 0.5})}])


def test_pooled_gap_closure_is_that_of_the_pooled_rates_and_covers_disagreeing_replicates():
    """Replicates with all three arms (each pretraining has its own LAPA and action-pretrained arm):
    pooled G is G of the pooled means, its interval holds it, and replicates whose G disagree (0.33,
    0.67, 1.0) give a wider G interval than replicates that agree."""
    scratch = _arm({"a": 0.2, "b": 0.2}, seed=5)
    spread = [{"scratch": scratch, "lapa": _arm({"a": r, "b": r}, seed=i), "action": _arm({"a": 0.8, "b": 0.8}, seed=20 + i)}
              for i, r in enumerate((0.4, 0.6, 0.8))]
    agree = [{"scratch": scratch, "lapa": _arm({"a": 0.6, "b": 0.6}, seed=i), "action": _arm({"a": 0.8, "b": 0.8}, seed=20 + i)}
             for i in range(3)]
    wide, narrow = summarize_replicates(spread), summarize_replicates(agree)
    assert wide["gap_closure"]["value"] == pytest.approx((0.6 - 0.2) / (0.8 - 0.2))
    assert [r["gap_closure"]["value"] for r in wide["replicates"]] == pytest.approx([1 / 3, 2 / 3, 1.0])
    lo, hi = wide["gap_closure"]["ci"]
    assert lo < 2 / 3 < hi
    n_lo, n_hi = narrow["gap_closure"]["ci"]
    assert (hi - lo) > 1.5 * (n_hi - n_lo)
