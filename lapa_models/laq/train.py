"""Train LAQ on episodes or on a folder of videos (actions, if any, are ignored).

    lapa laq train --data data/sim/mt10_64 --config tiny --out runs/laq_tiny
    lapa laq train --data data/sim/mt10_64 --config tiny --out runs/laq_tiny --resume
    lapa laq train --data videos/ --config small --frame-gap 2 --steps 20000 --out runs/laq_small
    lapa laq train --data big/ --data-mode stream --num-workers 4 --out runs/laq_big  # any size
    accelerate launch -m lapa_models laq train --data DIR --config paper --out runs/laq_paper   # GPUs, bf16
    torchrun --nproc-per-node 2 -m lapa_models laq train --data DIR --out RUN                  # CPU, gloo
    torchrun --nproc-per-node 8 -m lapa_models laq train --data DIR --config paper --out runs/laq_paper

Writes to --out: ``checkpoint-<step>/`` (model.safetensors + config.json + training state, see
lapa_models.training.checkpoints) every --save-every steps, ``final/``, ``metrics.jsonl`` (one JSON
line per --log-every steps; also TensorBoard / W&B with --report-to), ``training.png`` (loss vs
copy-frame baseline, code usage, perplexity), ``reconstructions.png`` (frame t, frame t+k,
reconstruction) and ``summary.json``. Training state is safetensors + JSON, never pickles.

An optimizer step averages --batch-size x processes x --grad-accum frame pairs, drawn from the seed and
the step number alone: N processes see the pairs one process with an N-times larger batch would see
(each reads its own slice), whatever the number of DataLoader workers; ``--resume`` continues exactly
(same hardware and process count: weights, optimizer, code-usage window, random streams, data position).
Frames come from RAM or are streamed from compressed shards (--data-mode, lapa_models.data.frames).
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Union

import numpy as np
import torch

from lapa_models.commands import report_input_errors
from lapa_models.data.episodes import open_episodes
from lapa_models.data.sampling import RandomBatches
from lapa_models.training import TrainingRun, add_run_arguments, default_workers
from lapa_models.training.checkpoints import find_checkpoints, load_training_state, save_training_state  # noqa: F401
from .configuration import LAQConfig, get_config
from .data import PairSamples, add_allow_squash_argument, frame_pairs, gather, load_frames, split_episodes
from .modeling import CheckpointError, LAQModel
from .quantizer import code_counts, replacement_due, usage_and_perplexity

log = logging.getLogger("lapa_models.laq.train")

ADAM_BETAS = (0.9, 0.99)
GRAD_CLIP = 0.5


# ---------------------------------------------------------------------------- training
class MetricsWindow:
    """Sums over the steps since the last log line: losses, code counts, replacements, timing."""

    def __init__(self, codebook_size: int):
        self.codebook_size = codebook_size
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.loss = self.copy_mse = self.grad_norm = 0.0
        self.counts = torch.zeros(self.codebook_size, dtype=torch.long)
        self.replaced = 0
        self.pairs = 0
        self.seconds = 0.0
        self.data_seconds = 0.0
        self.first_step: Optional[int] = None

    def to_json(self) -> dict:
        return {"steps": self.steps, "loss": self.loss, "copy_mse": self.copy_mse, "grad_norm": self.grad_norm,
                "counts": self.counts.tolist(), "replaced": self.replaced, "pairs": self.pairs,
                "seconds": self.seconds, "data_seconds": self.data_seconds, "first_step": self.first_step}

    def load(self, d: dict) -> None:
        self.__dict__.update({k: v for k, v in d.items() if k != "counts"})
        self.counts = torch.tensor(d["counts"], dtype=torch.long)


def default_mixed_precision() -> str:
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def train(config: LAQConfig, data, out: Union[str, Path], *, steps: Optional[int] = None,
          batch_size: Optional[int] = None, learning_rate: Optional[float] = None, warmup_steps: int = 100,
          seed: int = 0, log_every: int = 50, save_every: int = 1000, keep_checkpoints: int = 2,
          resume: Union[bool, str, Path] = False, val_fraction: float = 0.05, augment_shift: int = 0,
          dead_code_share: float = 0.03, dead_code_window: int = 10,
          mixed_precision: Optional[str] = None, num_monitor_pairs: int = 256, num_grid_examples: int = 8,
          progress: bool = True, data_mode: str = "auto", num_workers: Optional[int] = None, grad_accum: int = 1,
          report_to: str = "none", cache_dir: Optional[Union[str, Path]] = None,
          allow_squash: bool = False) -> Dict[str, Any]:
    """Train an LAQ model; returns the run summary (also written to ``<out>/summary.json``).

    ``data`` is an episode dataset directory, a folder of videos or a frame store (lapa_models.data.frames).
    ``resume``: True continues from the newest checkpoint in ``out`` if there is one, a path from that
    checkpoint. ``batch_size`` is per process and per accumulated batch: an optimizer step averages
    ``batch_size x processes x grad_accum`` pairs, drawn by ``RandomBatches`` from the seed and the step
    alone (the same pairs whatever the process or worker count)."""
    from tqdm import tqdm

    out = Path(out)
    steps = int(steps or config.train_steps)
    batch_size = int(batch_size or config.batch_size)
    learning_rate = float(learning_rate or config.learning_rate)
    run = TrainingRun(out, resume=resume, existing="refuse",
                      mixed_precision=mixed_precision or default_mixed_precision(),
                      gradient_accumulation_steps=grad_accum, report_to=report_to, keep_checkpoints=keep_checkpoints)
    accelerator = run.accelerator
    is_main, rank, processes = run.is_main, run.rank, run.num_processes

    resume_from = run.resume_from
    if resume_from is not None:
        saved = LAQConfig.from_json_file(resume_from / "config.json")
        mismatch = config.architecture_mismatch(saved)
        if mismatch:
            raise CheckpointError(f"{resume_from}: cannot resume with a different LAQ config "
                                  f"(requested vs checkpoint): {'; '.join(mismatch)}")

    # -- data: random pairs from training episodes, a fixed set from held-out episodes to monitor
    source = open_episodes(data) if isinstance(data, (str, Path)) else data
    store = load_frames(source, config, progress=progress and is_main, mode=data_mode, tables=False,
                        cache_dir=cache_dir, workers=num_workers, distributed=accelerator,
                        model=f"checkpoint {resume_from}" if resume_from is not None else "the LAQ config",
                        allow_squash=allow_squash)
    workers = default_workers(store.mode, num_workers)
    train_eps, val_eps = split_episodes(store, val_fraction, seed)
    train_pairs = frame_pairs(store, config.frame_gap, train_eps)
    monitor_rng = np.random.default_rng(seed + 12345)
    val_pool = frame_pairs(store, config.frame_gap, val_eps) if val_eps and any(
        store.lengths[e] > config.frame_gap for e in val_eps) else train_pairs
    picked = monitor_rng.choice(len(val_pool), min(num_monitor_pairs, len(val_pool)), replace=False)
    monitor_pairs = val_pool[np.sort(picked)]
    grid_count = min(num_grid_examples, len(monitor_pairs))
    grid_pairs = monitor_pairs[np.linspace(0, len(monitor_pairs) - 1, grid_count).astype(int)]

    # -- model, optimizer, state (process 0's initial weights reach the others when the model is prepared)
    torch.manual_seed(seed + rank)
    model = LAQModel(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=ADAM_BETAS)
    window = MetricsWindow(config.codebook_size)
    # Per-step code counts of the last few steps: a code is dead if it went unchosen lately, even if it
    # was popular earlier in a long interval between replacements.
    recent_counts: Deque[torch.Tensor] = collections.deque(maxlen=dead_code_window)
    start_step, elapsed, collapse_warnings = 0, 0.0, 0
    global_batch = batch_size * processes
    if resume_from is not None:
        model.load_weights(resume_from / "model.safetensors")
        state = load_training_state(resume_from, model, optimizer)
        start_step, elapsed = int(state["step"]), float(state["elapsed_s"])
        # The saved sums are all processes' together: the main process takes them, the others start at 0.
        own = 1 if is_main else 0
        recent_counts.extend(own * torch.tensor(c, dtype=torch.long) for c in state["recent_counts"])
        window.load({"data_seconds": 0.0, **state["window"]})
        if not is_main:
            window.loss = window.copy_mse = window.grad_norm = 0.0
            window.counts.zero_()
        collapse_warnings = int(state.get("collapse_warnings", 0))
        before = (state.get("global_batch", state.get("batch_size")), state.get("accumulation", 1))
        if before != (global_batch, run.accumulation) and is_main:
            log.warning("%s: saved with %s pairs x %s accumulated batches per step, resumed with %d x %d: the "
                        "continuation draws other pairs than the interrupted run would have", resume_from,
                        before[0], before[1], global_batch, run.accumulation)
        run.restore_rng(start_step, seed)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model: LAQModel = accelerator.unwrap_model(model)
    codebook = raw_model.quantizer.codebook

    samples = PairSamples(store, train_pairs, augment_shift)
    sampler = RandomBatches(len(train_pairs), global_batch, seed, start=start_step * run.accumulation,
                            stop=steps * run.accumulation, shift=augment_shift)
    loader = run.loader(samples, sampler, workers, seed)
    hyper = {"config": config.name if hasattr(config, "name") else "", "steps": steps, "batch_size": batch_size,
             "global_batch": global_batch, "grad_accum": run.accumulation, "learning_rate": learning_rate,
             "warmup_steps": warmup_steps, "seed": seed, "frame_gap": config.frame_gap, "data_mode": store.mode,
             "num_workers": workers, "processes": processes}
    run.begin(start_step, hyper, "lapa-laq")
    metrics: List[dict] = run.read_metrics() if is_main else []
    if is_main:
        config.save(out / "config.json")
        log.info("LAQ %s params, %d train pairs (gap %d) from %d episodes, %d held-out episodes, %s, batch %d x %d "
                 "processes x %d accumulated, %s data (%s) with %d workers, steps %d -> %d",
                 f"{raw_model.num_parameters():,}", len(train_pairs), config.frame_gap, len(train_eps), len(val_eps),
                 accelerator.device, batch_size, processes, run.accumulation, store.mode, store.mode_reason, workers,
                 start_step, steps)

    def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
        if processes == 1:
            return t
        return accelerator.reduce(t.to(accelerator.device), reduction="sum").cpu()

    def gather_rows(t: torch.Tensor) -> torch.Tensor:
        """Every process's rows, in process order: the whole global batch, as one process would see it."""
        return t if processes == 1 else accelerator.gather(t.contiguous())

    def broadcast_codebook() -> None:
        if processes > 1:
            torch.distributed.broadcast(codebook.data, src=0)

    def reset_adam_rows(rows: torch.Tensor) -> None:
        # A replaced code must not inherit the moments of the dead one: they would fling it away.
        state = getattr(optimizer, "optimizer", optimizer).state.get(codebook, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows.to(state[key].device)] = 0

    bar = tqdm(total=steps, initial=start_step, desc="train LAQ", unit="step", disable=not (progress and is_main),
               file=sys.stderr, dynamic_ncols=True)
    step = start_step
    model.train()
    batches = iter(loader)
    try:
        while step < steps:
            tick = time.perf_counter()
            lr = learning_rate * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else learning_rate
            run.set_lr(optimizer, lr)
            counts = torch.zeros(config.codebook_size, dtype=torch.long)
            for micro in range(run.accumulation):
                wait = time.perf_counter()
                batch = next(batches)
                window.data_seconds += time.perf_counter() - wait
                frames_t, frames_tk = batch["frames"][:, 0], batch["frames"][:, 1]
                if step == 0 and micro == 0:
                    # Data-dependent codebook init: every code starts on a real latent, none starts dead.
                    with torch.no_grad():
                        latents, _ = raw_model.encode_latents(*raw_model._preprocess_pair(frames_t, frames_tk))
                    raw_model.quantizer.initialize_from(gather_rows(latents))
                    broadcast_codebook()
                with accelerator.accumulate(model):
                    output = model(frames_t, frames_tk)
                    accelerator.backward(output.loss)
                    if accelerator.sync_gradients:
                        window.grad_norm += float(accelerator.clip_grad_norm_(model.parameters(), GRAD_CLIP))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                counts += code_counts(output.indices, config.codebook_size)
                window.loss += float(output.loss.detach()) / run.accumulation
                window.copy_mse += float(output.copy_mse) / run.accumulation
            step += 1

            recent_counts.append(counts)
            window.counts += counts
            if window.first_step is None:
                window.first_step = step
            window.steps += 1
            window.pairs += global_batch * run.accumulation
            if replacement_due(step):
                replaced = raw_model.quantizer.replace_unused_codes(all_reduce_sum(sum(recent_counts)),
                                                                    gather_rows(output.latents.detach()),
                                                                    dead_code_share)
                broadcast_codebook()
                if len(replaced):
                    reset_adam_rows(replaced)
                window.replaced += len(replaced)
            window.seconds += time.perf_counter() - tick
            bar.update(1)

            if (log_every > 0 and step % log_every == 0) or step == steps:
                record = _log_record(step, window, all_reduce_sum(window.counts.clone()), lr, run)
                elapsed += window.seconds
                record["elapsed_s"] = round(elapsed, 2)
                val_mse, val_copy = _monitor(raw_model, store, monitor_pairs, run)
                record.update(val_mse=val_mse, val_copy_mse=val_copy)
                model.train()
                run.log(record)
                if is_main:
                    metrics.append(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", copy=f"{record['copy_mse']:.4f}",
                                    codes=f"{record['codes_used']}/{config.codebook_size}",
                                    ppl=f"{record['perplexity']:.2f}")
                    if record["collapse"]:
                        message = (f"WARNING codebook collapse: {record['codes_used']}/{config.codebook_size} codes "
                                   f"in use over steps {record['window_start']}-{step} "
                                   f"(perplexity {record['perplexity']:.2f})")
                        bar.write(message, file=sys.stderr)  # tqdm.write keeps the bar intact; prints when it is off
                collapse_warnings += int(record["collapse"])
                window.reset()

            if (save_every > 0 and step % save_every == 0) or step == steps:
                # Sums of every process (the main process writes the state; on resume it takes them back).
                saved_window = window.to_json()
                saved_window.update(run.reduce_sum({k: window.to_json()[k] for k in ("loss", "copy_mse", "grad_norm")}))
                saved_window["counts"] = all_reduce_sum(window.counts.clone()).tolist()
                saved_recent = [all_reduce_sum(c.clone()).tolist() for c in recent_counts]
                run.save(step, raw_model, optimizer, {
                    "elapsed_s": elapsed, "recent_counts": saved_recent,
                    "window": saved_window, "collapse_warnings": collapse_warnings, "seed": seed,
                    "batch_size": batch_size, "global_batch": global_batch, "learning_rate": learning_rate,
                    "data": str(getattr(store.source, "root", "")), "data_position": step * run.accumulation})
    finally:
        bar.close()

    run.wait()
    summary: Dict[str, Any] = {}
    if is_main:
        raw_model.save_pretrained(out / "final")
        summary = _finish(out, raw_model, store, grid_pairs, metrics, collapse_warnings, steps, elapsed, batch_size,
                          accelerator)
        summary.update(data_mode=store.mode, data_mode_reason=store.mode_reason, num_workers=workers,
                       grad_accum=run.accumulation, global_batch=global_batch * run.accumulation)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    run.finish()
    return summary


def _log_record(step: int, window: MetricsWindow, counts: torch.Tensor, lr: float, run: TrainingRun) -> dict:
    """One metrics line: losses averaged over the window's steps and over the processes (the loss of the
    global batch), code usage of all processes."""
    n = max(1, window.steps)
    sums = run.reduce_sum({"loss": window.loss, "copy_mse": window.copy_mse, "grad_norm": window.grad_norm})
    p = run.num_processes
    used, perplexity = usage_and_perplexity(counts)
    return {"step": step, "window_start": window.first_step, "loss": sums["loss"] / n / p,
            "copy_mse": sums["copy_mse"] / n / p, "codes_used": used, "perplexity": round(perplexity, 4),
            "collapse": used < len(counts) / 2, "replaced": window.replaced, "lr": lr,
            "grad_norm": sums["grad_norm"] / n / p,
            "pairs_per_s": round(window.pairs / max(window.seconds, 1e-9), 1),
            "data_wait_share": round(window.data_seconds / max(window.seconds, 1e-9), 4), "counts": counts.tolist()}


@torch.no_grad()
def _monitor(model: LAQModel, store, pairs: np.ndarray, run: TrainingRun) -> tuple:
    """MSE of nearest-code reconstructions (what labelling will use) and of copying frame t, on fixed pairs;
    each process reconstructs its share of them."""
    model.eval()
    mine = np.array_split(pairs, run.num_processes)[run.rank]
    sums = {"mse": 0.0, "copy": 0.0, "n": 0.0}
    if len(mine):
        frames_t, frames_tk = gather(store, mine)
        with run.accelerator.autocast():
            output = model(frames_t, frames_tk)
        sums = {"mse": float(output.loss) * len(mine), "copy": float(output.copy_mse) * len(mine), "n": len(mine)}
    sums = run.reduce_sum(sums)
    return sums["mse"] / max(sums["n"], 1), sums["copy"] / max(sums["n"], 1)


def _finish(out: Path, model: LAQModel, store, grid_pairs, metrics, collapse_warnings, steps, elapsed, batch_size,
            accelerator) -> dict:
    from .plots import plot_training, save_reconstruction_grid

    config = model.config
    model.eval()
    frames_t, frames_tk = gather(store, grid_pairs)
    indices = model.encode(frames_t, frames_tk)
    predictions = model.reconstruct(frames_t, indices).float().cpu().numpy()
    save_reconstruction_grid(frames_t, frames_tk, predictions, indices.cpu().numpy(), out / "reconstructions.png",
                             config.frame_gap)
    if metrics:
        plot_training(metrics, out / "training.png", config.codebook_size)
    last = metrics[-1] if metrics else {}
    summary = {"out": str(out), "steps": steps, "elapsed_s": round(elapsed, 1), "batch_size": batch_size,
               "processes": accelerator.num_processes, "device": str(accelerator.device),
               "mixed_precision": accelerator.mixed_precision, "parameters": model.num_parameters(),
               "frame_gap": config.frame_gap, "final": {k: last.get(k) for k in (
                   "loss", "copy_mse", "val_mse", "val_copy_mse", "codes_used", "perplexity")},
               "collapse_warnings": collapse_warnings, "checkpoint": str(out / "final")}
    return summary


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="episode dataset directory or folder of .mp4 videos")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, plots)")
    p.add_argument("--config", default="tiny", help="named size (tiny, small, paper) or a config.json path")
    p.add_argument("--frame-gap", type=int, default=None, help="k: pairs (x_t, x_t+k); default from the config")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps; default from the config")
    p.add_argument("--batch-size", type=int, default=None, help="frame pairs per step and process")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate; default from the config")
    p.add_argument("--warmup-steps", type=int, default=100, help="linear learning-rate warmup")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50, help="steps per metrics line (and code usage window)")
    p.add_argument("--save-every", type=int, default=1000, help="steps per checkpoint (0: only the final one)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="newest checkpoints kept (0: all)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the newest checkpoint in --out (or the one given)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="episodes held out to monitor reconstruction")
    p.add_argument("--monitor-pairs", type=int, default=256,
                   help="fixed held-out pairs whose nearest-code reconstruction is logged every --log-every steps")
    p.add_argument("--augment-shift", type=int, default=0, help="random translation in pixels (same for both frames)")
    p.add_argument("--dead-code-share", type=float, default=0.03,
                   help="a code is replaced when it gets less than this fraction of a fair 1/C share of assignments "
                        "over the last --dead-code-window steps")
    p.add_argument("--dead-code-window", type=int, default=10, help="steps over which code usage is judged")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None,
                   help="default: bf16 on a GPU that supports it, else no")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_allow_squash_argument(p)
    p.add_argument("--no-progress", action="store_true")
    add_run_arguments(p)


def main(args: argparse.Namespace) -> int:
    return report_input_errors(_run, args)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = get_config(args.config, frame_gap=args.frame_gap)
    summary = train(config, args.data, args.out, steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                    warmup_steps=args.warmup_steps, seed=args.seed, log_every=args.log_every,
                    save_every=args.save_every, keep_checkpoints=args.keep_checkpoints, resume=args.resume,
                    val_fraction=args.val_fraction, augment_shift=args.augment_shift,
                    dead_code_share=args.dead_code_share, dead_code_window=args.dead_code_window,
                    mixed_precision=args.mixed_precision, num_monitor_pairs=args.monitor_pairs,
                    progress=not args.no_progress, data_mode=args.data_mode, num_workers=args.num_workers,
                    grad_accum=args.grad_accum, report_to=args.report_to, cache_dir=args.cache_dir,
                    allow_squash=args.allow_squash)
    if summary:
        print(json.dumps(summary))
    return 0
