"""The training loop shared by latent pretraining (pretrain.py) and action finetuning (finetune.py).

Runs on lapa_models.training.TrainingRun (accelerate: one process on CPU; ``accelerate launch`` or
``torchrun`` for several processes or GPUs, bf16 mixed precision on GPU by default; LAQ training uses
the same run, checkpoint format and resume). Writes into ``--out``:

    metrics.jsonl            one JSON line per log/eval step (train and held-out metrics; --report-to
                             also sends them to TensorBoard or Weights & Biases)
    training.png             loss and metric curves, learning rate
    checkpoint-<step>/       save_pretrained + optimizer, step and random streams (safetensors + JSON)
    final/                   the trained policy (save_pretrained)
    summary.json             what the command prints at the end

An optimizer step averages --batch-size x processes x --grad-accum samples: epochs of shuffled
samples whose order depends on the seed only (lapa_models.data.sampling.ShuffledBatches), each process
reading its own slice of every batch. The learning rate (warmup, then cosine to 5%) is a function of
the optimizer step, the same for any process count; validation is split over the processes and
summed; ``--resume`` continues exactly where a checkpoint was written (weights, optimizer, random
streams, data position).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from lapa_models.commands import report_input_errors
from lapa_models.data.sampling import ShuffledBatches
from lapa_models.training import TrainingRun, add_run_arguments, default_workers
from lapa_models.training.checkpoints import STATE_JSON, load_legacy_optimizer, load_training_state

from .augmentation import ImageAugmentation
from .data import InstructionTable
from .modeling import LapaPolicy

log = logging.getLogger("lapa_models.policy.training")


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
    p.add_argument("--allow-squash", action="store_true",
                   help="train on frames of another aspect ratio than the --init checkpoint's (default: refused)")
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
    add_run_arguments(p)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def config_overrides(args: argparse.Namespace) -> Dict:
    return {"vision_model": args.vision_model, "text_model": args.text_model, "freeze_vision": args.freeze_vision,
            "vision_pool_grid": args.vision_pool_grid}


# ============================================================================ metrics and plots
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
            # In eval mode, as at inference: a model fresh from its constructor is in training mode, and
            # the text tower's dropout would freeze random noise into the cached embeddings (different
            # noise in every process).
            was_training = model.training
            model.eval()
            with torch.no_grad():
                chunks = [model.encode_instructions(table.texts[i:i + 256]) for i in range(0, len(table), 256)]
            model.train(was_training)
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
          metric: str, describe: Dict, aux: Optional[List[Tuple]] = None) -> Dict:
    """Train ``model`` on ``train_set`` and return a summary. ``metric``: the headline metric's key.

    ``aux``: a list of (samples, weight, name): every step also draws a batch of each (another objective,
    e.g. the latent tokens of the pretraining video, or labelled play) and adds ``weight`` x its loss; its
    metrics are logged with a ``<name>_`` prefix."""
    from accelerate.utils import set_seed
    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    mixed = args.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if torch.cuda.is_available() else "no"
    run = TrainingRun(args.out, resume=args.resume, existing="restart", mixed_precision=mixed,
                      gradient_accumulation_steps=getattr(args, "grad_accum", 1),
                      report_to=getattr(args, "report_to", "none"), keep_checkpoints=args.keep_checkpoints,
                      legacy_checkpoints=True)
    accelerator = run.accelerator
    set_seed(args.seed, device_specific=True)   # augmentation draws: one stream per process
    out = Path(args.out)
    main_process, processes, accumulation = run.is_main, run.num_processes, run.accumulation
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
    device = run.device
    model.to(device)

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.99))
    start_step, elapsed, last_val = 0, 0.0, {}
    running: Dict[str, float] = {}
    running_n = 0
    ckpt = run.resume_from
    if ckpt is not None:
        model.load_weights(ckpt / "model.safetensors", strict=True)
        if (ckpt / STATE_JSON).is_file():
            state = load_training_state(ckpt, model, optimizer)
            start_step, elapsed = int(state["step"]), float(state.get("elapsed_s", 0.0))
            last_val = state.get("last_val", {})
            if run.is_main:   # the saved sums are every process's together
                running, running_n = dict(state.get("running", {})), int(state.get("running_n", 0))
            else:
                running, running_n = {k: 0.0 for k in state.get("running", {})}, int(state.get("running_n", 0))
            before = (state.get("global_batch"), state.get("accumulation", 1))
            run.restore_rng(start_step, args.seed)
        else:
            start_step = load_legacy_optimizer(optimizer, ckpt)
            before = (None, 1)
            log.warning("%s: a checkpoint of the former format (weights and optimizer only): the data order and "
                        "random streams restart", ckpt)
        accelerator.print(f"resumed from {ckpt} at step {start_step}")
    instruction_inputs = InstructionInputs(model, table, device)

    workers = default_workers(_store_mode(train_set), getattr(args, "num_workers", None))
    per_process = min(args.batch_size, len(train_set) // processes)
    if per_process < 1:
        raise ValueError(f"{len(train_set)} training samples cannot fill a batch on each of {processes} processes")
    global_batch = per_process * processes
    if ckpt is not None and before[0] is not None and before != (global_batch, accumulation) and main_process:
        log.warning("%s: saved with batches of %s x %s accumulated, resumed with %d x %d: the continuation reads "
                    "other samples than the interrupted run would have", ckpt, before[0], before[1], global_batch,
                    accumulation)
    position = (start_step * accumulation, args.steps * accumulation)
    loader = run.loader(train_set, ShuffledBatches(len(train_set), global_batch, args.seed, *position),
                        workers, args.seed)
    aux_batches: List[Tuple[Iterator, float, str]] = []
    for i, (samples, weight, name) in enumerate(aux or []):
        aux_batch = min(args.batch_size, len(samples) // processes)
        if aux_batch < 1:
            raise ValueError(f"{len(samples)} {name} samples cannot fill a batch on each of {processes} processes")
        aux_loader = run.loader(samples, ShuffledBatches(len(samples), aux_batch * processes, args.seed, *position,
                                                         stream=i + 1), workers, args.seed + 1 + i)
        aux_batches.append((iter(aux_loader), float(weight), name))
    prepared_model, optimizer = accelerator.prepare(model, optimizer)
    mode = "none" if args.no_augment else args.augment
    augment = {"none": None, "color": ImageAugmentation(crop_scale=(1.0, 1.0), max_shift=0.0),
               "crop+color": ImageAugmentation()}[mode]
    hyper = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    hyper.update(global_batch=global_batch, processes=processes, num_workers=workers)
    run.begin(start_step, hyper, "lapa-policy")
    if main_process:
        (out / "run.json").write_text(json.dumps({**describe, "args": {k: v for k, v in vars(args).items()
                                                                         if not k.startswith("_")},
                                                  "data_mode": _store_mode(train_set), "num_workers": workers,
                                                  "processes": processes, "global_batch": global_batch},
                                                 indent=2, default=str))

    def to_inputs(batch: Dict[str, torch.Tensor], training: bool) -> Dict[str, torch.Tensor]:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        pixels = model.prepare_images(batch.pop("image"))
        if training and augment is not None:
            pixels = augment(pixels)
        batch["pixels"] = pixels
        batch.update(instruction_inputs(batch.pop("instruction_index")))
        return batch

    def evaluate() -> Dict[str, float]:
        """Held-out metrics: each process evaluates its share of the samples, the sums are added up."""
        if val_set is None or len(val_set) == 0:
            return {}
        model.eval()
        sums: Dict[str, float] = {}
        mine = np.array_split(np.arange(len(val_set)), processes)[run.rank]
        with torch.no_grad(), accelerator.autocast():
            for start in range(0, len(mine), 256):
                idx = mine[start:start + 256].tolist()
                result = model(to_inputs(val_set.__getitems__(idx), training=False))
                for k, v in result.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
                sums["__count__"] = sums.get("__count__", 0.0) + len(idx)
        keys = sorted(sums)
        if processes > 1:   # process 0 always has samples (the first shards are the larger ones): its names
            from accelerate.utils import broadcast_object_list

            keys = broadcast_object_list([keys], from_process=0)[0]
        sums = run.reduce_sum({k: sums.get(k, 0.0) for k in keys})
        model.train()
        count = max(sums.pop("__count__"), 1.0)
        return {f"val/{k}": v / count for k, v in sums.items()}

    model.train()
    step = start_step
    t_start = time.monotonic()
    bar = tqdm(total=args.steps, initial=start_step, desc=f"train {out.name}", unit="step",
               disable=args.no_progress or not main_process, file=sys.stderr, dynamic_ncols=True)
    samples_seen = 0
    t_log = time.monotonic()
    batches = iter(loader)
    while step < args.steps:
        lr = args.lr * _lr_factor(step, args.warmup_steps, args.steps)
        run.set_lr(optimizer, lr)
        for _ in range(accumulation):
            inputs = to_inputs(next(batches), training=True)
            with accelerator.accumulate(prepared_model):
                with accelerator.autocast():
                    result = prepared_model(inputs)
                    for aux_iter, weight, name in aux_batches:
                        # Through the unwrapped model: one backward of the summed loss, one gradient sync.
                        aux_result = model(to_inputs(next(aux_iter), training=True))
                        result = {**result, **{f"{name}_{k}": v for k, v in aux_result.items()}}
                        result["loss"] = result["loss"] + weight * aux_result["loss"]
                accelerator.backward(result["loss"])
                if accelerator.sync_gradients and args.grad_clip:
                    accelerator.clip_grad_norm_(params, args.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for k, v in result.items():
                running[k] = running.get(k, 0.0) + float(v.detach()) / accumulation
            samples_seen += len(inputs["pixels"]) * processes
        step += 1
        running_n += 1
        bar.update(1)
        if step % args.log_every == 0 or step == args.steps or step == 1:
            now = time.monotonic()
            totals = run.reduce_sum(running)
            record = {"step": step, "lr": lr,
                      **{f"train/{k}": v / running_n / processes for k, v in sorted(totals.items())},
                      "samples_per_s": samples_seen / max(now - t_log, 1e-9),
                      "elapsed_s": elapsed + now - t_start}
            running, running_n, samples_seen, t_log = {}, 0, 0, now
            if (args.eval_every and step % args.eval_every == 0) or step == args.steps:  # 0: at the end only
                last_val = evaluate()
                record.update(last_val)
            run.log(record)
            bar.set_postfix({k.split("/")[-1] + ("" if k.startswith("train") else "(val)"): f"{v:.3f}"
                             for k, v in record.items() if k in (f"train/{metric}", "train/loss", f"val/{metric}")})
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            raw = accelerator.unwrap_model(prepared_model)
            run.save(step, raw, optimizer, {"elapsed_s": elapsed + time.monotonic() - t_start, "seed": args.seed,
                                            "batch_size": per_process, "global_batch": global_batch,
                                            "data_position": step * accumulation, "last_val": last_val,
                                            # all processes' sums since the last metrics line
                                            "running": run.reduce_sum(running), "running_n": running_n},
                     save_model=raw.save_pretrained)
    bar.close()
    run.wait()
    summary: Dict = {"out": str(out), "steps": step, "train_seconds": round(time.monotonic() - t_start, 1),
                     "train_samples": len(train_set), "val_samples": len(val_set) if val_set is not None else 0,
                     "processes": processes, "global_batch": global_batch * accumulation,
                     "data_mode": _store_mode(train_set), **describe}
    if main_process:
        final = accelerator.unwrap_model(prepared_model)
        final.save_pretrained(out / "final")
        summary["final"] = str(out / "final")
        train_records = [r for r in run.read_metrics() if f"train/{metric}" in r]
        if train_records:
            summary["first"] = {k: v for k, v in train_records[0].items() if k.startswith("train/")}
            summary["last"] = {k: v for k, v in train_records[-1].items() if k.startswith("train/")}
        summary["val"] = last_val
        plot_metrics(out / "metrics.jsonl", out / "training.png", metric)
        summary["plot"] = str(out / "training.png")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    run.finish()
    return summary


def _store_mode(samples) -> str:
    parts = getattr(samples, "parts", [samples])
    modes = sorted({getattr(getattr(p, "store", None), "mode", "memory") for p in parts})
    return "+".join(modes)


def open_training_stores(args: argparse.Namespace, paths=None):
    """The stores of ``paths`` (default ``--data``) with the command's frame size, data mode and progress
    options; under several processes the main process builds frame caches first."""
    from lapa_models.training.run import process_state

    from .data import open_stores

    state = process_state()
    frame_size = tuple(args.frame_size) if args.frame_size else None
    return open_stores(args.data if paths is None else paths, frame_size,
                       progress=not args.no_progress and state.is_main_process,
                       mode=getattr(args, "data_mode", "memory"), cache_dir=getattr(args, "cache_dir", None),
                       workers=getattr(args, "num_workers", None), distributed=state)


def checked_frame_size(stores, args: argparse.Namespace, init_config=None) -> Dict[str, List[int]]:
    """The config fields saying what frames a policy trains on: ``data_frame_size`` (H, W as stored) and
    ``camera_frame_size`` (as the camera delivered them: a dataset converted from bags records it; what
    the deployed policy node should receive). With an --init checkpoint that recorded its own, stored
    frames of another aspect ratio are a FrameSizeError unless --allow-squash: the model resizes every
    image to its square input, so the pretrained features would see a differently distorted world
    (same aspect, other size: a note)."""
    from lapa_models.data.frame_size import check_frame_size

    h, w = (int(v) for v in stores[0].frame_shape[:2])
    trained_on = getattr(init_config, "data_frame_size", None)
    if trained_on:
        note = check_frame_size((h, w), trained_on, data=str(stores[0].source.root),
                                model=f"checkpoint {args.init} (trained on such frames)",
                                allow_squash=getattr(args, "allow_squash", False))
        if note:
            log.info(note)
    info = getattr(stores[0].source, "info", None)
    camera = (getattr(info, "extra", None) or {}).get("camera_frame_size")
    camera = [int(v) for v in camera] if camera and len(camera) == 2 and min(camera) > 0 else [h, w]
    return {"data_frame_size": [h, w], "camera_frame_size": camera}


def describe_model(model: LapaPolicy) -> Dict:
    return {"config": model.config.name or "custom", "parameters": model.num_parameters(),
            "trainable_parameters": model.num_parameters(trainable_only=True)}


def run_training_command(args: argparse.Namespace, build: Callable[[argparse.Namespace], Tuple],
                         metric: str) -> int:
    """The body of `lapa policy pretrain` and `lapa policy finetune`: seed, build (model, training and
    validation samples, instruction table, description[, auxiliary samples]), train, print the summary.
    Input problems end in one "error:" line (lapa_models.commands.report_input_errors)."""
    def run(a: argparse.Namespace) -> int:
        import torch

        torch.manual_seed(a.seed)   # the new weights (a scratch model, a new head) depend on the seed only
        model, train_set, val_set, table, describe, *aux = build(a)
        summary = train(model, train_set, val_set, table, a, metric=metric, describe=describe,
                        aux=aux[0] if aux else None)
        print(json.dumps(summary))
        return 0

    return report_input_errors(run, args)
