"""The demo policy: trained by this project's own LAPA pipeline on simulated data, shipped small.

    lapa demo-policy train        # the whole pipeline below, ~35 min on a 2-core CPU, resumable
    lapa demo-policy export       # models/demo_policy -> artifacts/demo_policy/export (ONNX)

The pipeline (each step is the public command it names, with these arguments; the benchmark's recipe):
  1. video     lapa data generate --no-actions: unlabelled video of MT10 + the demo tasks
  2. laq       lapa laq train (tiny, frame gap 3) on that video, then lapa laq label
  3. pretrain  lapa policy pretrain (small, --latent-horizon 3): predict 3 consecutive LAQ latent actions
               from (image, instruction)
  4. demos     lapa data generate: 50 expert demonstrations per demo task, with actions
  5. finetune  lapa policy finetune --init <pretrain>: action chunks from (image, instruction, state),
               the latent loss on the video kept as an auxiliary (--cotrain-target latents, weight 0.5)
  6. ship      a slim checkpoint (frozen MiniLM left out: ~10 MB) into models/demo_policy
`lapa demo` exports models/demo_policy to ONNX on first use (a minute) and caches it in
artifacts/demo_policy/export; with no shipped checkpoint it runs the pipeline first.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[2]   # lapa_ros/evaluation/demo_policy.py -> the checkout
SHIPPED = REPO / "models" / "demo_policy"
ARTIFACTS = REPO / "artifacts" / "demo_policy"
DEMO_TASKS = "demo"                      # the task set in lapa_sim/tasks.yaml
VIDEO_TASKS = "mt10,demo"


def _log(msg: str) -> None:
    print(f"[demo-policy] {msg}", file=sys.stderr, flush=True)


def _run(words: List[str], argv: List[str]) -> None:
    """Run a `lapa ...` command in-process (the same parser and main as the shell command)."""
    from lapa_models.commands import command_line, find, run_in_process
    from lapa_sim.commands import SIM_COMMANDS

    _log(command_line(words, argv))
    code = run_in_process(find(SIM_COMMANDS, words), argv)
    if code:
        raise RuntimeError(f"`lapa {' '.join(words)}` failed with exit code {code}")


def train(work: Path, quick: bool = False) -> Path:
    """Run the pipeline in `work` (steps already done are skipped); returns the slim checkpoint."""
    work.mkdir(parents=True, exist_ok=True)
    scale = 0.1 if quick else 1.0
    n = lambda x: max(2, int(x * scale))  # noqa: E731
    t0 = time.monotonic()
    video, demos = work / "video", work / "demos"
    _run(["data", "generate"], ["--tasks", VIDEO_TASKS, "--episodes-per-task", n(20), "--no-actions",
                                "--out", video, "--seed", 0])
    if not (work / "laq" / "final" / "config.json").is_file():
        _run(["laq", "train"], ["--data", video, "--config", "tiny", "--frame-gap", 3,
                                "--steps", n(3000), "--out", work / "laq", "--save-every", 1000])
    if not (video / "latents" / "laq" / "info.json").is_file():
        _run(["laq", "label"], ["--checkpoint", work / "laq" / "final", "--data", video])
    if not (work / "pretrain" / "final" / "config.json").is_file():
        _run(["policy", "pretrain"], ["--data", video, "--config", "small", "--out", work / "pretrain",
                                      "--steps", n(3000), "--augment", "color", "--save-every", 500,
                                      "--latent-horizon", 3, "--batch-size", 32])
    _run(["data", "generate"], ["--tasks", DEMO_TASKS, "--episodes-per-task", n(50), "--out", demos,
                                "--seed", 0])
    if not (work / "finetune" / "final" / "config.json").is_file():
        _run(["policy", "finetune"], ["--data", demos, "--init", work / "pretrain" / "final",
                                      "--out", work / "finetune", "--steps", n(1500), "--augment", "color",
                                      "--cotrain-data", video, "--cotrain-target", "latents", "--cotrain-weight", 0.5,
                                      "--save-every", 500])
    from lapa_models.policy.modeling import LapaPolicy

    slim = work / "checkpoint"
    LapaPolicy.from_pretrained(work / "finetune" / "final").save_pretrained(slim, slim=True)
    (slim / "TRAINING.json").write_text(json.dumps({
        "pipeline": __doc__.split("\n\n")[2], "work": os.path.relpath(work, REPO), "quick": quick,
        "minutes_this_run": round((time.monotonic() - t0) / 60, 1),
        "pretrain": json.loads((work / "pretrain" / "summary.json").read_text()).get("val"),
        "finetune": json.loads((work / "finetune" / "summary.json").read_text()).get("val")}, indent=2))
    _log(f"trained in {(time.monotonic() - t0) / 60:.1f} min: {slim}")
    return slim


def export(checkpoint: Path, out: Path) -> Path:
    from lapa_models.policy.export import export_policy

    _log(f"exporting {checkpoint} -> {out} (ONNX, once)")
    export_policy(checkpoint, out, precisions=("fp32",))
    (out / "SOURCE").write_text(_fingerprint(checkpoint))
    return out


def _fingerprint(checkpoint: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(checkpoint).rglob("*")):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def ensure_demo_policy() -> Path:
    """The exported demo policy, exporting the shipped checkpoint (or training one) when needed."""
    from lapa_models.policy.runtime import ModelCardError, load_card

    out = ARTIFACTS / "export"
    checkpoint = SHIPPED if (SHIPPED / "config.json").is_file() else None
    if checkpoint is None:
        _log("no shipped demo policy in models/demo_policy: training one (about 35 minutes on 2 cores)")
        checkpoint = train(ARTIFACTS / "train")
    if (out / "SOURCE").is_file() and (out / "SOURCE").read_text() == _fingerprint(checkpoint):
        try:
            load_card(out)
            return out
        except ModelCardError as e:
            _log(f"cached export unusable ({e}): exporting again")
    if out.exists():
        shutil.rmtree(out)
    return export(checkpoint, out)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work", default=str(ARTIFACTS / "train"), help="working folder (resumable)")
    p.add_argument("--quick", action="store_true", help="a tenth of the data and steps (a smoke run)")
    p.add_argument("--ship", action="store_true", help="copy the result into models/demo_policy")


def train_main(args: argparse.Namespace) -> int:
    slim = train(Path(args.work), args.quick)
    if args.ship:
        if SHIPPED.exists():
            shutil.rmtree(SHIPPED)
        shutil.copytree(slim, SHIPPED)
        _log(f"shipped: {SHIPPED}")
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=str(SHIPPED))
    p.add_argument("--out", default=str(ARTIFACTS / "export"))


def export_main(args: argparse.Namespace) -> int:
    export(Path(args.checkpoint), Path(args.out))
    return 0
