"""`lapa benchmark`: does latent pretraining on video beat training from scratch? The paper's protocol,
as one resumable command on the simulated tasks.

    lapa benchmark --preset quick --out runs/benchmark/quick        # minutes: a smoke run (tests run it)
    lapa benchmark --preset cpu --out runs/benchmark/cpu            # about 3 hours on 2 CPU cores
    lapa benchmark --preset gpu --out runs/benchmark/gpu            # paper-like scale, for a GPU
    lapa benchmark --preset cpu --targets push,reach --video-only door-open --out ...   # your own tasks
    lapa benchmark --preset cpu --set cotrain_weight=0 --out ...    # one lever changed
    lapa benchmark --pool runs/a runs/b runs/c --out runs/pooled    # pretraining replicates in one table

Every step is a public `lapa` command, printed before it runs (its output goes to <out>/logs/); a
finished step leaves a marker in <out>/steps/ and is skipped when the command is run again, so an
interrupted run resumes where it stopped. The folder:

    benchmark.json          the resolved configuration and the catalogue entries of its tasks (a folder is
                            only resumed with the same ones)
    data/                   video (with actions: only the action-pretrained arm reads them), video seen
                            from the cross-env view, a pool of labelled demos per target task, labelled
                            play (play_episodes > 0)
    pretrain/<view>/        laq/, lapa/ (latent pretraining), action/ (action pretraining), latents/ (what
                            each latent action does: `lapa laq show`)
    cells/<setting>/<arm>/k<K>/seed<s>/   finetune/ (metrics, plot), eval_*.json (every episode)
    results/                results.md, results.json, success_vs_demos.png, per-task table
See config.py for the settings and arms, stats.py for the intervals and the gap-closure ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from lapa_models.commands import command_line, find, run_in_process

from .report import write_report
from .config import (PLAY_SEED, PRESETS, SPECS_KEY, BenchmarkConfig, BenchmarkConfigError, built_queries, catalogue_record,
                     check_folder, parse_assignment, policy_queries, preset, reusable_parts, task_list, validate)


@dataclasses.dataclass
class Step:
    """One public command of the pipeline."""

    key: str                   # unique, names its marker and log
    words: List[str]           # `lapa <words>`, a command of lapa_sim.commands.SIM_COMMANDS
    argv: List[str]
    after: Optional[Callable[[], None]] = None    # cleanup after success

    def command(self) -> str:
        return command_line(self.words, self.argv)


class Benchmark:
    def __init__(self, config: BenchmarkConfig, out: Path, keep_models: bool = False,
                 specs: Optional[Dict] = None):
        self.config = config
        self.out = Path(out)
        self.keep_models = keep_models
        self.specs = specs               # the catalogue entries the run reads (config.catalogue_record)
        self.reused: List[Path] = []     # the folders whose scratch cells this run takes over (--reuse)

    # ------------------------------------------------------------------ paths
    def data(self, name: str) -> Path:
        return self.out / "data" / name

    def video(self, view: str) -> Path:
        return self.data("video" if view == "default" else f"video-{view}")

    def pretrain(self, view: str) -> Path:
        return self.out / "pretrain" / view

    def cell(self, setting: str, arm: str, k: int, seed: int) -> Path:
        return self.out / "cells" / setting / arm / f"k{k}" / f"seed{seed}"

    def play_labels(self, view: str) -> Optional[str]:
        """Name of the play data's labels by ``view``'s LAQ, where the LAPA arm's action head reads them."""
        c = self.config
        if not (c.play_tasks and "lapa" in c.arms and (c.action_reads_latents or c.action_latents_only)):
            return None
        return "laq" if view == "default" else f"laq-{view}"

    def views(self) -> List[str]:
        """The views whose video is made and pretrained on (only the pretrained arms read video)."""
        if all(a == "scratch" for a in self.config.arms):
            return []
        return ["default"] + ([self.config.view] if self.config.uses("cross-env") else [])

    # ------------------------------------------------------------------ the plan
    def plan(self) -> List[Step]:
        """Every step, the most telling first: the default view's data and pretraining, the cells at
        K = cross_shots (the headline comparison and the cross-task evaluations), the other K, then the
        other view's data, pretraining and cross-environment cells. A run stopped early has the
        headline numbers already."""
        c = self.config
        policy_arch = ["--config", c.policy_config, "--vision-model", c.vision_model]
        # models built from scratch (scratch cells, the action arm's pretraining) take the LAPA model's query
        # tokens, where the policy config's default would give them another architecture
        queries = built_queries(c)
        scratch_arch = policy_arch + ([] if queries == policy_queries(c) else ["--query-tokens", queries])
        common = ["--batch-size", c.batch_size, "--lr", c.lr, "--augment", c.augment, "--no-progress",
                  "--save-every", 0, *(["--threads", c.threads] if c.threads else [])]
        views = self.views()
        steps: List[Step] = []
        if "default" in views:
            steps.append(self._video_step("default"))
        steps.append(Step("data-demos", ["data", "generate"],
                          ["--tasks", ",".join(c.targets), "--episodes-per-task", c.demo_pool, "--seed", c.demo_seed,
                           "--image-size", c.image_size, c.image_size, "--workers", _workers(),
                           "--out", self.data("demos")]))
        if c.play_tasks:
            steps.append(Step("data-play", ["data", "generate"],
                              ["--tasks", ",".join(c.play_tasks), "--episodes-per-task", c.play_episodes,
                               "--play-steps", c.play_steps, "--seed", PLAY_SEED, "--image-size", c.image_size,
                               c.image_size, "--workers", _workers(), "--out", self.data("play")]))
        if "default" in views:
            steps.extend(self._pretrain_steps("default", policy_arch, scratch_arch, common))
        for setting, arm, k, seed, view in self.cells():
            if setting == "cross-env" and not any(s.key == f"data-video-{view}" for s in steps):
                steps.append(self._video_step(view))
                steps.extend(self._pretrain_steps(view, policy_arch, scratch_arch, common))
            steps.extend(self._cell_steps(setting, arm, k, seed, view, scratch_arch, common))
        return steps

    def _video_step(self, view: str) -> Step:
        c = self.config
        return Step(f"data-video-{view}", ["data", "generate"],
                    ["--tasks", ",".join(c.video_tasks), "--episodes-per-task", c.video_episodes,
                     "--seed", c.video_seed, "--image-size", c.image_size, c.image_size, "--workers", _workers(),
                     "--out", self.video(view)] + ([] if view == "default" else ["--view", view]))

    def _pretrain_steps(self, view: str, policy_arch: List, scratch_arch: List, common: List) -> List[Step]:
        c = self.config
        threads = ["--threads", c.threads] if c.threads else []
        video, pre = self.video(view), self.pretrain(view)
        steps: List[Step] = []
        if "lapa" in c.arms:
            steps.append(Step(f"laq-train-{view}", ["laq", "train"],
                              ["--data", video, "--config", c.laq_config, "--frame-gap", c.laq_frame_gap,
                               "--seed", c.pretrain_seed,
                               "--steps", c.laq_steps, "--batch-size", c.laq_batch_size, "--out", pre / "laq",
                               "--no-progress", *threads]))
            steps.append(Step(f"laq-label-{view}", ["laq", "label"],
                              ["--checkpoint", pre / "laq" / "final", "--data", video, "--no-progress"]))
            steps.append(Step(f"laq-show-{view}", ["laq", "show"],
                              ["--checkpoint", pre / "laq" / "final", "--data", video, "--frames", 6,
                               "--out", pre / "latents"]))
            if self.play_labels(view):
                steps.append(Step(f"laq-label-play-{view}", ["laq", "label"],
                                  ["--checkpoint", pre / "laq" / "final", "--data", self.data("play"),
                                   "--name", self.play_labels(view), "--no-progress"]))
            steps.append(Step(f"pretrain-lapa-{view}", ["policy", "pretrain"],
                              ["--data", video, *policy_arch, "--steps", c.pretrain_steps, "--out", pre / "lapa",
                               "--val-fraction", 0.05, "--seed", c.pretrain_seed, *common]
                              + (["--latent-horizon", c.latent_horizon] if c.latent_horizon != 1 else [])))
        if "action" in c.arms:
            steps.append(Step(f"pretrain-action-{view}", ["policy", "finetune"],
                              ["--data", video, "--init", "scratch", *scratch_arch, "--steps", c.pretrain_steps,
                               "--out", pre / "action", "--val-fraction", 0.05, "--seed", c.pretrain_seed, *common]))
        return steps

    def cells(self):
        """(setting, arm, K, seed, pretraining view) of every model finetuned, K = cross_shots first."""
        c = self.config
        shots = sorted(c.finetune_shots, key=lambda k: (k != c.cross_shots, k))
        for k in shots:
            for arm in c.arms:
                for seed in c.seeds:
                    yield "in-domain", arm, k, seed, "default"
        if c.uses("cross-env"):
            for arm in c.arms:
                if arm != "scratch":
                    for seed in c.seeds:
                        yield "cross-env", arm, c.cross_shots, seed, c.view

    def _cell_steps(self, setting, arm, k, seed, view, scratch_arch, common) -> List[Step]:
        c = self.config
        cell = self.cell(setting, arm, k, seed)
        tag = f"{setting}-{arm}-k{k}-s{seed}"
        argv = ["--data", self.data("demos"), "--demos-per-task", k, "--demo-seed", seed, "--seed", seed,
                "--steps", c.finetune_steps, "--val-fraction", 0, "--out", cell / "finetune", "--eval-every", 0, *common]
        if arm == "scratch":
            argv = argv[:2] + ["--init", "scratch", *scratch_arch] + argv[2:]
        else:
            pre = self.pretrain(view)
            argv = argv[:2] + ["--init", pre / arm / "final"] + argv[2:]
            if c.freeze != "none":   # what pretraining learned is kept; scratch has nothing to keep
                argv += ["--freeze", c.freeze]
            if arm == "lapa" and c.action_reads_latents:
                argv += ["--action-reads-latents"]
            if arm == "lapa" and c.action_latents_only:
                argv += ["--action-latents-only"]
            if c.cotrain_weight > 0:
                argv += ["--cotrain-data", self.video(view), "--cotrain-weight", c.cotrain_weight,
                         "--cotrain-target", "latents" if arm == "lapa" else "actions"]
            if arm == "lapa" and self.play_labels(view):
                argv += ["--play-latents", self.play_labels(view)]
        if c.play_tasks:
            argv += ["--play-data", self.data("play"), "--play-weight", c.play_weight]
        export = cell / "export"
        steps = [Step(f"finetune-{tag}", ["policy", "finetune"], argv),
                 Step(f"export-{tag}", ["policy", "export"],
                      ["--checkpoint", cell / "finetune" / "final", "--out", export, "--precisions", "fp32"])]
        groups = {"targets": c.targets}
        if setting == "in-domain" and k == c.cross_shots and c.uses("cross-task"):
            groups.update({"video_only": c.video_only, "held_out": c.held_out})
        for group, tasks in groups.items():
            if not tasks:
                continue
            steps.append(Step(f"eval-{group}-{tag}", ["policy", "evaluate"],
                              ["--export", export, "--tasks", ",".join(tasks), "--episodes", c.eval_episodes,
                               "--seed", c.eval_seed, "--image-size", c.image_size, c.image_size,
                               "--execution", c.execution, "--out", cell / f"eval_{group}.json",
                               *(["--threads", c.threads] if c.threads else [])]))
        if not self.keep_models:
            steps[-1].after = lambda: _drop_models(cell)
        return steps

    # ------------------------------------------------------------------ running
    def share(self, source: Path) -> Dict[str, bool]:
        """Take over what ``source`` finished and this configuration would make the same way, item by item:
        the demos, and per view its video, LAQ (with its labels and `laq show` renderings) and each policy
        pretraining (all linked, their step markers copied), and its finished cells (copied): those of a
        pretrained arm when its pretraining was taken over and the finetuning and evaluation agree, the
        scratch cells whenever their own settings agree. The action-pretrained arm's pretraining and
        cells are taken over also when only the LAPA arm's own settings differ (config.LAPA_ONLY).

        Links go to finished items only, never to a folder this run still writes into, so nothing made
        here lands in ``source`` (a view ``source`` never made, an arm it never pretrained, run here). A
        view's video is linked only where its labels come with it (the LAQ is shared, or no LAPA arm
        labels it here); otherwise it is copied without the source's labels and decoded-frame cache,
        because labelling writes next to the video.

        Several ``--reuse`` folders: called once per folder, in order; an item already here (taken from an
        earlier folder, or this run's own) stays, and a LAQ comes only with its own folder's video."""
        source = source.resolve()
        parts = reusable_parts(source, self.config, self.specs)
        arms = self.config.arms
        (self.out / "steps").mkdir(parents=True, exist_ok=True)

        def done(*keys: str) -> bool:
            return all((source / "steps" / f"{key}.done").is_file() for key in keys)

        taken: List[str] = []  # what this source gave (not what an earlier --reuse folder or run did)

        def theirs(here: Path) -> Path:
            return source / here.relative_to(self.out)

        def present(here: Path) -> bool:
            return here.exists() or here.is_symlink()

        def take(here: Path, *keys: str, copy: bool = False, what: str = "") -> bool:
            """Link (or copy) source's counterpart of ``here`` when it finished ``keys``; markers too. True
            also when ``here`` is that item already (taken before); ``what`` is reported when taken now."""
            there = theirs(here)
            if not (there.is_dir() and done(*keys)):
                return False
            if present(here):
                # taken before (a resumed run), or this run's own, finished or in progress: never marked
                # done on the source's word
                if copy:
                    ours = all((self.out / "steps" / f"{key}.done").is_file() for key in keys)
                else:
                    ours = here.resolve() == there.resolve()
                if not ours:
                    return False
            else:
                here.parent.mkdir(parents=True, exist_ok=True)
                if copy:
                    shutil.copytree(there, here, ignore=shutil.ignore_patterns("latents", "cache"))
                else:
                    here.symlink_to(there, target_is_directory=True)
                if what:
                    taken.append(what)
            for key in keys:
                if not (self.out / "steps" / f"{key}.done").exists():
                    shutil.copy(source / "steps" / f"{key}.done", self.out / "steps" / f"{key}.done")
            return True

        pretrained = set()     # (view, arm) whose pretraining is the source's: its finished cells are too
        take(self.data("demos"), "data-demos", what="demos")
        parts_laq = False
        laq_taken: Dict[str, bool] = {}
        for view in self.views():
            pre, video = self.pretrain(view), self.video(view)
            # the labels live next to the video: a LAQ comes only with its source's video (not over a video
            # an earlier --reuse folder gave or this run made)
            video_free = not present(video) or video.resolve() == theirs(video).resolve()
            laq = "lapa" in arms and parts["laq"] and video_free and \
                take(pre / "laq", f"laq-train-{view}", f"laq-label-{view}", what=f"{view} LAQ")
            laq_taken[view] = bool(laq)
            if laq:
                parts_laq = True
                take(pre / "latents", f"laq-show-{view}")
            labels_here = "lapa" in arms and not laq
            take(video, f"data-video-{view}", copy=labels_here,
                 what=f"{view} video" + (" (copied: labelled here)" if labels_here else ""))
            for arm in arms:
                # the action arm reads none of the LAPA arm's settings: a LAPA lever keeps its pretraining
                same = parts["action_pretraining"] if arm == "action" else parts["pretraining"]
                if arm != "scratch" and same and (arm != "lapa" or laq) and \
                        take(pre / arm, f"pretrain-{arm}-{view}", what=f"{view} {arm} pretraining"):
                    pretrained.add((view, arm))
        parts["laq"] = parts_laq
        self._share_play(source, take, laq_taken)
        cells_too = lambda arm, view: (view, arm) in pretrained and (  # noqa: E731
            parts["action_cells"] if arm == "action" else parts["cells"])
        if pretrained:
            copied = self._share_cells(source, cells_too)
            if copied:
                taken.append(f"{copied} finished cells of the pretrained arms")
        if parts["scratch"] and source not in self.reused:
            self.reused.append(source)
            copied = self._share_scratch_cells(source)
            if copied:
                taken.append(f"{copied} finished scratch cells")
        _say(f"taking over from {source}: {', '.join(taken) or 'nothing finished there'}; the rest runs here")
        return parts

    def _share_play(self, source: Path, take: Callable, laq_taken: Dict[str, bool]) -> None:
        """The labelled play, when ``source`` recorded the same (the scenes are the data's, already the
        same): linked with its labels where every LAQ that labels it came from ``source`` too, else
        copied without them and labelled here (or linked, where nothing labels it)."""
        c = self.config
        saved = json.loads((source / "benchmark.json").read_text())
        if not (c.play_tasks and saved.get("play_episodes") == c.play_episodes
                and saved.get("play_steps", BenchmarkConfig.play_steps) == c.play_steps):
            return
        labelled = [v for v in self.views() if self.play_labels(v)]
        keys = [f"laq-label-play-{v}" for v in labelled]
        if labelled and all(laq_taken.get(v) for v in labelled) and \
                take(self.data("play"), "data-play", *keys, what="play (with its labels)"):
            return
        take(self.data("play"), "data-play", copy=bool(labelled),
             what="play" + (" (copied: labelled here)" if labelled else ""))

    def _share_scratch_cells(self, source: Path) -> int:
        """Copy the scratch cells ``source`` finished with every step this plan has for them."""
        return self._share_cells(source, lambda arm, view: arm == "scratch")

    def _share_cells(self, source: Path, which: Callable[[str, str], bool]) -> int:
        """Copy the cells (of arms and views ``which`` accepts) that ``source`` finished with every step
        this plan has for them."""
        plan = self.plan()
        copied = 0
        for setting, arm, k, seed, view in self.cells():
            if not which(arm, view):
                continue
            tag = f"{setting}-{arm}-k{k}-s{seed}"
            keys = [s.key for s in plan if s.key.endswith("-" + tag)]
            here = self.cell(setting, arm, k, seed)
            there = source / here.relative_to(self.out)
            if here.exists() or not there.is_dir() or not all((source / "steps" / f"{key}.done").is_file() for key in keys):
                continue
            shutil.copytree(there, here, symlinks=True)
            for key in keys:
                shutil.copy(source / "steps" / f"{key}.done", self.out / "steps" / f"{key}.done")
            copied += 1
        return copied

    def ordered(self, steps: List[Step]) -> List[Step]:
        """The plan in running order: a run that takes over another folder's scratch cells (--reuse) runs
        its own scratch steps last, so that cells the other run is still making are taken over when it
        has finished them rather than made twice."""
        if not self.reused:
            return steps
        return [s for s in steps if "-scratch-" not in s.key] + [s for s in steps if "-scratch-" in s.key]

    def marker(self, step: Step) -> Path:
        return self.out / "steps" / f"{step.key}.done"

    def write_config(self) -> None:
        """Make the folder and write benchmark.json (the settings and the catalogue record; a folder's
        earlier record is kept when this run has none), before anything else is written there."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "benchmark.json"
        specs = self.specs
        if specs is None and path.is_file():
            with contextlib.suppress(ValueError, AttributeError):
                specs = json.loads(path.read_text()).get(SPECS_KEY)
        saved = {**self.config.to_dict(), **({SPECS_KEY: specs} if specs is not None else {})}
        path.write_text(json.dumps(saved, indent=2) + "\n")

    def run(self, progress: bool = True) -> Dict:
        catalogue_file = os.environ.get("LAPA_TASKS_FILE")
        self.write_config()
        (self.out / "steps").mkdir(exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        steps = self.ordered(self.plan())
        todo = [s for s in steps if not self.marker(s).is_file()]
        _say(f"{len(steps)} steps, {len(steps) - len(todo)} already done; logs in {self.out / 'logs'}"
             + (f"; catalogue {catalogue_file}" if catalogue_file else ""))
        t0 = time.monotonic()
        for i, step in enumerate(steps, 1):
            if "-scratch-" in step.key and not self.marker(step).is_file():
                # a reused run may have finished this scratch cell since this run started
                for source in self.reused:
                    if self._share_scratch_cells(source):
                        _say(f"took over scratch cells finished meanwhile in {source}")
            if self.marker(step).is_file():
                continue
            prefix = f"LAPA_TASKS_FILE={shlex.quote(catalogue_file)} " if catalogue_file else ""
            _say(f"[{i}/{len(steps)} {_clock(time.monotonic() - t0)}] {prefix}{step.command()}")
            started = time.monotonic()
            self._execute(step)
            if step.after is not None:
                step.after()
            self.marker(step).write_text(json.dumps({"command": step.command(),
                                                     "seconds": round(time.monotonic() - started, 1)}) + "\n")
            if step.words == ["policy", "evaluate"]:   # the table so far, for a run stopped early
                write_report(self)
        results = write_report(self)
        _say(f"done in {_clock(time.monotonic() - t0)}: {self.out / 'results' / 'results.md'}")
        return results

    def _execute(self, step: Step) -> None:
        from ..commands import SIM_COMMANDS

        command = find(SIM_COMMANDS, step.words)
        log = self.out / "logs" / f"{step.key}.log"
        with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            try:
                code = run_in_process(command, step.argv)
            except Exception as e:   # the step's own error, with where to read more
                raise StepFailed(f"`{step.command()}` failed: {type(e).__name__}: {e}\n(log: {log})") from e
        if code:
            tail = "".join(log.read_text().splitlines(True)[-5:])
            raise StepFailed(f"`{step.command()}` exited with {code} (log: {log}):\n{tail}")


class StepFailed(RuntimeError):
    pass


def _workers() -> int:
    """Episode generation processes: the cores there are, up to 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _drop_models(cell: Path) -> None:
    """After evaluation a cell keeps its metrics and episodes, not its weights (disk: ~100 MB a cell)."""
    shutil.rmtree(cell / "export", ignore_errors=True)
    shutil.rmtree(cell / "finetune" / "final", ignore_errors=True)


def _say(msg: str) -> None:
    print(f"[benchmark] {msg}", file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="quick (minutes, tiny models), cpu (~3 h on 2 cores), gpu (paper-like scale)")
    p.add_argument("--out", required=True,
                   help="results folder: new or empty, or a benchmark folder to resume (with the same configuration "
                        "and the same catalogue entries for its tasks)")
    p.add_argument("--targets", default=None, help="tasks/sets given K labelled demos (and in the video)")
    p.add_argument("--video-only", default=None, help="tasks/sets in the video only (cross-task); 'none' for none")
    p.add_argument("--extra-video", default=None, help="more video tasks, not evaluated; 'none' for none")
    p.add_argument("--held-out", default=None, help="tasks in neither video nor demos, evaluated zero-shot")
    p.add_argument("--settings", default=None, help="comma separated: in-domain, cross-task, cross-env")
    p.add_argument("--arms", default=None, help="comma separated: scratch, lapa, action")
    p.add_argument("--shots", default=None, help="K values, comma separated (labelled demos per target task)")
    p.add_argument("--seeds", default=None, help="training seeds, comma separated")
    p.add_argument("--episodes", type=int, default=None, help="evaluation episodes per task and training seed")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of each step, >= 0 (default and 0: torch's default; 1 when other jobs share "
                        "the cores: oversubscribed threads slow torch down many times). A folder resumes with any "
                        "value")
    p.add_argument("--catalogue", default=None, help="a tasks.yaml to use instead of lapa_sim/tasks.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting of config.py (e.g. cotrain_weight=0, freeze=vision, pretrain_steps=5000)")
    p.add_argument("--reuse", action="append", default=None, metavar="FOLDER",
                   help="take over what another benchmark folder finished and this run would make the same way "
                        "(data, LAQ, pretraining, cells; lever studies and replicates); the rest runs here. "
                        "Repeat it to take from several folders: each item from the first that finished it")
    p.add_argument("--keep-models", action="store_true", help="keep each cell's finetuned weights and ONNX export")
    p.add_argument("--plan", action="store_true", help="print the commands and exit")
    p.add_argument("--pool", nargs="+", default=None, metavar="FOLDER",
                   help="pool finished benchmark folders that differ only in pretrain_seed (replicates of the "
                        "pretraining) into one table in --out, with intervals that resample the replicates too; "
                        "runs nothing")


def build_config(args: argparse.Namespace) -> BenchmarkConfig:
    config = preset(args.preset)
    changes: Dict = {}
    for field, value in (("targets", args.targets), ("video_only", args.video_only),
                         ("extra_video", args.extra_video), ("held_out", args.held_out),
                         ("settings", args.settings), ("arms", args.arms)):
        if value is not None:
            changes[field] = () if value.strip().lower() == "none" else tuple(task_list(value))
    for field, value in (("shots", args.shots), ("seeds", args.seeds)):
        if value is not None:
            try:
                changes[field] = tuple(int(v) for v in task_list(value))
            except ValueError as e:
                raise BenchmarkConfigError(f"--{field} {value!r}: expected integers, comma separated") from e
    if args.episodes is not None:
        changes["eval_episodes"] = args.episodes
    resources = {"threads": args.threads} if getattr(args, "threads", None) is not None else {}
    for assignment in args.set:
        key, value = parse_assignment(assignment)
        changes[key] = value
    if changes:
        changes.setdefault("preset", f"{args.preset}+changes")
    return config.replace(**changes, **resources)


# the options that describe a run; --pool reads each folder's own configuration instead
_RUN_OPTIONS = ("targets", "video_only", "extra_video", "held_out", "settings", "arms", "shots", "seeds",
                "episodes", "threads", "catalogue", "reuse")


def _pool(args: argparse.Namespace) -> int:
    from .pool import write_pool

    given = [f"--{name.replace('_', '-')}" for name in _RUN_OPTIONS if getattr(args, name, None) is not None]
    given += ["--set"] * bool(args.set) + ["--plan"] * args.plan + ["--keep-models"] * args.keep_models
    if given:
        raise BenchmarkConfigError(f"--pool reads each folder's own configuration; drop {', '.join(given)}")
    write_pool([Path(f) for f in args.pool], Path(args.out))
    _say(f"pooled {len(args.pool)} replicates: {Path(args.out) / 'results' / 'results.md'}")
    return 0


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        if args.pool:
            return _pool(args)
        if args.catalogue:
            if not Path(args.catalogue).is_file():
                raise BenchmarkConfigError(f"--catalogue {args.catalogue}: no such file")
            os.environ["LAPA_TASKS_FILE"] = str(Path(args.catalogue).resolve())
        from lapa_sim.tasks import load_catalogue

        catalogue = load_catalogue()
        config = validate(build_config(args), catalogue)
        specs = catalogue_record(config, catalogue)
        out = Path(args.out)
        check_folder(out, config, specs)
        sources = [Path(folder) for folder in args.reuse or []]
        for source in sources:
            reusable_parts(source, config, specs)   # fails before anything is written
        bench = Benchmark(config, out, keep_models=args.keep_models, specs=specs)
        if args.plan:
            try:
                for step in bench.plan():
                    print(step.command(), flush=True)
            except BrokenPipeError:   # `--plan | head`
                sys.stderr.close()
            return 0
        if sources:
            bench.write_config()   # a run interrupted while taking over is still this benchmark's folder
        for source in sources:
            bench.share(source)
        bench.run()
    except (BenchmarkConfigError, ValueError, FileNotFoundError, StepFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
