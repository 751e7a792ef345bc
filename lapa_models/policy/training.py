"""The training loop shared by latent pretraining (pretrain.py) and action finetuning (finetune.py).

Runs through ``accelerate`` (one process on CPU; ``accelerate launch`` or ``torchrun`` for several GPUs,
bf16 mixed precision on GPU by default). Writes into ``--out``:

    metrics.jsonl            one JSON line per log/eval step (train and held-out metrics)
    training.png             loss and metric curves
    checkpoint-<step>/       save_pretrained + optimizer state (safetensors + JSON, no pickles)
    final/                   the trained policy (save_pretrained)
    summary.json             what the command prints at the end
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from .augmentation import ImageAugmentation
from .data import InstructionTable, identity_collate
from .modeling import LapaPolicy

OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_STATE_FILE = "trainer_state.json"


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", required=True, help="episode dataset directories")
    p.add_argument("--out", required=True, help="run directory (metrics, plots, checkpoints, final/)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--val-fraction", type=float, default=0.1, help="episodes held out for validation")
    p.add_argument("--eval-every", type=int, default=250, help="0: evaluate only at the end")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--save-every", type=int, default=1000, help="0: only the final checkpoint")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="resize frames when loading (default: the dataset's size; the model resizes again)")
    p.add_argument("--augment", choices=["crop+color", "color", "none"], default="crop+color",
                   help="image augmentation: random resized crop + shift + colour jitter, colour jitter only "
                        "(a fixed camera whose pixel positions carry meaning), or none")
    p.add_argument("--no-augment", action="store_true", help="same as --augment none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"], default="auto",
                   help="auto: bf16 on GPU, none on CPU")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true")
    # Architecture overrides (scratch / pretraining only: a checkpoint keeps its own).
    p.add_argument("--config", default="small", help="named size (tiny, small, siglip-base) or a config.json")
    p.add_argument("--vision-model", default=None, help="hub id, local folder or config:<preset|JSON>")
    p.add_argument("--text-model", default=None, help="'minilm', hub id, local folder or config:<preset|JSON>")
    p.add_argument("--freeze-vision", default=None, type=_bool, metavar="BOOL")
    p.add_argument("--vision-pool-grid", default=None, type=int,
                   help="patch grid pooled to g x g fusion tokens (0: every patch)")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def config_overrides(args: argparse.Namespace) -> Dict:
    return {"vision_model": args.vision_model, "text_model": args.text_model, "freeze_vision": args.freeze_vision,
            "vision_pool_grid": args.vision_pool_grid}


# ============================================================================ optimizer state without pickles
def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path, step: int) -> None:
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors = {f"{pid}.{k}": v.detach().cpu().contiguous()
               for pid, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    save_file(tensors, str(directory / OPTIMIZER_FILE))
    (directory / TRAINER_STATE_FILE).write_text(json.dumps({"step": step, "param_groups": sd["param_groups"]}))


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> int:
    from safetensors.torch import load_file

    meta = json.loads((directory / TRAINER_STATE_FILE).read_text())
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(directory / OPTIMIZER_FILE)).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return int(meta["step"])


def latest_checkpoint(out: Path) -> Optional[Path]:
    found = sorted((p for p in out.glob("checkpoint-*") if (p / TRAINER_STATE_FILE).is_file()),
                   key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


# ============================================================================ metrics and plots
class MetricsLog:
    """Appends JSON lines to metrics.jsonl."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled

    def write(self, record: Dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def plot_metrics(metrics_path: Path, png_path: Path, metric: str) -> None:
    """Loss and ``metric`` (train and validation) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key in zip(axes, ("loss", metric)):
        for split, style in (("train", "-"), ("val", "o-")):
            pts = [(r["step"], r[f"{split}/{key}"]) for r in records if f"{split}/{key}" in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, label=split, markersize=3)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    pts = [(r["step"], r["lr"]) for r in records if "lr" in r]
    if pts:
        axes[2].plot(*zip(*pts))
    axes[2].set_title("learning rate")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


# ============================================================================ the loop
def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class InstructionInputs:
    """Instruction id -> model inputs: cached embeddings when the text tower is frozen, else token ids."""

    def __init__(self, model: LapaPolicy, table: InstructionTable, device: torch.device):
        self.frozen = model.config.freeze_text
        if self.frozen:
            with torch.no_grad():
                chunks = [model.encode_instructions(table.texts[i:i + 256]) for i in range(0, len(table), 256)]
            self.embeddings = torch.cat(chunks).to(device)
        else:
            tokens = model.tokenize(table.texts)
            self.input_ids = tokens["input_ids"].to(device)
            self.attention_mask = tokens["attention_mask"].to(device)

    def __call__(self, index: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.frozen:
            return {"instruction_embedding": self.embeddings[index]}
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index]}


def train(model: LapaPolicy, train_set, val_set, table: InstructionTable, args: argparse.Namespace,
          metric: str, describe: Dict, aux: Optional[Tuple] = None) -> Dict:
    """Train ``model`` on ``train_set`` and return a summary. ``metric``: the headline metric's key.

    ``aux``: (samples, weight): every step also draws a batch of these samples (another objective, e.g.
    the latent tokens of the pretraining video) and adds ``weight`` x its loss; its metrics are logged
    with an ``aux_`` prefix."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    mixed = args.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if torch.cuda.is_available() else "no"
    accelerator = Accelerator(mixed_precision=mixed)
    set_seed(args.seed)
    out = Path(args.out)
    main_process = accelerator.is_main_process
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
    device = accelerator.device
    model.to(device)
    instruction_inputs = InstructionInputs(model, table, device)

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.99))
    start_step = 0
    if args.resume:
        ckpt = latest_checkpoint(out)
        if ckpt is not None:
            model.load_weights(ckpt / "model.safetensors", strict=True)
            start_step = load_optimizer(optimizer, ckpt)
            accelerator.print(f"resumed from {ckpt} at step {start_step}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s + start_step, args.warmup_steps, args.steps))
    batch_size = min(args.batch_size, len(train_set))
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                                         collate_fn=identity_collate, num_workers=0)
    aux_batches: Optional[Iterator] = None
    if aux is not None:
        aux_loader = torch.utils.data.DataLoader(aux[0], batch_size=min(args.batch_size, len(aux[0])), shuffle=True,
                                                 drop_last=True, collate_fn=identity_collate, num_workers=0)
        aux_loader = accelerator.prepare(aux_loader)

        def _forever():
            while True:
                yield from aux_loader

        aux_batches = _forever()
    prepared_model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    mode = "none" if args.no_augment else args.augment
    augment = {"none": None, "color": ImageAugmentation(crop_scale=(1.0, 1.0), max_shift=0.0),
               "crop+color": ImageAugmentation()}[mode]
    log = MetricsLog(out / "metrics.jsonl", main_process)
    if main_process and not args.resume and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    if main_process:
        (out / "run.json").write_text(json.dumps({**describe, "args": {k: v for k, v in vars(args).items()
                                                                         if not k.startswith("_")}}, indent=2,
                                                 default=str))

    def to_inputs(batch: Dict[str, torch.Tensor], training: bool) -> Dict[str, torch.Tensor]:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        pixels = model.prepare_images(batch.pop("image"))
        if training and augment is not None:
            pixels = augment(pixels)
        batch["pixels"] = pixels
        batch.update(instruction_inputs(batch.pop("instruction_index")))
        return batch

    def evaluate() -> Dict[str, float]:
        if val_set is None or len(val_set) == 0:
            return {}
        model.eval()
        sums: Dict[str, float] = {}
        count = 0
        with torch.no_grad(), accelerator.autocast():
            for start in range(0, len(val_set), 256):
                idx = list(range(start, min(start + 256, len(val_set))))
                result = model(to_inputs(val_set.__getitems__(idx), training=False))
                for k, v in result.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
                count += len(idx)
        model.train()
        return {f"val/{k}": v / count for k, v in sums.items()}

    model.train()
    step = start_step
    history: List[Dict] = []
    t_start = time.monotonic()
    bar = tqdm(total=args.steps, initial=start_step, desc=f"train {out.name}", unit="step",
               disable=args.no_progress or not main_process, file=sys.stderr, dynamic_ncols=True)
    running: Dict[str, float] = {}
    running_n = 0
    last_val: Dict[str, float] = {}
    samples_seen = 0
    t_log = time.monotonic()
    while step < args.steps:
        for batch in loader:
            if step >= args.steps:
                break
            inputs = to_inputs(batch, training=True)
            with accelerator.autocast():
                result = prepared_model(inputs)
                if aux_batches is not None:
                    aux_result = prepared_model(to_inputs(next(aux_batches), training=True))
                    result = {**result, **{f"aux_{k}": v for k, v in aux_result.items()}}
                    result["loss"] = result["loss"] + aux[1] * aux_result["loss"]
            accelerator.backward(result["loss"])
            if args.grad_clip:
                accelerator.clip_grad_norm_(params, args.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            samples_seen += len(inputs["pixels"]) * accelerator.num_processes
            for k, v in result.items():
                running[k] = running.get(k, 0.0) + float(v.detach())
            running_n += 1
            bar.update(1)
            if step % args.log_every == 0 or step == args.steps or step == start_step + 1:
                now = time.monotonic()
                record = {"step": step, "lr": scheduler.get_last_lr()[0],
                          **{f"train/{k}": v / running_n for k, v in running.items()},
                          "samples_per_s": samples_seen / max(now - t_log, 1e-9),
                          "elapsed_s": now - t_start}
                running, running_n, samples_seen, t_log = {}, 0, 0, now
                if (args.eval_every and step % args.eval_every == 0) or step == args.steps:  # 0: at the end only
                    last_val = evaluate()
                    record.update(last_val)
                log.write(record)
                history.append(record)
                bar.set_postfix({k.split("/")[-1] + ("" if k.startswith("train") else "(val)"): f"{v:.3f}"
                                 for k, v in record.items() if k in (f"train/{metric}", "train/loss", f"val/{metric}")})
            if main_process and args.save_every and step % args.save_every == 0 and step < args.steps:
                _save_checkpoint(accelerator.unwrap_model(prepared_model), optimizer, out, step, args.keep_checkpoints)
    bar.close()
    accelerator.wait_for_everyone()
    summary: Dict = {"out": str(out), "steps": step, "train_seconds": round(time.monotonic() - t_start, 1),
                     "train_samples": len(train_set), "val_samples": len(val_set) if val_set is not None else 0,
                     **describe}
    if main_process:
        final = accelerator.unwrap_model(prepared_model)
        final.save_pretrained(out / "final")
        summary["final"] = str(out / "final")
        train_records = [r for r in history if f"train/{metric}" in r]
        if train_records:
            summary["first"] = {k: v for k, v in train_records[0].items() if k.startswith("train/")}
            summary["last"] = {k: v for k, v in train_records[-1].items() if k.startswith("train/")}
        summary["val"] = last_val
        plot_metrics(out / "metrics.jsonl", out / "training.png", metric)
        summary["plot"] = str(out / "training.png")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _save_checkpoint(model: LapaPolicy, optimizer, out: Path, step: int, keep: int) -> None:
    directory = model.save_pretrained(out / f"checkpoint-{step}")
    save_optimizer(optimizer, directory, step)
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in checkpoints[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def open_training_stores(args: argparse.Namespace, paths=None):
    """The stores of ``paths`` (default ``--data``) with the command's frame size and progress options."""
    from .data import open_stores

    frame_size = tuple(args.frame_size) if args.frame_size else None
    return open_stores(args.data if paths is None else paths, frame_size, progress=not args.no_progress)


def describe_model(model: LapaPolicy) -> Dict:
    return {"config": model.config.name or "custom", "parameters": model.num_parameters(),
            "trainable_parameters": model.num_parameters(trainable_only=True)}
