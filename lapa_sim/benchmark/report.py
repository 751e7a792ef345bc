"""The benchmark's results folder: results.json, results.md (tables), success_vs_demos.png (plot).

Reads the evaluation JSON of every cell (one per arm, K, seed and task group) and computes the rates,
the paired bootstrap intervals and the gap-closure ratio with ``stats.summarize``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .stats import summarize

ARM_LABELS = {"scratch": "scratch", "lapa": "LAPA", "action": "action-pretrained"}


def _outcomes(bench, setting: str, arm: str, k: int, group: str, metric: str = "success") -> Optional[Dict]:
    """{task: {seed: [0/1, ...]}} of one arm (``metric`` "progress": graded 0..1), or None when a cell has no
    evaluation yet or an episode has no such value (evaluated before episodes recorded their progress, or a
    world without a shaped reward)."""
    out: Dict = {}
    for seed in bench.config.seeds:
        path = bench.cell(setting, arm, k, seed) / f"eval_{group}.json"
        if not path.is_file():
            return None
        result = json.loads(path.read_text())
        for task, entry in result["tasks"].items():
            values = [e.get(metric) for e in entry["episodes"]]
            if any(v is None for v in values):
                return None
            out.setdefault(task, {})[seed] = [float(v) for v in values]
    return out


def _fmt(x: Optional[float], ci: Optional[List[float]] = None, pct: bool = True) -> str:
    if x is None:
        return "n/a"
    if pct:
        text = f"{100 * x:.1f}"
        return text + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
    return f"{x:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def arm_outcomes(bench, arms_cells: Dict[str, tuple], group: str, metric: str = "success") -> Optional[Dict]:
    """{arm: outcomes} of one folder for {arm: (setting, K)} on a task group; None if any cell is missing."""
    data = {}
    for arm, (setting, k) in arms_cells.items():
        outcomes = _outcomes(bench, setting, arm, k, group, metric)
        if outcomes is None:
            return None
        data[arm] = outcomes
    return data


def _comparison(bench, arms_cells: Dict[str, tuple], group: str, metric: str = "success") -> Optional[Dict]:
    """Summaries for {arm: (setting, K)} on a task group; None if any cell is missing."""
    data = arm_outcomes(bench, arms_cells, group, metric)
    return summarize(data, metric=metric) if data else None


def collect(bench, compare: Optional[Callable[..., Optional[Dict]]] = None) -> Dict:
    """Every comparison the configuration asks for. ``compare({arm: (setting, K)}, task group, metric)`` makes
    one summary (default: this folder's cells; `pool` passes one over several folders)."""
    c = bench.config
    if compare is None:
        compare = lambda cells, group, metric="success": _comparison(bench, cells, group, metric)  # noqa: E731
    results: Dict = {"config": c.to_dict(), "in_domain": {}, "cross_task": {}, "cross_env": None}
    arms = [a for a in ("scratch", "lapa", "action") if a in c.arms]
    if c.uses("in-domain"):
        for k in c.shots:
            results["in_domain"][str(k)] = compare({a: ("in-domain", k) for a in arms}, "targets")
    if c.uses("cross-task"):
        results["cross_task_progress"] = {}
        for group in ("video_only", "held_out"):
            if getattr(c, group):
                cells = {a: ("in-domain", c.cross_shots) for a in arms}
                results["cross_task"][group] = compare(cells, group)
                # Success is at its floor on tasks no demo showed: how far the episodes got tells more (the
                # world's graded progress; None where the cells did not record it).
                results["cross_task_progress"][group] = compare(cells, group, "progress")
    if c.uses("cross-env"):
        cells = {a: ("in-domain" if a == "scratch" else "cross-env", c.cross_shots) for a in arms}
        results["cross_env"] = compare(cells, "targets")
    return results


def table_row(label: str, summary: Dict, arms: List[str], metric: str = "success") -> str:
    cells = [_fmt(summary["arms"][a][metric], summary["arms"][a]["ci"]) for a in arms]
    diff = summary.get("lapa_minus_scratch")
    g = summary.get("gap_closure")
    return (f"| {label} | " + " | ".join(cells) + " | "
            + (_fmt(diff["value"], diff["ci"]) if diff else "n/a") + " | "
            + (_fmt(g["value"], g["ci"], pct=False) if g else "n/a") + " |")


def _changes_from_preset(c: Dict) -> str:
    """'key=value, ...' for the method's settings that differ from the named preset (task lists, the
    protocol's sizes and resources are stated elsewhere)."""
    from .config import PRESETS, BenchmarkConfig

    name = str(c.get("preset", "")).split("+")[0]
    if name not in PRESETS:
        return ""
    base = BenchmarkConfig(**PRESETS[name]).to_dict()
    skip = {"preset", "threads", "targets", "video_only", "extra_video", "held_out", "settings", "arms", "shots",
            "seeds", "eval_episodes"}
    return ", ".join(f"{k}={c[k]}" for k in c if k not in skip and k in base and c[k] != base[k])


def markdown(results: Dict, wall_seconds: Optional[float] = None) -> str:
    c = results["config"]
    arms = [a for a in ("scratch", "lapa", "action") if a in c["arms"]]
    header = ("| | " + " | ".join(ARM_LABELS[a] for a in arms) + " | LAPA - scratch | G |\n"
              "|---|" + "---|" * (len(arms) + 2))
    lines = [f"# LAPA benchmark (preset `{c['preset']}`)", "",
             f"Success rate in % with 95% intervals (paired stratified bootstrap over training seeds and "
             f"episodes); G = (LAPA - scratch) / (action-pretrained - scratch). {len(c['seeds'])} training seeds "
             f"x {c['eval_episodes']} evaluation episodes per task (seeds from {c['eval_seed']}, unseen in any "
             f"training data); {c['finetune_steps']} finetuning steps for every arm.", "",
             f"- targets (video + K demos): {', '.join(c['targets'])}",
             f"- video only: {', '.join(c['video_only']) or '-'}; held out: {', '.join(c['held_out']) or '-'}",
             f"- more video: {', '.join(c['extra_video']) or '-'}; video: {c['video_episodes']} episodes per task "
             f"at {c['image_size']} px; cross-env view: {c['view']}"]
    changes = _changes_from_preset(c)
    if changes:
        lines.append(f"- changed from the preset: {changes}")
    lines.append("")
    if results["in_domain"]:
        lines += ["## In-domain few-shot (target tasks)", "", header.replace("| |", "| K |", 1)]
        for k, summary in results["in_domain"].items():
            lines.append(table_row(k, summary, arms) if summary else f"| {k} | " + "pending | " * (len(arms) + 2))
        lines.append("")
    for group, summary in results["cross_task"].items():
        title = {"video_only": "Cross-task: tasks seen only as unlabelled video",
                 "held_out": "Held out: tasks in neither the video nor the demos"}[group]
        lines += [f"## {title} (K = {c['cross_shots']} demos of the targets)", "", header]
        lines.append(table_row("all", summary, arms) if summary else "| all | pending |")
        progress = (results.get("cross_task_progress") or {}).get(group)
        if progress:
            lines.append(table_row("progress", progress, arms, "progress"))
            lines += ["", "progress: how far an episode got, 1 on success, else the best of the environment's "
                      "shaped reward over its scale (Meta-World: reaching, then moving the object, counts); "
                      "mean in %, same intervals."]
        lines.append("")
    if c["settings"] and "cross-env" in c["settings"]:
        summary = results["cross_env"]
        lines += [f"## Cross-environment: pretraining video from the `{c['view']}` view (K = {c['cross_shots']})",
                  "", header]
        lines.append(table_row("all", summary, arms) if summary else "| all | pending |")
        lines.append("")
    lines += ["## Per task", "", "| setting | task | " + " | ".join(ARM_LABELS[a] for a in arms) + " |",
              "|---|---|" + "---|" * len(arms)]
    blocks = [(f"in-domain K={k}", s) for k, s in results["in_domain"].items()]
    blocks += [(f"cross-task ({g})", s) for g, s in results["cross_task"].items()]
    blocks += [("cross-env", results["cross_env"])] if results["cross_env"] else []
    for label, summary in blocks:
        if not summary:
            continue
        for task in summary["arms"][arms[0]]["tasks"]:
            lines.append(f"| {label} | {task} | " + " | ".join(
                f"{100 * summary['arms'][a]['tasks'][task]:.0f}" for a in arms) + " |")
    if wall_seconds is not None:
        lines += ["", f"Wall time of the steps: {wall_seconds / 3600:.2f} h."]
    return "\n".join(lines) + "\n"


def plot(results: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = results["config"]
    arms = [a for a in ("scratch", "lapa", "action") if a in c["arms"]]
    colors = {"scratch": "tab:gray", "lapa": "tab:blue", "action": "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    ks = [int(k) for k, s in results["in_domain"].items() if s]
    for offset, arm in zip((-0.15, 0, 0.15), arms):
        ys = [results["in_domain"][str(k)]["arms"][arm] for k in ks]
        if not ys:
            continue
        x = [k * (1 + 0.04 * offset) for k in ks]
        mid = [100 * y["success"] for y in ys]
        err = [[100 * (y["success"] - y["ci"][0]) for y in ys], [100 * (y["ci"][1] - y["success"]) for y in ys]]
        ax.errorbar(x, mid, yerr=err, marker="o", capsize=4, label=ARM_LABELS[arm], color=colors[arm])
    ax.set_xscale("log")
    ax.set_xticks(ks or [1])
    ax.set_xticklabels([str(k) for k in ks] or ["1"])
    ax.set_xticks([], minor=True)   # a log axis labels its minor ticks (6x10^0) between the chosen K
    ax.set_xlabel("labelled demos per target task (K)")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("in-domain few-shot (95% intervals)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:   # a run stopped early may have no finished K yet
        ax.legend()
    ax = axes[1]
    groups = [(f"cross-task\n({g.replace('_', ' ')})", s) for g, s in results["cross_task"].items() if s]
    if results["cross_env"]:
        groups.append(("cross-env", results["cross_env"]))
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        mids = [100 * s["arms"][arm]["success"] for _, s in groups]
        errs = [[100 * (s["arms"][arm]["success"] - s["arms"][arm]["ci"][0]) for _, s in groups],
                [100 * (s["arms"][arm]["ci"][1] - s["arms"][arm]["success"]) for _, s in groups]]
        ax.bar([g + (i - (len(arms) - 1) / 2) * width for g in range(len(groups))], mids, width, yerr=errs,
               capsize=3, label=ARM_LABELS[arm], color=colors[arm])
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g for g, _ in groups], fontsize=8)
    ax.set_ylim(0, 102)
    ax.set_title(f"K = {c['cross_shots']}")
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"LAPA benchmark, preset {c['preset']}: {len(c['seeds'])} seeds x {c['eval_episodes']} episodes "
                 "per task")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(bench) -> Dict:
    results = collect(bench)
    wall = 0.0
    for marker in (bench.out / "steps").glob("*.done"):
        try:
            wall += float(json.loads(marker.read_text()).get("seconds", 0))
        except (ValueError, OSError):
            pass
    results["wall_seconds_of_steps"] = round(wall, 1)
    folder = bench.out / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "results.md").write_text(markdown(results, wall))
    plot(results, folder / "success_vs_demos.png")
    return results
