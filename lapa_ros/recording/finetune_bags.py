"""`lapa finetune-bags`: recorded demonstration bags + a latent-pretrained checkpoint -> an exported policy.

    lapa finetune-bags --bags bags/ --init runs/policy/pretrain/final --out runs/cup_on_plate
    ros2 launch lapa_ros policy.launch.py model:=runs/cup_on_plate/export

One command for the last mile on a new robot or task:
  1. <out>/episodes   the bags converted to training episodes (lapa bags convert: aligned on stamps,
                      failed/discarded episodes skipped, a report per bag)
  2. <out>/finetune   action finetuning from the pretrained checkpoint (lapa_models.policy.finetune;
                      `--init scratch --config small` trains the no-pretraining baseline instead)
  3. <out>/export     the ONNX export with its model card (lapa_models.policy.export), ready for the
                      policy node
Arguments after `--` go to the finetuning command unchanged (e.g. `-- --lr 1e-4 --batch-size 32`).

A bag that fails to convert (corrupt, truncated, empty folder, ...) gets one line with its name and the
reason, the others are still converted, and then the command stops before training with exit code 2:
a policy is not trained on part of the demonstrations without the operator knowing. Fix the bag, or
move it into <bags>/discarded/ to leave it out, and run again (episodes converted already are kept).
Exit code 1: the bags folder cannot be used at all, or no episode to train on.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bags", required=True, help="folder of episode bags (lapa record / the recorder node)")
    p.add_argument("--init", required=True, help="latent-pretrained checkpoint folder, or 'scratch'")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="small", help="model size when --init scratch")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--actions", choices=["commands", "deltas"], default="commands")
    p.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="stored episode size (default: the checkpoint's image size, else 128x128)")
    p.add_argument("--gripper-joint", default=None,
                   help="finger joint giving the gripper state (default: what each bag's recorder stored)")
    p.add_argument("--gripper-open", type=float, default=None, help="that joint's position when open")
    p.add_argument("--gripper-closed", type=float, default=None, help="that joint's position when closed")
    p.add_argument("--precisions", default="fp32,fp16")
    p.add_argument("finetune_args", nargs=argparse.REMAINDER, help="after `--`: passed to the finetuning command")


def _checkpoint_image_size(init: str):
    path = Path(init) / "config.json"
    if init == "scratch" or not path.is_file():
        return None
    size = json.loads(path.read_text()).get("image_size")
    return (int(size), int(size)) if isinstance(size, int) else None


def _check_init(init: str) -> str:
    """'' when --init can be finetuned from (scratch, or a policy checkpoint folder whose config parses and
    whose weights file opens), else the one-line reason; checked before converting any bag."""
    if init == "scratch":
        return ""
    from lapa_models.policy.configuration import PolicyConfig
    from lapa_models.policy.modeling import CONFIG_FILE, WEIGHTS_FILE

    path = Path(init)
    hint = "give a latent-pretrained checkpoint folder (e.g. runs/pretrain/final), or 'scratch'"
    if not path.exists():
        return f"--init {init}: does not exist: {hint}"
    if not path.is_dir():
        return f"--init {init}: not a folder: {hint}"
    try:
        PolicyConfig.load(path / CONFIG_FILE)
    except (OSError, ValueError) as e:
        return f"--init {init}: not a policy checkpoint ({e}): {hint}"
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        return f"--init {init}: not a policy checkpoint ({weights.name} is missing): {hint}"
    try:
        from safetensors import SafetensorError, safe_open

        with safe_open(str(weights), framework="pt") as f:
            if not list(f.keys()):
                return f"--init {init}: {weights.name} holds no weights"
    except (SafetensorError, OSError, ValueError) as e:
        return f"--init {init}: {weights.name} is corrupt or truncated ({e})"
    return ""


def _convert(args: argparse.Namespace, out: Path) -> int:
    """Step 1, the bags -> <out>/episodes: 0, or the exit code to stop with (one line per failed bag)."""
    from lapa_ros.recording.bag_convert import ConversionConfig, convert_bags, print_problems
    from lapa_ros.recording.bags import SOME_FAILED, BagError, printable

    size = tuple(args.image_size) if args.image_size else (_checkpoint_image_size(args.init) or (128, 128))
    cfg = ConversionConfig(actions=args.actions, image_size=size, gripper_joint=args.gripper_joint,
                           gripper_open_position=args.gripper_open, gripper_closed_position=args.gripper_closed)
    print(f"[1/3] converting bags from {args.bags} -> {out / 'episodes'}", file=sys.stderr)
    try:
        conversion = convert_bags(Path(args.bags), out / "episodes", cfg)
    except (BagError, ValueError) as e:  # the bags folder or the output dataset as a whole cannot be used
        print(printable(f"lapa finetune-bags: {e}"), file=sys.stderr)
        return 1
    print_problems(conversion, file=sys.stderr, indent="  ")
    failed = conversion["failed"]
    print(f"  {conversion['converted']} bag(s) converted, {len(failed)} failed, {len(conversion['skipped'])} skipped",
          file=sys.stderr)
    if failed:
        discarded = Path(failed[0]["bag"]).parent / "discarded"
        print(printable(f"lapa finetune-bags: {len(failed)} bag(s) failed: fix them, or move them into {discarded} "
                        "to leave them out, and run again (converted episodes are kept)"), file=sys.stderr)
        return SOME_FAILED
    return 0


def main(args: argparse.Namespace) -> int:
    from lapa_models.policy import export as policy_export
    from lapa_models.policy import finetune

    out = Path(args.out)
    problem = _check_init(args.init)  # before converting: a wrong --init is known in a second
    if problem:
        from lapa_ros.recording.bags import printable

        print(printable(f"lapa finetune-bags: {problem}"), file=sys.stderr)
        return 1
    code = _convert(args, out)
    if code:
        return code
    from lapa_models.data.episodes import EpisodeDataset

    dataset = out / "episodes"
    episodes = len(EpisodeDataset(dataset)) if (dataset / "meta" / "info.json").is_file() else 0
    if episodes == 0:
        print("lapa finetune-bags: no successful episode to train on (every bag was skipped: the reasons are "
              "listed above)", file=sys.stderr)
        return 1
    print(f"  {episodes} episode(s) ready", file=sys.stderr)

    print(f"[2/3] finetuning from {args.init} -> {out / 'finetune'}", file=sys.stderr)
    parser = argparse.ArgumentParser(prog="finetune")
    finetune.add_arguments(parser)
    extra = [a for a in (args.finetune_args or []) if a != "--"]
    ft_args = parser.parse_args(["--data", str(out / "episodes"), "--init", args.init, "--out", str(out / "finetune"),
                                 "--steps", str(args.steps), "--config", args.config, *extra])
    code = finetune.main(ft_args)
    if code:
        return code

    print(f"[3/3] exporting -> {out / 'export'}", file=sys.stderr)
    card = policy_export.export_policy(out / "finetune" / "final", out / "export",
                                       precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()))
    summary = {"episodes": episodes, "failed_bags": 0, "export": str(out / "export"),
               "parity_max_abs_diff": card.get("parity"), "run": f"ros2 launch lapa_ros policy.launch.py "
                                                                  f"model:={(out / 'export').resolve()}"}
    print(json.dumps(summary, indent=2))
    return 0
