"""Statistics of the LAPA benchmark: success rates with 95% intervals and the gap-closure ratio.

Plain numpy, no simulator and no model. The unit of data is a *cell*: one arm (scratch, LAPA,
action-pretrained) trained with one seed and evaluated on one task for n episodes. An arm's success
rate is the mean over its tasks of the mean over its training seeds (tasks weigh equally, whatever
their episode counts).

Intervals come from a stratified two-level bootstrap: within each task, the training seeds are
resampled with replacement, then each drawn seed's episodes are resampled with replacement. Both
sources of variance show up in the interval: which seed was drawn (the training run) and which
episodes it was evaluated on. Arms are resampled *paired*: one draw picks the same seed positions and
the same episode positions for every arm (evaluation episodes are the same layouts for every arm), so
differences and the gap-closure ratio

    G = (LAPA - scratch) / (action-pretrained - scratch)

get intervals that account for what the arms share. G is undefined when the action-pretrained arm
does not beat scratch; draws where the denominator is <= 0.01 are left out of G's interval and counted.

Replicates of the whole pretraining (``summarize_replicates``: benchmark folders that differ only in
``pretrain_seed``) add a level: the replicates are resampled with replacement as well, crossed with the
seeds and episodes (which every replicate shares); the pooled rate is the mean over replicates, and its
interval covers the variance of the pretraining as well.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

# outcomes[task][seed] -> 1-D array of 0/1 episode outcomes (all arms evaluated on the same episodes)
Outcomes = Mapping[str, Mapping[int, Sequence[float]]]


def success_rate(outcomes: Outcomes) -> float:
    """Mean over tasks of the mean over seeds of the episode success rate."""
    per_task = [np.mean([np.mean(np.asarray(eps, float)) for eps in seeds.values()])
                for seeds in outcomes.values() if seeds]
    if not per_task:
        raise ValueError("no outcomes")
    return float(np.mean(per_task))


def per_task_rates(outcomes: Outcomes) -> Dict[str, float]:
    return {task: float(np.mean([np.mean(np.asarray(eps, float)) for eps in seeds.values()]))
            for task, seeds in outcomes.items() if seeds}


def _check_paired(arms: Mapping[str, Outcomes]) -> tuple:
    names = list(arms)
    tasks = sorted(arms[names[0]])
    for name in names[1:]:
        if sorted(arms[name]) != tasks:
            raise ValueError(f"arms cover different tasks: {names[0]} {tasks}, {name} {sorted(arms[name])}")
    for task in tasks:
        counts = {name: sorted((s, len(e)) for s, e in arms[name][task].items()) for name in names}
        shapes = {tuple(n for _, n in c) for c in counts.values()}
        seeds = {len(c) for c in counts.values()}
        if len(seeds) > 1 or len(shapes) > 1:
            raise ValueError(f"task {task}: arms have different numbers of seeds or episodes {counts}")
    return names, tasks


def bootstrap(arms: Mapping[str, Outcomes], resamples: int = 2000, seed: int = 0) -> Dict[str, np.ndarray]:
    """Paired stratified bootstrap: {arm: (resamples,) success rates}.

    Every arm must cover the same tasks with the same number of seeds and episodes per seed."""
    names, tasks = _check_paired(arms)
    rng = np.random.default_rng(seed)
    draws = {name: np.zeros((resamples, len(tasks))) for name in names}
    for t, task in enumerate(tasks):
        # (arm, seed, episode) outcome matrices; seeds in a fixed order (sorted seed ids).
        mats = {name: [np.asarray(arms[name][task][s], float) for s in sorted(arms[name][task])] for name in names}
        sizes = [len(eps) for eps in mats[names[0]]]
        n_seeds = len(sizes)
        # Draw r puts seed seed_pick[r, j] at position j, with that seed's episodes resampled by
        # episode_pick[j][s][r]; the same picks serve every arm (paired).
        seed_pick = rng.integers(0, n_seeds, size=(resamples, n_seeds))
        episode_pick = [[rng.integers(0, n, size=(resamples, n)) for n in sizes] for _ in range(n_seeds)]
        for name in names:
            total = np.zeros(resamples)
            for j in range(n_seeds):
                for s in range(n_seeds):
                    rows = seed_pick[:, j] == s
                    total[rows] += mats[name][s][episode_pick[j][s][rows]].mean(axis=1)
            draws[name][:, t] = total / n_seeds
    return {name: d.mean(axis=1) for name, d in draws.items()}


def interval(samples: np.ndarray, level: float = 0.95) -> tuple:
    lo, hi = np.quantile(samples, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def gap_closure(lapa: float, scratch: float, action: float) -> Optional[float]:
    """(LAPA - scratch) / (action-pretrained - scratch); None when the upper bound does not beat scratch."""
    denominator = action - scratch
    if denominator <= 0.01:
        return None
    return float((lapa - scratch) / denominator)


def summarize(arms: Mapping[str, Outcomes], resamples: int = 2000, seed: int = 0, level: float = 0.95,
              metric: str = "success") -> Dict:
    """Rates, intervals, per-task rates, and (when the three arms are there) G with its interval. The outcomes
    may be graded (0..1, e.g. episodes' progress): ``metric`` names the key the arms' means are stored under."""
    draws = bootstrap(arms, resamples, seed)
    out: Dict = {"level": level, "resamples": resamples, "arms": {}}
    if metric != "success":
        out["metric"] = metric
    for name, outcomes in arms.items():
        episodes = sum(len(e) for seeds in outcomes.values() for e in seeds.values())
        seeds = sorted({s for seeds in outcomes.values() for s in seeds})
        out["arms"][name] = {metric: success_rate(outcomes), "episodes": episodes, "seeds": seeds,
                             "tasks": per_task_rates(outcomes)}
    _add_intervals(out, draws, level, metric)
    return out


def _add_intervals(out: Dict, draws: Mapping[str, np.ndarray], level: float, metric: str = "success") -> None:
    """Each arm's interval, and LAPA - scratch and G (value and interval) where their arms are there,
    from paired draws {arm: (resamples,)}; ``out["arms"][arm][metric]`` holds the point estimates."""
    for name in draws:
        out["arms"][name]["ci"] = list(interval(draws[name], level))
    if {"scratch", "lapa"} <= set(draws):
        diff = draws["lapa"] - draws["scratch"]
        out["lapa_minus_scratch"] = {"value": out["arms"]["lapa"][metric] - out["arms"]["scratch"][metric],
                                     "ci": list(interval(diff, level))}
    if {"scratch", "lapa", "action"} <= set(draws):
        rates = {k: out["arms"][k][metric] for k in ("scratch", "lapa", "action")}
        g = gap_closure(rates["lapa"], rates["scratch"], rates["action"])
        denominator = draws["action"] - draws["scratch"]
        ok = denominator > 0.01
        g_draws = (draws["lapa"][ok] - draws["scratch"][ok]) / denominator[ok]
        out["gap_closure"] = {"value": g, "ci": list(interval(g_draws, level)) if ok.sum() >= 20 else None,
                              "undefined_draws": int((~ok).sum())}


def bootstrap_replicates(replicates: Sequence[Mapping[str, Outcomes]], resamples: int = 2000,
                         seed: int = 0) -> Dict[str, np.ndarray]:
    """Paired bootstrap over replicates of the whole pretraining: {arm: (resamples,) pooled rates}.

    Replicates of one configuration share their design: training seed s draws the same demos and every
    replicate is evaluated on the same layouts. So the design is crossed, and so is the resampling: draw
    r picks training seeds and episodes once (the same picks for every arm of every replicate, as
    ``bootstrap``) and, independently, R replicates with replacement; an arm's pooled rate is the mean
    over the picked replicates. An arm whose cells every replicate shares (the scratch cells of
    ``--reuse``) is thereby one sample, and it stays paired with the arms it is compared with."""
    if not replicates:
        raise ValueError("no replicates")
    names = sorted(replicates[0])
    for i, arms in enumerate(replicates):
        if sorted(arms) != names:
            raise ValueError(f"replicate {i} has arms {sorted(arms)}, replicate 0 has {names}")
    count = len(replicates)
    draws = bootstrap({(i, name): arms[name] for i, arms in enumerate(replicates) for name in names},
                      resamples, seed)
    picks = np.random.default_rng(seed + 1).integers(0, count, size=(resamples, count))
    rows = np.arange(resamples)[:, None]
    return {name: np.stack([draws[(i, name)] for i in range(count)], axis=1)[rows, picks].mean(axis=1)
            for name in names}


def summarize_replicates(replicates: Sequence[Mapping[str, Outcomes]], resamples: int = 2000, seed: int = 0,
                         level: float = 0.95, metric: str = "success") -> Dict:
    """Pooled rates (mean over replicates), three-level intervals, LAPA - scratch and G; and each
    replicate's own summary (two-level intervals, as ``summarize``). ``metric`` as in ``summarize``."""
    draws = bootstrap_replicates(replicates, resamples, seed)
    own = [summarize(arms, resamples, seed, level, metric) for arms in replicates]
    out: Dict = {"level": level, "resamples": resamples, "replicates": own, "arms": {}}
    if metric != "success":
        out["metric"] = metric
    for name in draws:
        out["arms"][name] = {metric: float(np.mean([o["arms"][name][metric] for o in own])),
                             "episodes": int(sum(o["arms"][name]["episodes"] for o in own))}
    _add_intervals(out, draws, level, metric)
    return out
