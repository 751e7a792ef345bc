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
    p.add_argument("--gripper-joint", default="r_close")
    p.add_argument("--gripper-open", type=float, default=0.0)
    p.add_argument("--gripper-closed", type=float, default=0.04)
    p.add_argument("--precisions", default="fp32,fp16")
    p.add_argument("finetune_args", nargs=argparse.REMAINDER, help="after `--`: passed to the finetuning command")


def _checkpoint_image_size(init: str):
    path = Path(init) / "config.json"
    if init == "scratch" or not path.is_file():
        return None
    size = json.loads(path.read_text()).get("image_size")
    return (int(size), int(size)) if isinstance(size, int) else None


def main(args: argparse.Namespace) -> int:
    from lapa_models.policy import export as policy_export
    from lapa_models.policy import finetune

    from .bag_convert import ConversionConfig, convert_bags
    from .bags import BagError

    out = Path(args.out)
    size = tuple(args.image_size) if args.image_size else (_checkpoint_image_size(args.init) or (128, 128))
    cfg = ConversionConfig(actions=args.actions, image_size=size, gripper_joint=args.gripper_joint,
                           gripper_open_position=args.gripper_open, gripper_closed_position=args.gripper_closed)
    print(f"[1/3] converting bags from {args.bags} -> {out / 'episodes'}", file=sys.stderr)
    try:
        conversion = convert_bags(Path(args.bags), out / "episodes", cfg)
    except BagError as e:
        print(f"lapa finetune-bags: {e}", file=sys.stderr)
        return 1
    for f in conversion["failed"]:
        print(f"  skipped (error): {f['error']}", file=sys.stderr)
    from lapa_models.data.episodes import EpisodeDataset

    episodes = len(EpisodeDataset(out / "episodes"))
    if episodes == 0:
        print("lapa finetune-bags: no successful episode to train on", file=sys.stderr)
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
    summary = {"episodes": episodes, "failed_bags": len(conversion["failed"]), "export": str(out / "export"),
               "parity_max_abs_diff": card.get("parity"), "run": f"ros2 launch lapa_ros policy.launch.py "
                                                                  f"model:={(out / 'export').resolve()}"}
    print(json.dumps(summary, indent=2))
    return 0
