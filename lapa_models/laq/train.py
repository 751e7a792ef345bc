"""Train LAQ on episodes or on a folder of videos (actions, if any, are ignored).

    python -m lapa_models.laq.train --data data/sim/mt10_64 --config tiny --out runs/laq_tiny
    python -m lapa_models.laq.train --data data/sim/mt10_64 --config tiny --out runs/laq_tiny --resume
    python -m lapa_models.laq.train --data videos/ --config small --frame-gap 2 --steps 20000 --out runs/laq_small
    accelerate launch -m lapa_models.laq.train --data DIR --config paper --out runs/laq_paper   # GPUs, bf16
    torchrun --nproc-per-node 8 -m lapa_models.laq.train --data DIR --config paper --out runs/laq_paper

Writes to --out: ``checkpoint-<step>/`` (model.safetensors + config.json + training state) every
--save-every steps, ``final/``, ``metrics.jsonl`` (one JSON line per --log-every steps),
``training.png`` (loss vs copy-frame baseline, code usage, perplexity), ``reconstructions.png``
(frame t, frame t+k, reconstruction) and ``summary.json``. Training state is safetensors + JSON,
never pickles; ``--resume`` continues bit-exactly on the same hardware and process count.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Union

import numpy as np
import torch

from lapa_models.commands import report_input_errors
from .configuration import LAQConfig, get_config
from .data import frame_pairs, gather, load_frames, random_shift, split_episodes
from .modeling import CheckpointError, LAQModel, read_safetensors
from .quantizer import code_counts, replacement_due, usage_and_perplexity

log = logging.getLogger("lapa_models.laq.train")

ADAM_BETAS = (0.9, 0.99)
GRAD_CLIP = 0.5
STATE_JSON = "training_state.json"
STATE_TENSORS = "training_state.safetensors"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def _rng_files(rank: int):
    return f"rng_{rank}.json", f"rng_{rank}.safetensors"


# ---------------------------------------------------------------------------- checkpoints
def find_checkpoints(out: Union[str, Path]) -> List[Path]:
    """``checkpoint-<step>`` directories of a run that hold a complete training state, oldest first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir()
             if (m := CHECKPOINT_RE.match(p.name)) and (p / STATE_JSON).is_file()]
    return [p for _, p in sorted(found)]


def save_training_state(directory: Path, model: LAQModel, optimizer: torch.optim.Optimizer,
                        state: Dict[str, Any]) -> None:
    """Optimizer moments as safetensors (keyed by parameter name) and scalars/counters as JSON."""
    from safetensors.torch import save_file

    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper -> the torch optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    tensors: Dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"{key}/{names[id(p)]}"] = torch.as_tensor(value).detach().contiguous().cpu()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
              for g in optimizer.param_groups]
    save_file(tensors, str(directory / STATE_TENSORS))
    (directory / STATE_JSON).write_text(json.dumps({**state, "param_groups": groups}, indent=1))


def load_training_state(directory: Path, model: LAQModel, optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    path = directory / STATE_JSON
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable training state ({e})") from e
    optimizer = getattr(optimizer, "optimizer", optimizer)
    tensors = read_safetensors(directory / STATE_TENSORS)
    params = dict(model.named_parameters())
    by_param: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        kind, name = key.split("/", 1)
        if name not in params:
            raise CheckpointError(f"{directory / STATE_TENSORS}: optimizer state for unknown parameter {name}")
        by_param.setdefault(name, {})[kind] = value
    index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    groups = state["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(f"{path}: {len(groups)} optimizer parameter groups, this run has "
                              f"{len(optimizer.param_groups)}")
    optimizer.load_state_dict({
        "state": {index[id(params[n])]: v for n, v in by_param.items()},
        "param_groups": [{**g, "params": [index[id(p)] for p in og["params"]]}
                         for g, og in zip(groups, optimizer.param_groups)]})
    return state


def save_rng(directory: Path, rank: int, data_rng: np.random.Generator) -> None:
    from safetensors.torch import save_file

    json_name, tensor_name = _rng_files(rank)
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(directory / tensor_name))
    (directory / json_name).write_text(json.dumps(data_rng.bit_generator.state))


def load_rng(directory: Path, rank: int, data_rng: np.random.Generator) -> bool:
    json_name, tensor_name = _rng_files(rank)
    if not (directory / json_name).is_file():
        return False  # another process count saved this checkpoint: the caller reseeds
    tensors = read_safetensors(directory / tensor_name)
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    data_rng.bit_generator.state = json.loads((directory / json_name).read_text())
    return True


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
        self.first_step: Optional[int] = None

    def to_json(self) -> dict:
        return {"steps": self.steps, "loss": self.loss, "copy_mse": self.copy_mse, "grad_norm": self.grad_norm,
                "counts": self.counts.tolist(), "replaced": self.replaced, "pairs": self.pairs,
                "seconds": self.seconds, "first_step": self.first_step}

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
          progress: bool = True) -> Dict[str, Any]:
    """Train an LAQ model; returns the run summary (also written to ``<out>/summary.json``).

    ``data`` is an episode dataset directory, a folder of videos or a ``FrameStore``. ``resume``: True
    continues from the newest checkpoint in ``out`` if there is one, a path from that checkpoint."""
    from accelerate import Accelerator
    from tqdm import tqdm

    out = Path(out)
    steps = int(steps or config.train_steps)
    batch_size = int(batch_size or config.batch_size)
    learning_rate = float(learning_rate or config.learning_rate)
    accelerator = Accelerator(mixed_precision=mixed_precision or default_mixed_precision())
    is_main, rank = accelerator.is_main_process, accelerator.process_index

    # -- where to start
    resume_from: Optional[Path] = None
    if resume:
        if isinstance(resume, (str, Path)) and not isinstance(resume, bool):
            resume_from = Path(resume)
            if not (resume_from / STATE_JSON).is_file():
                raise CheckpointError(f"{resume_from}: not a training checkpoint (no {STATE_JSON})")
        else:
            found = find_checkpoints(out)
            resume_from = found[-1] if found else None
            if resume_from is None and is_main:
                log.info("no checkpoint in %s: starting from scratch", out)
    elif find_checkpoints(out):
        raise FileExistsError(f"{out}: already holds checkpoints; pass --resume to continue that run "
                              "or choose a new --out")
    if resume_from is not None:
        saved = LAQConfig.from_json_file(resume_from / "config.json")
        mismatch = config.architecture_mismatch(saved)
        if mismatch:
            raise CheckpointError(f"{resume_from}: cannot resume with a different LAQ config "
                                  f"(requested vs checkpoint): {'; '.join(mismatch)}")

    # -- data: random pairs from training episodes, a fixed set from held-out episodes to monitor
    store = load_frames(data, config, progress=progress and is_main)
    train_eps, val_eps = split_episodes(store, val_fraction, seed)
    train_pairs = frame_pairs(store, config.frame_gap, train_eps)
    monitor_rng = np.random.default_rng(seed + 12345)
    val_pool = frame_pairs(store, config.frame_gap, val_eps) if val_eps and any(
        store.lengths[e] > config.frame_gap for e in val_eps) else train_pairs
    picked = monitor_rng.choice(len(val_pool), min(num_monitor_pairs, len(val_pool)), replace=False)
    monitor_pairs = val_pool[np.sort(picked)]
    grid_count = min(num_grid_examples, len(monitor_pairs))
    grid_pairs = monitor_pairs[np.linspace(0, len(monitor_pairs) - 1, grid_count).astype(int)]

    # -- model, optimizer, state
    torch.manual_seed(seed + rank)
    data_rng = np.random.default_rng([seed, rank])
    model = LAQModel(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=ADAM_BETAS)
    window = MetricsWindow(config.codebook_size)
    # Per-step code counts of the last few steps: a code is dead if it went unchosen lately, even if it
    # was popular earlier in a long interval between replacements.
    recent_counts: Deque[torch.Tensor] = collections.deque(maxlen=dead_code_window)
    start_step, elapsed, collapse_warnings = 0, 0.0, 0
    if resume_from is not None:
        model.load_weights(resume_from / "model.safetensors")
        state = load_training_state(resume_from, model, optimizer)
        start_step, elapsed = int(state["step"]), float(state["elapsed_s"])
        recent_counts.extend(torch.tensor(c, dtype=torch.long) for c in state["recent_counts"])
        window.load(state["window"])
        collapse_warnings = int(state.get("collapse_warnings", 0))
        if not load_rng(resume_from, rank, data_rng):
            torch.manual_seed(seed + rank + start_step)
            data_rng = np.random.default_rng([seed, rank, start_step])
            log.warning("%s: no RNG state for process %d; resuming with fresh random streams", resume_from, rank)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model: LAQModel = accelerator.unwrap_model(model)
    codebook = raw_model.quantizer.codebook

    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics: List[dict] = []
    if is_main:
        if resume_from is not None and metrics_path.is_file():
            metrics = [m for m in map(json.loads, metrics_path.read_text().splitlines()) if m["step"] <= start_step]
        metrics_path.write_text("".join(json.dumps(m) + "\n" for m in metrics))
        config.save(out / "config.json")
        log.info("LAQ %s params, %d train pairs (gap %d) from %d episodes, %d held-out episodes, %s, batch %d x %d "
                 "processes, steps %d -> %d", f"{raw_model.num_parameters():,}", len(train_pairs), config.frame_gap,
                 len(train_eps), len(val_eps), accelerator.device, batch_size, accelerator.num_processes,
                 start_step, steps)

    def batch_frames():
        picked = train_pairs[data_rng.integers(0, len(train_pairs), size=batch_size)]
        frames_t, frames_tk = gather(store, picked)
        frames_t, frames_tk = random_shift(frames_t, frames_tk, augment_shift, data_rng)
        return torch.from_numpy(frames_t), torch.from_numpy(frames_tk)

    def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
        if accelerator.num_processes == 1:
            return t
        return accelerator.reduce(t.to(accelerator.device), reduction="sum").cpu()

    def broadcast_codebook() -> None:
        if accelerator.num_processes > 1:
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
    try:
        while step < steps:
            tick = time.perf_counter()
            frames_t, frames_tk = batch_frames()
            if step == 0:
                # Data-dependent codebook init: every code starts on a real latent, none starts dead.
                with torch.no_grad():
                    latents, _ = raw_model.encode_latents(*raw_model._preprocess_pair(frames_t, frames_tk))
                raw_model.quantizer.initialize_from(latents)
                broadcast_codebook()
            lr = learning_rate * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else learning_rate
            for group in optimizer.param_groups:
                group["lr"] = lr
            output = model(frames_t, frames_tk)
            accelerator.backward(output.loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            counts = code_counts(output.indices, config.codebook_size)
            recent_counts.append(counts)
            window.counts += counts
            if window.first_step is None:
                window.first_step = step
            window.steps += 1
            window.loss += float(output.loss.detach())
            window.copy_mse += float(output.copy_mse)
            window.grad_norm += float(grad_norm)
            window.pairs += batch_size * accelerator.num_processes
            if replacement_due(step):
                replaced = raw_model.quantizer.replace_unused_codes(all_reduce_sum(sum(recent_counts)),
                                                                    output.latents.detach(), dead_code_share)
                broadcast_codebook()
                if len(replaced):
                    reset_adam_rows(replaced)
                window.replaced += len(replaced)
            window.seconds += time.perf_counter() - tick
            bar.update(1)

            if step % log_every == 0 or step == steps:
                record = _log_record(step, window, all_reduce_sum(window.counts.clone()), lr)
                elapsed += window.seconds
                record["elapsed_s"] = round(elapsed, 2)
                val_mse, val_copy = _monitor(raw_model, store, monitor_pairs, accelerator)
                record.update(val_mse=val_mse, val_copy_mse=val_copy)
                model.train()
                if is_main:
                    metrics.append(record)
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    bar.set_postfix(loss=f"{record['loss']:.4f}", copy=f"{record['copy_mse']:.4f}",
                                    codes=f"{record['codes_used']}/{config.codebook_size}",
                                    ppl=f"{record['perplexity']:.2f}")
                    if record["collapse"]:
                        collapse_warnings += 1
                        message = (f"WARNING codebook collapse: {record['codes_used']}/{config.codebook_size} codes "
                                   f"in use over steps {record['window_start']}-{step} "
                                   f"(perplexity {record['perplexity']:.2f})")
                        bar.write(message, file=sys.stderr)  # tqdm.write keeps the bar intact; prints when it is off
                window.reset()

            if step % save_every == 0 or step == steps:
                _save_checkpoint(out / f"checkpoint-{step}", raw_model, optimizer, accelerator, data_rng, {
                    "step": step, "elapsed_s": elapsed, "recent_counts": [c.tolist() for c in recent_counts],
                    "window": window.to_json(), "collapse_warnings": collapse_warnings, "seed": seed,
                    "batch_size": batch_size,
                    "learning_rate": learning_rate, "data": str(getattr(store.source, "root", ""))})
                if is_main:
                    for old in find_checkpoints(out)[:-keep_checkpoints] if keep_checkpoints > 0 else []:
                        shutil.rmtree(old, ignore_errors=True)
    finally:
        bar.close()

    accelerator.wait_for_everyone()
    summary: Dict[str, Any] = {}
    if is_main:
        raw_model.save_pretrained(out / "final")
        summary = _finish(out, raw_model, store, grid_pairs, metrics, collapse_warnings, steps, elapsed, batch_size,
                          accelerator)
    accelerator.wait_for_everyone()
    return summary


def _log_record(step: int, window: MetricsWindow, counts: torch.Tensor, lr: float) -> dict:
    n = max(1, window.steps)
    used, perplexity = usage_and_perplexity(counts)
    return {"step": step, "window_start": window.first_step, "loss": window.loss / n, "copy_mse": window.copy_mse / n,
            "codes_used": used, "perplexity": round(perplexity, 4), "collapse": used < len(counts) / 2,
            "replaced": window.replaced, "lr": lr, "grad_norm": window.grad_norm / n,
            "pairs_per_s": round(window.pairs / max(window.seconds, 1e-9), 1), "counts": counts.tolist()}


@torch.no_grad()
def _monitor(model: LAQModel, store, pairs: np.ndarray, accelerator) -> tuple:
    """MSE of nearest-code reconstructions (what labelling will use) and of copying frame t, on fixed pairs."""
    model.eval()
    frames_t, frames_tk = gather(store, pairs)
    with accelerator.autocast():
        output = model(frames_t, frames_tk)
    return float(output.loss), float(output.copy_mse)


def _save_checkpoint(directory: Path, model: LAQModel, optimizer, accelerator, data_rng, state: dict) -> None:
    tmp = directory.with_name(directory.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        save_training_state(tmp, model, optimizer, state)
    accelerator.wait_for_everyone()
    save_rng(tmp, accelerator.process_index, data_rng)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(directory, ignore_errors=True)
        tmp.replace(directory)  # a checkpoint appears complete or not at all
    accelerator.wait_for_everyone()


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
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
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
    p.add_argument("--save-every", type=int, default=1000, help="steps per checkpoint")
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
    p.add_argument("--no-progress", action="store_true")


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
                    progress=not args.no_progress)
    if summary:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
