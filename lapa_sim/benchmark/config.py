"""What a LAPA benchmark run is: task lists, arms, settings, budgets; the named presets; the checks.

Plain Python (the catalogue is read for the checks, no simulator is started). A run's resolved
configuration is written to ``<out>/benchmark.json``; a folder is only ever resumed with the same one.

Settings (the paper's protocol, on simulated tasks):
    in-domain    K labelled demos of each *target* task, K in ``shots``; the targets are in the video
    cross-task   the ``cross_shots`` models evaluated on *video-only* tasks (in the unlabelled video, no
                 labelled demo) and on *held-out* tasks (in neither), with their own instructions
    cross-env    pretraining video seen through another camera and light (``view``) than the demos and
                 the evaluation, at K = ``cross_shots``

Arms (same architecture, same finetuning steps and batch of labelled demos):
    scratch      no pretraining
    lapa         LAQ on the video (no actions) -> latent pretraining -> action finetuning
    action       the same video with its true actions (the upper bound): action pretraining -> finetuning
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ARMS = ("scratch", "lapa", "action")
SETTINGS = ("in-domain", "cross-task", "cross-env")


class BenchmarkConfigError(ValueError):
    """A configuration that cannot run (the message says what and how to fix it)."""


PLAY_SEED = 70_000   # each scene's first play episode (apart from the video's, demos' and evaluation's seeds)


@dataclasses.dataclass
class BenchmarkConfig:
    # --- tasks (names or sets of the catalogue)
    targets: Tuple[str, ...] = ()          # in the video AND given K labelled demos each
    video_only: Tuple[str, ...] = ()       # in the video only: cross-task evaluation
    extra_video: Tuple[str, ...] = ()      # more video for variety (not evaluated)
    held_out: Tuple[str, ...] = ()         # in neither video nor demos: evaluated zero-shot
    # --- protocol
    settings: Tuple[str, ...] = SETTINGS
    arms: Tuple[str, ...] = ARMS
    shots: Tuple[int, ...] = (5, 10, 25)
    cross_shots: int = 10                  # K of the models used for cross-task and cross-env
    seeds: Tuple[int, ...] = (0, 1, 2)     # training seeds (finetuning seed and which K demos are drawn)
    eval_episodes: int = 20                # per task and training seed
    eval_seed: int = 100_000               # first evaluation seed (the same layouts for every arm)
    # --- data
    image_size: int = 64
    video_episodes: int = 25               # per video task
    video_seed: int = 0
    demo_pool: int = 30                    # demos generated per target task (K are drawn from them)
    demo_seed: int = 50_000
    view: str = "shifted"                  # the catalogue view of the cross-env pretraining video
    # --- stage 1: LAQ
    laq_config: str = "tiny"
    laq_steps: int = 3000
    laq_frame_gap: int = 3
    laq_batch_size: int = 32
    pretrain_seed: int = 0                 # seed of LAQ training and of both pretrainings: another value is a
                                           #   replicate of the whole pretraining (its variance across runs)
    # --- stages 2 and 3: the policy
    policy_config: str = "small"
    vision_model: str = "config:siglip-mini"
    pretrain_steps: int = 3000
    latent_horizon: int = 1                # latent actions predicted per frame in latent pretraining (t -> t+k,
                                           #   t+k -> t+2k, ...: the counterpart of the action chunk)
    query_tokens: int = 0                  # query tokens of the models built from scratch (the scratch cells, the
                                           #   action arm's pretraining); 0: the LAPA model's (its LAQ's tokens x
                                           #   latent_horizon), so that every arm has the same architecture
    finetune_steps: int = 600
    batch_size: int = 32
    lr: float = 3e-4
    augment: str = "color"
    # --- levers (see the README's levers table)
    cotrain_weight: float = 0.5            # the pretraining objective kept as an auxiliary loss while finetuning
    freeze: str = "none"                   # pretrained arms: none | vision | backbone stays frozen
    action_reads_latents: bool = False     # LAPA arm: the action head also reads the predicted latent actions
    action_latents_only: bool = False      # LAPA arm: the action head reads only them (a latent -> action MLP)
    play_episodes: int = 0                 # labelled play per scene of the targets and the extra video (random
                                           #   reaching, no task), trained on by every arm while finetuning; a
                                           #   head reading latent actions is given those that followed
    play_steps: int = 60                   # steps per play episode
    play_weight: float = 1.0               # weight of the play loss while finetuning
    execution: str = "ensemble"            # how chunks become commands in evaluation
    threads: int = 0                       # torch threads per step (0: torch's default); a resource, not part
                                           #   of what a folder measures (--threads)
    preset: str = "custom"

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "BenchmarkConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k != SPECS_KEY}   # benchmark.json's catalogue record, not a setting
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise BenchmarkConfigError(f"unknown benchmark settings {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def replace(self, **changes: Any) -> "BenchmarkConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ derived
    @property
    def video_tasks(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(self.targets + self.video_only + self.extra_video))

    @property
    def play_tasks(self) -> Tuple[str, ...]:
        """The scenes labelled play is recorded in: the targets' and the extra video's, never those of the
        video-only or held-out tasks (no labelled data of any kind from the scenes a setting tests transfer to)."""
        return tuple(dict.fromkeys(self.targets + self.extra_video)) if self.play_episodes else ()

    def uses(self, setting: str) -> bool:
        return setting in self.settings

    @property
    def finetune_shots(self) -> Tuple[int, ...]:
        """Every K a model is finetuned at (in-domain shots, plus cross_shots for the other settings)."""
        ks = set(self.shots) if self.uses("in-domain") else set()
        if self.uses("cross-task") or self.uses("cross-env"):
            ks.add(self.cross_shots)
        return tuple(sorted(ks))


# ---------------------------------------------------------------------------- presets
_QUICK = dict(
    preset="quick", targets=("reach", "drawer-close"), video_only=("button-press-topdown",), extra_video=(),
    held_out=("door-close",), shots=(2,), cross_shots=2, seeds=(0, 1), eval_episodes=2,
    image_size=32, video_episodes=3, demo_pool=3, laq_config="tiny", laq_steps=30, laq_batch_size=8,
    policy_config="tiny", vision_model="config:siglip-tiny", pretrain_steps=20, latent_horizon=3, finetune_steps=12,
    batch_size=8, threads=0)
# About 3 hours on 2 CPU cores (3.24 h of steps measured, mostly two jobs side by side:
# docs/benchmark/cpu). Targets are tasks where the scratch arm at K = 10 is neither at the floor nor the
# ceiling (measured: push ~5% and drawer-open, door-open 100% for every arm, which can show no
# difference); 100 video episodes per task (25 gave latent pretraining 0.69 held-out token accuracy, 100
# gave 0.88). Latent pretraining predicts 3 consecutive latent actions (frames t .. t+9, about the span
# of the 8-action chunk): LAPA at K = 10 63.8 -> 72.9 for one pretraining, pooled over three in
# docs/benchmark/cpu-k10/pooled-with-action.
_CPU = dict(
    preset="cpu",
    targets=("window-open", "button-press", "reach", "plate-slide"),
    video_only=("window-close", "button-press-topdown", "push", "door-open"),
    extra_video=("drawer-open", "drawer-close", "door-close", "coffee-button"),
    held_out=(), shots=(5, 10, 25), cross_shots=10, seeds=(0, 1, 2), eval_episodes=20, image_size=64,
    video_episodes=100, demo_pool=30, laq_config="tiny", laq_steps=3000, policy_config="small",
    vision_model="config:siglip-mini", pretrain_steps=3000, latent_horizon=3, finetune_steps=600, batch_size=32)
# Paper-like scale for a GPU: more video, a larger LAQ, the SigLIP-base policy at 224 px.
_GPU = dict(
    preset="gpu",
    targets=("push", "drawer-open", "window-open", "button-press", "pick-place", "peg-insert-side"),
    video_only=("reach", "door-open", "window-close", "drawer-close", "faucet-open", "sweep-into"),
    extra_video=("button-press-topdown", "door-close", "plate-slide", "coffee-button", "faucet-close",
                 "push-back"),
    held_out=(), shots=(5, 10, 25), cross_shots=10, seeds=(0, 1, 2, 3, 4), eval_episodes=50, image_size=224,
    video_episodes=200, demo_pool=30, laq_config="small", laq_steps=30000, laq_batch_size=64,
    policy_config="siglip-base", vision_model="google/siglip-base-patch16-224", pretrain_steps=20000, latent_horizon=3,
    finetune_steps=3000, batch_size=64, lr=1e-4)
PRESETS: Dict[str, Dict[str, Any]] = {"quick": _QUICK, "cpu": _CPU, "gpu": _GPU}


def preset(name: str) -> BenchmarkConfig:
    if name not in PRESETS:
        raise BenchmarkConfigError(f"unknown preset '{name}'; choose one of {sorted(PRESETS)}")
    return BenchmarkConfig(**PRESETS[name])


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_assignment(text: str) -> Tuple[str, Any]:
    """'key=value' -> (key, value) with the value typed like the field (lists: comma separated)."""
    if "=" not in text:
        raise BenchmarkConfigError(f"--set {text!r}: expected key=value")
    key, value = text.split("=", 1)
    key = key.strip().replace("-", "_")
    fields = {f.name: f for f in dataclasses.fields(BenchmarkConfig)}
    if key not in fields:
        raise BenchmarkConfigError(f"--set {key}: unknown setting; known: {', '.join(sorted(fields))}")
    default = getattr(BenchmarkConfig(), key)
    try:
        if isinstance(default, tuple):
            items = [v.strip() for v in value.split(",") if v.strip()]
            typed = tuple(int(v) for v in items) if key in ("shots", "seeds") else tuple(items)
        elif isinstance(default, bool):
            word = value.strip().lower()
            if word not in _TRUE + _FALSE:
                raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)}")
            typed = word in _TRUE
        elif isinstance(default, int):
            typed = int(value)
        elif isinstance(default, float):
            typed = float(value)
        else:
            typed = value
    except ValueError as e:
        raise BenchmarkConfigError(f"--set {key}={value}: {e}") from e
    return key, typed


# ---------------------------------------------------------------------------- checks
def _ranges_overlap(a: Tuple[int, int], b: Tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def validate(config: BenchmarkConfig, catalogue) -> BenchmarkConfig:
    """Resolve task sets to task names and check everything that can be checked before any work.

    ``catalogue``: a lapa_sim.tasks.TaskCatalogue. Returns the config with task lists expanded."""
    from lapa_sim.tasks import check_runnable

    _check_numbers(config)
    resolved = {}
    for field in ("targets", "video_only", "extra_video", "held_out"):
        names = getattr(config, field)
        resolved[field] = tuple(t.name for t in catalogue.resolve(list(names))) if names else ()
    config = config.replace(**resolved)
    if not config.targets:
        raise BenchmarkConfigError("no target tasks: give --targets (the tasks that get labelled demos)")
    groups = {k: set(v) for k, v in resolved.items()}
    for a, b in (("targets", "video_only"), ("targets", "held_out"), ("video_only", "held_out"),
                 ("extra_video", "held_out")):
        both = groups[a] & groups[b]
        if both:
            raise BenchmarkConfigError(f"tasks {sorted(both)} are in both --{a.replace('_', '-')} and "
                                       f"--{b.replace('_', '-')}; each task has one role")
    for name in config.video_tasks + config.held_out:
        check_runnable(catalogue.get(name))
    bad = [s for s in config.settings if s not in SETTINGS]
    if bad:
        raise BenchmarkConfigError(f"unknown settings {bad}; choose from {list(SETTINGS)}")
    bad = [a for a in config.arms if a not in ARMS]
    if bad:
        raise BenchmarkConfigError(f"unknown arms {bad}; choose from {list(ARMS)}")
    if "scratch" not in config.arms:
        raise BenchmarkConfigError("the scratch arm is the baseline every other arm is compared with: keep it")
    if config.uses("cross-task") and not (config.video_only or config.held_out):
        raise BenchmarkConfigError("cross-task needs --video-only and/or --held-out tasks")
    if config.uses("cross-env"):
        if config.view in ("", "default"):
            raise BenchmarkConfigError("cross-env needs a view other than the default (--set view=NAME)")
        try:
            catalogue.view(config.view)
        except ValueError as e:
            raise BenchmarkConfigError(
                f"cross-env pretrains on video seen from the view '{config.view}': {e}. Add it under `views:` in "
                "the catalogue (camera and light, as lapa_sim/tasks.yaml does), name another with --set view=NAME, "
                "or leave cross-env out (--settings in-domain,cross-task)") from e
    if not config.shots or min(config.shots) < 1 or config.cross_shots < 1:
        raise BenchmarkConfigError(f"shots must be >= 1, got {list(config.shots)} and cross_shots {config.cross_shots}")
    largest = max(config.finetune_shots or (0,))
    if largest > config.demo_pool:
        raise BenchmarkConfigError(
            f"K = {largest} labelled demos per task is more than the {config.demo_pool} generated per target task: "
            f"raise demo_pool (--set demo_pool={largest + 5}) or lower the shots")
    if not config.seeds or len(set(config.seeds)) != len(config.seeds):
        raise BenchmarkConfigError(f"seeds must be distinct and at least one, got {list(config.seeds)}")
    evaluation = (config.eval_seed, config.eval_seed + config.eval_episodes)
    for what, start, n in (("video", config.video_seed, config.video_episodes),
                           ("demo", config.demo_seed, config.demo_pool)):
        if _ranges_overlap(evaluation, (start, start + n)):
            raise BenchmarkConfigError(f"evaluation seeds {evaluation[0]}..{evaluation[1] - 1} overlap the {what} "
                                       f"seeds {start}..{start + n - 1}: evaluation layouts must be unseen")
    if _ranges_overlap((config.video_seed, config.video_seed + config.video_episodes),
                       (config.demo_seed, config.demo_seed + config.demo_pool)):
        raise BenchmarkConfigError("video and demo seeds overlap: the demos must be new episodes")
    if config.play_episodes and _ranges_overlap(evaluation, (PLAY_SEED, PLAY_SEED + config.play_episodes)):
        raise BenchmarkConfigError(f"play_episodes {config.play_episodes}: play seeds from {PLAY_SEED} would reach "
                                   f"the evaluation seeds from {evaluation[0]}")
    if config.freeze not in ("none", "vision", "backbone"):
        raise BenchmarkConfigError(f"freeze must be none, vision or backbone, got {config.freeze!r}")
    if config.augment not in ("color", "crop+color", "none"):
        raise BenchmarkConfigError(f"augment must be color, crop+color or none, got {config.augment!r}")
    built_queries(config)   # an unreadable LAQ or policy config fails here, before any work
    return config


# The numeric settings and what each must be (checked before any work; validate() checks the relations
# between them): {field: (smallest value, the largest or None, what the error says)}.
_NUMBER_RANGES = {
    "cross_shots": (1, None, "labelled demos per target task"),
    "eval_episodes": (1, None, "episodes per task and training seed"),
    "eval_seed": (0, None, "a seed"),
    "image_size": (1, None, "pixels"),
    "video_episodes": (1, None, "episodes per video task"),
    "video_seed": (0, None, "a seed"),
    "demo_pool": (1, None, "demos per target task"),
    "demo_seed": (0, None, "a seed"),
    "laq_steps": (1, None, "training steps"),
    "laq_frame_gap": (1, None, "frames between the two frames of a latent action"),
    "laq_batch_size": (1, None, "a batch size"),
    "pretrain_seed": (0, None, "a seed"),
    "pretrain_steps": (1, None, "training steps"),
    "latent_horizon": (1, None, "latent actions per frame"),
    "query_tokens": (0, None, "0: the LAPA model's"),
    "finetune_steps": (1, None, "training steps"),
    "batch_size": (1, None, "a batch size"),
    "threads": (0, None, "0: torch's default"),
    "play_episodes": (0, None, "play episodes per scene, 0: none"),
    "play_steps": (2, None, "steps per play episode"),
}


def _check_numbers(config: BenchmarkConfig) -> None:
    """Every numeric setting of the right type, finite and in its range (a learning rate of -1 or a NaN
    loss weight is refused here, not found out by a training step)."""
    for field, (low, high, meaning) in _NUMBER_RANGES.items():
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise BenchmarkConfigError(f"{field} must be a whole number {bound} ({meaning}), got {value!r}")
    for field in ("shots", "seeds"):
        values = getattr(config, field)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise BenchmarkConfigError(f"{field} must be whole numbers, got {list(values)}")
    if any(s < 0 for s in config.seeds):
        raise BenchmarkConfigError(f"seeds must be >= 0, got {list(config.seeds)}")
    if len(set(config.shots)) != len(config.shots):
        raise BenchmarkConfigError(f"shots must be distinct, got {list(config.shots)}")
    lr = _real(config.lr)
    if lr is None or not lr > 0:
        raise BenchmarkConfigError(f"lr must be a finite number > 0, got {config.lr!r}")
    weight = _real(config.cotrain_weight)
    if weight is None or weight < 0:
        raise BenchmarkConfigError(f"cotrain_weight must be a finite number >= 0 (0: no co-training), got "
                                   f"{config.cotrain_weight!r}")
    play_weight = _real(config.play_weight)
    if play_weight is None or not play_weight > 0:
        raise BenchmarkConfigError(f"play_weight must be a finite number > 0, got {config.play_weight!r}")
    execution = str(config.execution)
    if execution.startswith("open-loop:"):
        n = execution.split(":", 1)[1]
        if not (n.isdigit() and int(n) >= 1):
            raise BenchmarkConfigError(f"execution {execution!r}: open-loop:N needs a whole number N >= 1")
    elif execution not in ("ensemble", "average", "latest", "first"):
        raise BenchmarkConfigError(f"execution must be ensemble, average, latest, first or open-loop:N, got "
                                   f"{execution!r}")


def _real(value: Any):
    """A finite int or float as a float, else None (NaN, infinities, strings, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def policy_queries(config: BenchmarkConfig) -> int:
    """Query tokens the policy config builds by default (what a scratch model had before ``query_tokens``)."""
    from lapa_models.policy.configuration import get_config

    try:
        return int(get_config(config.policy_config).latent_num_tokens)
    except (ValueError, OSError) as e:
        raise BenchmarkConfigError(f"policy_config {config.policy_config!r}: {e}") from e


def built_queries(config: BenchmarkConfig) -> int:
    """Query tokens of the models built from scratch: ``query_tokens``, or (0) the LAPA model's, its LAQ's
    tokens x ``latent_horizon`` (the same for every selection of arms, so runs with other arms share)."""
    if config.query_tokens:
        return int(config.query_tokens)
    from lapa_models.laq.configuration import ConfigError, get_config

    try:
        return int(get_config(config.laq_config).num_latent_tokens) * int(config.latent_horizon)
    except (ConfigError, ValueError, OSError) as e:
        raise BenchmarkConfigError(f"laq_config {config.laq_config!r}: {e}") from e


# How a run uses the machine, not what it measures: a folder may be resumed with other values.
RESOURCES = ("threads",)

# benchmark.json's record of what the run read from the task catalogue (beside the settings): every
# field of each task it uses (env, expert, instructions, camera, max_steps, robot: TaskSpec.record) and,
# with cross-env, its view (camera and light changes). A folder written before this record resumes with
# any catalogue (what it was made from is unknown) and records the catalogue it is resumed with.
SPECS_KEY = "catalogue_specs"


def catalogue_record(config: BenchmarkConfig, catalogue) -> Dict[str, Any]:
    """{"tasks": {name: spec}, "views": {name: view}} of the tasks and view ``config`` (validated) uses."""
    tasks = {name: catalogue.get(name).record() for name in dict.fromkeys(config.video_tasks + config.held_out)}
    views = {}
    if config.uses("cross-env"):
        view = catalogue.view(config.view)
        if view is not None:
            views[config.view] = view.record()
    return {"tasks": tasks, "views": views}


def _read_folder_config(path: Path, what: str) -> Dict[str, Any]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BenchmarkConfigError(f"{what}{path}: unreadable ({e})") from e
    if not isinstance(saved, dict):
        raise BenchmarkConfigError(f"{what}{path}: unreadable (not a mapping of settings)")
    return saved


def _spec_differences(saved: Any, now: Optional[Dict[str, Any]], kind: str,
                      names: Optional[Sequence[str]] = None) -> List[str]:
    """'task 'x' (instructions, max_steps)' for each task (``kind`` "tasks") or view ("views") of ``names``
    (default: all) that both records hold and that differs; an absent record is unknown and differs in
    nothing."""
    if not isinstance(saved, dict) or not isinstance(saved.get(kind), dict) or not now:
        return []
    before, after = saved[kind], now.get(kind) or {}
    out = []
    for name in (names if names is not None else sorted(set(before) & set(after))):
        a, b = before.get(name), after.get(name)
        if a is None or b is None or a == b:
            continue
        fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) if isinstance(a, dict) else ["spec"]
        out.append(f"{kind[:-1]} '{name}' in the catalogue ({', '.join(fields)} differ)")
    return out


def check_folder(out: Path, config: BenchmarkConfig, specs: Optional[Dict[str, Any]] = None) -> None:
    """A results folder is resumed only with the configuration it was started with (and, ``specs`` given,
    the same catalogue entries for the tasks and view it uses: catalogue_record); a new folder must be
    empty or not exist yet, never a file or a folder of other files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BenchmarkConfigError(f"--out {out} is a file, not a folder: give a new or empty folder")
    above = next((p for p in out.absolute().parents if p.exists()), None)
    if not out.exists() and above is not None and not above.is_dir():
        raise BenchmarkConfigError(f"--out {out}: {above} is a file, not a folder: give a new or empty folder")
    path = out / "benchmark.json"
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise BenchmarkConfigError(
                f"--out {out} holds other files and is not a benchmark folder (no benchmark.json). Nothing was "
                f"changed: give a new or empty folder")
        return
    raw = _read_folder_config(path, "")
    saved = _with_defaults(raw)
    now = config.to_dict()
    differs = sorted(k for k in set(saved) | set(now) if k not in RESOURCES and saved.get(k) != now.get(k))
    details = [f"{k}: folder {saved.get(k)!r}, now {now.get(k)!r}" for k in differs[:6]]
    details += (_spec_differences(raw.get(SPECS_KEY), specs, "tasks")
                + _spec_differences(raw.get(SPECS_KEY), specs, "views"))
    if details:
        raise BenchmarkConfigError(
            f"{out} holds a benchmark with another configuration ({'; '.join(details[:8])}). Nothing was changed: "
            f"give another --out, or the same options and catalogue as before to resume it")


def _with_defaults(saved: Dict[str, Any]) -> Dict[str, Any]:
    """A saved configuration with the settings added since it was written at their defaults (which are
    what those runs did), without the catalogue record (SPECS_KEY; read where it is compared)."""
    return {**BenchmarkConfig().to_dict(), **{k: v for k, v in saved.items() if k != SPECS_KEY}}


# What ``lapa benchmark --reuse`` may share with another folder, from the most to the least shared:
# the data (generated video and demos) when these agree,
DATA_FIELDS = ("targets", "video_only", "extra_video", "image_size", "video_episodes", "video_seed", "demo_pool",
               "demo_seed", "view")
# the LAQ and its labels of the video when these agree as well (a lever on the policy's pretraining),
LAQ_FIELDS = DATA_FIELDS + ("laq_config", "laq_steps", "laq_frame_gap", "laq_batch_size", "pretrain_seed")
# the pretraining (LAQ, labels, both pretrained policies) when everything but these agrees as well,
FINETUNE_ONLY = ("preset", "settings", "arms", "shots", "cross_shots", "seeds", "eval_episodes", "eval_seed",
                 "held_out", "finetune_steps", "cotrain_weight", "freeze", "action_reads_latents", "action_latents_only",
                 "execution", "play_episodes", "play_steps", "play_weight")
# the finished cells of the pretrained arms when the pretraining and everything but these agree as well
# (which cells a run makes, not how it makes one),
SELECTION = ("preset", "settings", "arms", "shots", "cross_shots", "seeds")
# the action-pretrained arm's pretraining and cells also when only these differ: the LAPA arm's own
# settings (its LAQ, its latent targets, its action head), which no step of the action arm reads,
LAPA_ONLY = ("laq_config", "laq_steps", "laq_frame_gap", "laq_batch_size", "latent_horizon", "action_reads_latents",
             "action_latents_only", "query_tokens")   # (the action arm's query tokens are compared as built)
# and the finished scratch cells (which read neither video nor pretraining) when the data and these agree.
SCRATCH_SAME = ("held_out", "finetune_steps", "eval_episodes", "eval_seed", "execution", "policy_config",
                "vision_model", "batch_size", "lr", "augment", "play_episodes", "play_steps", "play_weight")


def reusable_parts(source: Path, config: BenchmarkConfig, specs: Optional[Dict[str, Any]] = None) -> Dict[str, bool]:
    """What of ``source``'s benchmark folder ``config`` can share: {"data", "laq", "pretraining", "cells",
    "action_pretraining", "action_cells", "scratch"} (by configuration and, ``specs`` given, by the
    catalogue entries both runs read: catalogue_record; whether ``source`` has finished them is the
    caller's to check)."""
    path = Path(source) / "benchmark.json"
    if not path.is_file():
        raise BenchmarkConfigError(f"--reuse {source}: not a benchmark folder (no benchmark.json)")
    raw = _read_folder_config(path, "--reuse ")
    saved = _with_defaults(raw)
    now = config.to_dict()
    # the scratch-built models' query tokens (a folder from before ``query_tokens`` built the policy
    # config's default whatever its LAQ and latent horizon)
    saved_config = BenchmarkConfig.from_dict(saved)
    saved_queries = built_queries(saved_config) if "query_tokens" in raw else policy_queries(saved_config)
    queries_same = saved_queries == built_queries(config)
    same = lambda fields: all(saved.get(k) == now.get(k) for k in fields)  # noqa: E731
    data_differs = [k for k in DATA_FIELDS if saved.get(k) != now.get(k)]
    if data_differs:
        raise BenchmarkConfigError(f"--reuse {source}: its data differ in {data_differs}; nothing can be shared")
    # the catalogue entries of the tasks in the video and demos (and of the cross-env view) made the data;
    # a held-out task's is read by the evaluation of the cells only
    record = raw.get(SPECS_KEY)
    data_specs = (_spec_differences(record, specs, "tasks", config.video_tasks)
                  + _spec_differences(record, specs, "views"))
    if data_specs:
        raise BenchmarkConfigError(f"--reuse {source}: its data were generated from other catalogue entries "
                                   f"({'; '.join(data_specs)}); nothing can be shared")
    evaluation_same = not _spec_differences(record, specs, "tasks", config.held_out)
    pretraining = same(k for k in now if k not in FINETUNE_ONLY + RESOURCES)
    cells = pretraining and evaluation_same and same(k for k in now if k not in SELECTION + RESOURCES)
    action_pretraining = queries_same and same(k for k in now if k not in FINETUNE_ONLY + RESOURCES + LAPA_ONLY)
    action_cells = action_pretraining and evaluation_same and \
        same(k for k in now if k not in SELECTION + RESOURCES + LAPA_ONLY)
    return {"data": True, "laq": same(LAQ_FIELDS), "pretraining": pretraining, "cells": cells,
            "action_pretraining": action_pretraining, "action_cells": action_cells,
            "scratch": queries_same and evaluation_same and same(SCRATCH_SAME)}


def task_list(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]
