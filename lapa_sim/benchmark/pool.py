"""`lapa benchmark --pool A B C --out P`: replicates of the whole pretraining, pooled into one table.

One benchmark folder measures one pretraining run (one LAQ, one latent pretraining, one action
pretraining); its intervals cover the training seeds and the evaluation episodes, not the pretraining.
On the benchmark's CPU scale the pretraining itself varies as much as the effect measured (the README's
replicate table), so a claim about the *recipe* needs several pretrainings: folders made with the same
configuration except ``pretrain_seed`` (``--set pretrain_seed=1 --reuse A``: the data and the scratch
cells are shared, only the pretraining and the pretrained arms' cells run again). This module pools them:

    results/results.md, results.json   each replicate's row and the pooled row per setting; the pooled
                                       rate is the mean over replicates, its interval a paired bootstrap
                                       that resamples the replicates, crossed with the training seeds
                                       and episodes they share (stats.py)
    results/replicates.png            LAPA - scratch per replicate and pooled, with intervals

Nothing in the folders is changed; the pooled folder holds only what this writes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .config import RESOURCES, SPECS_KEY, BenchmarkConfig, BenchmarkConfigError, _spec_differences, _with_defaults
from .report import ARM_LABELS, arm_outcomes, table_row
from .report import collect as report_collect
from .stats import summarize_replicates

# What may differ between replicates: the pretraining seed, and what does not change what is measured.
REPLICATE_FIELDS = ("pretrain_seed", "preset") + RESOURCES
MARKER = "pool.json"


def load_replicates(folders: Sequence[Path]):
    """[Benchmark] of the folders, checked to be replicates of one configuration."""
    from .run import Benchmark

    if len(folders) < 2:
        raise BenchmarkConfigError(f"--pool needs at least 2 benchmark folders, got {len(folders)}")
    resolved = [Path(f).resolve() for f in folders]
    if len(set(resolved)) != len(resolved):
        raise BenchmarkConfigError("--pool: a folder is named twice")
    benches, saved, records = [], [], []
    for folder in folders:
        path = Path(folder) / "benchmark.json"
        if not path.is_file():
            raise BenchmarkConfigError(f"--pool {folder}: not a benchmark folder (no benchmark.json)")
        try:
            raw = json.loads(path.read_text())
            config = _with_defaults(raw)
        except (ValueError, AttributeError) as e:
            raise BenchmarkConfigError(f"--pool {folder}: unreadable benchmark.json ({e})") from e
        saved.append(config)
        records.append(raw.get(SPECS_KEY))
        benches.append(Benchmark(BenchmarkConfig.from_dict(config), Path(folder)))
    for folder, config, record in zip(folders[1:], saved[1:], records[1:]):
        differs = sorted(k for k in set(config) | set(saved[0])
                         if k not in REPLICATE_FIELDS and config.get(k) != saved[0].get(k))
        # the tasks' catalogue entries too, where both folders recorded them (folders from before the record:
        # unknown, accepted)
        specs = (_spec_differences(records[0], record, "tasks") + _spec_differences(records[0], record, "views")
                 if isinstance(record, dict) else [])
        if differs or specs:
            detail = "; ".join([f"{k}: {saved[0].get(k)!r} vs {config.get(k)!r}" for k in differs[:6]] + specs[:4])
            raise BenchmarkConfigError(
                f"--pool: {folder} is not a replicate of {folders[0]}: only {', '.join(REPLICATE_FIELDS)} may "
                f"differ, these do: {detail}")
    return benches


def _pooled(benches, cells: Dict[str, tuple], group: str, metric: str = "success") -> Optional[Dict]:
    """summarize_replicates over the folders for {arm: (setting, K)} on a task group; None while any
    folder misses a cell of it (or, for progress, an episode of it did not record one)."""
    replicates = [arm_outcomes(bench, cells, group, metric) for bench in benches]
    return None if any(r is None for r in replicates) else summarize_replicates(replicates, metric=metric)


def collect(benches) -> Dict:
    results = report_collect(benches[0], lambda cells, group, metric="success": _pooled(benches, cells, group,
                                                                                        metric))
    results["replicates"] = [{"folder": str(b.out), "pretrain_seed": b.config.pretrain_seed} for b in benches]
    return results


def _blocks(results: Dict) -> List[tuple]:
    c = results["config"]
    blocks = [(f"In-domain few-shot, K = {k} (target tasks)", s) for k, s in results["in_domain"].items()]
    titles = {"video_only": "Cross-task: tasks seen only as unlabelled video",
              "held_out": "Held out: tasks in neither the video nor the demos"}
    blocks += [(f"{titles[g]} (K = {c['cross_shots']})", s) for g, s in results["cross_task"].items()]
    if results["cross_env"] is not None or "cross-env" in c["settings"]:
        blocks.append((f"Cross-environment: video from the `{c['view']}` view (K = {c['cross_shots']})",
                       results["cross_env"]))
    return blocks


def markdown(results: Dict) -> str:
    c = results["config"]
    arms = [a for a in ("scratch", "lapa", "action") if a in c["arms"]]
    reps = results["replicates"]
    lines = [f"# LAPA benchmark: {len(reps)} pretraining replicates pooled", "",
             "Success rate in % with 95% intervals. Each replicate's row: its own folder (paired bootstrap over "
             "training seeds and episodes, as its results.md). Pooled: the mean over replicates, with a "
             "paired bootstrap that resamples the replicates, crossed with the training seeds and episodes "
             "(which every replicate shares: the same demos and evaluation layouts), so the interval covers the "
             "variance of the pretraining as well; cells shared by every replicate (scratch) count once.", "",
             f"- {len(c['seeds'])} training seeds x {c['eval_episodes']} evaluation episodes per task and replicate; "
             f"targets: {', '.join(c['targets'])}; video only: {', '.join(c['video_only']) or '-'}",
             "- replicates: " + "; ".join(f"`{r['folder']}` (pretrain_seed {r['pretrain_seed']})" for r in reps), ""]
    header = ("| | " + " | ".join(ARM_LABELS[a] for a in arms) + " | LAPA - scratch | G |\n|---|"
              + "---|" * (len(arms) + 2))
    for title, summary in _blocks(results):
        lines += [f"## {title}", "", header]
        if summary is None:
            lines += ["| pending: a folder has not finished these cells |", ""]
            continue
        for i, (rep, own) in enumerate(zip(reps, summary["replicates"]), 1):
            lines.append(table_row(f"replicate {i} (pretrain_seed {rep['pretrain_seed']})", own, arms))
        lines += [table_row("**pooled**", summary, arms), ""]
    progress = {g: s for g, s in (results.get("cross_task_progress") or {}).items() if s}
    if progress:
        lines += ["## Cross-task progress", "", "How far the cross-task episodes got: 1 on success, else the best of "
                  "the environment's shaped reward over its scale; mean in %, intervals as above.", "", header]
        for group, summary in progress.items():
            for i, own in enumerate(summary["replicates"], 1):
                lines.append(table_row(f"{group}, replicate {i}", own, arms, "progress"))
            lines.append(table_row(f"**{group}, pooled**", summary, arms, "progress"))
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(results: Dict, path: Path) -> None:
    """LAPA - scratch per replicate and pooled, one panel per setting that has both arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = [(t, s) for t, s in _blocks(results) if s is not None and "lapa_minus_scratch" in s]
    if not blocks:
        return
    fig, axes = plt.subplots(1, len(blocks), figsize=(4.2 * len(blocks), 3.6), squeeze=False)
    for ax, (title, summary) in zip(axes[0], blocks):
        rows = [(f"rep {i} (seed {rep['pretrain_seed']})", own["lapa_minus_scratch"])
                for i, (rep, own) in enumerate(zip(results["replicates"], summary["replicates"]), 1)]
        rows.append(("pooled", summary["lapa_minus_scratch"]))
        for y, (label, d) in enumerate(reversed(rows)):
            v, (lo, hi) = 100 * d["value"], (100 * d["ci"][0], 100 * d["ci"][1])
            ax.errorbar([v], [y], xerr=[[v - lo], [hi - v]], fmt="o", capsize=4,
                        color="tab:blue" if label == "pooled" else "tab:gray")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([label for label, _ in reversed(rows)])
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("LAPA - scratch (points, 95% interval)")
        ax.set_title(title.split(" (")[0], fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_pool(folders: Sequence[Path], out: Path) -> Dict:
    out = Path(out)
    if (out / "benchmark.json").is_file():
        raise BenchmarkConfigError(f"--out {out} is a benchmark folder; the pooled tables go to a folder of their own")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise BenchmarkConfigError(f"--out {out} holds other files; give an empty or new folder")
    benches = load_replicates(folders)
    if out.resolve() in {b.out.resolve() for b in benches}:
        raise BenchmarkConfigError("--out is one of the pooled folders")
    results = collect(benches)
    folder = out / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"folders": [str(f) for f in folders]}, indent=2) + "\n")
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "results.md").write_text(markdown(results))
    plot(results, folder / "replicates.png")
    return results
