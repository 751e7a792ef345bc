"""One training run on ``accelerate``: what LAQ training and policy training share.

``TrainingRun`` owns the run directory and the processes' coordination; each trainer keeps only its
own step (forward, loss, its metrics):

- **processes**: one ``Accelerator`` (1 CPU process, or ``accelerate launch`` / ``torchrun`` for
  several: gloo on CPU, NCCL on GPUs), mixed precision (bf16 on GPUs), gradient accumulation
  (``accumulate``), data loaders that hand each process its slice of every global batch
  (``split_batches``: the batch samplers of lapa_models.data.sampling yield global batches);
- **learning rate**: set by the trainer from the optimizer step before every step (``set_lr``), so the
  schedule does not depend on the process count (accelerate's prepared schedulers step once per
  process);
- **checkpoints**: written once, by the main process, plus each process's random state
  (lapa_models.training.checkpoints), appearing complete or not at all; ``resume`` finds the newest,
  restores weights, optimizer, random streams and the step (from which the samplers restart at the
  same data position);
- **logging**: ``metrics.jsonl`` (main process only, truncated to the resumed step), and optionally
  TensorBoard or Weights & Biases through accelerate's trackers (``--report-to``);
- **reductions**: ``reduce_sum`` for sharded validation and counters.

Launching several processes: ``torchrun --nproc-per-node N -m lapa_models laq train ...`` (or
``accelerate launch --num_processes N`` on GPUs). On a machine without CUDA the processes join one gloo
group on CPU by themselves (``cpu_processes``); note that ``accelerate launch --cpu --num_processes N``
starts a single process unless MPI is set up (accelerate 1.15 hands multi-CPU launches to mpirun).

FSDP is not used. accelerate 1.15 turns FSDP on only for multi-GPU (or other accelerator) process
groups (``AcceleratorState``: the FSDP branch sits under MULTI_GPU/NPU/XPU..., never MULTI_CPU), so it
cannot be smoke-tested on CPU; and these loops save the unwrapped model's state dict and the optimizer
(by parameter name) from the main process, which under FSDP would hold only its shard of each
(``accelerator.get_state_dict`` and sharded optimizer checkpoints would be needed). The models here
(LAQ paper size ~300M parameters, a siglip-base policy with a frozen tower) train with DDP on one GPU
each.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import numpy as np
import torch

from .checkpoints import (LEGACY_STATE_FILE, STATE_JSON, TrainingStateError, find_checkpoints, load_rng,
                          prune_checkpoints, save_rng, save_training_state)

log = logging.getLogger("lapa_models.training")

REPORT_TO = ("none", "tensorboard", "wandb")


def add_run_arguments(p: argparse.ArgumentParser, mixed_precision_default: Optional[str] = None) -> None:
    """Options every training command has (data reading, processes, trackers)."""
    p.add_argument("--data-mode", choices=["auto", "memory", "stream"], default="auto",
                   help="memory: decode every frame once into RAM (memory-mapped cache beside the data; fastest, "
                        "memory grows with the data); stream: compress each episode once into shards and read "
                        "frames on the fly in DataLoader workers (memory flat in data size); auto: memory when "
                        "the decoded frames fit in 2 GiB (or a quarter of the RAM), else stream")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader worker processes reading batches (and building stream shards); default 0 "
                        "in memory mode, 2 in stream mode")
    p.add_argument("--cache-dir", default=None, help="where frame caches and stream shards go "
                                                     "(default: <data>/cache)")
    p.add_argument("--grad-accum", type=int, default=1, metavar="K",
                   help="gradient accumulation: each optimizer step sums K batches per process")
    p.add_argument("--report-to", choices=list(REPORT_TO), default="none",
                   help="also log metrics to TensorBoard (<out>/tracking) or Weights & Biases through accelerate; "
                        "metrics.jsonl is written either way")


def default_workers(mode: str, requested: Optional[int]) -> int:
    if requested is not None:
        if requested < 0:
            raise ValueError(f"--num-workers must be >= 0, got {requested}")
        return int(requested)
    return 2 if mode == "stream" else 0


def tracker_available(name: str) -> bool:
    """Whether accelerate finds the package of tracker ``name`` (installed with its metadata)."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    return bool({"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}[name]())


def check_report_to(report_to: str) -> str:
    """``report_to`` if its package is installed; a clear error (no traceback) if not."""
    report_to = report_to or "none"
    if report_to not in REPORT_TO:
        raise ValueError(f"--report-to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to != "none" and not tracker_available(report_to):
        raise ValueError(f"--report-to {report_to}: the {report_to} package is not installed "
                         f"(pip install {report_to}); metrics.jsonl is written without it")
    return report_to


def cpu_processes() -> bool:
    """Several processes (torchrun / accelerate launch) on a machine without CUDA: they must join one gloo
    group on CPU. accelerate only does that when told (ACCELERATE_USE_CPU); without it each process would
    train alone, all writing the same run directory."""
    world = max(int(os.environ.get(k, "1") or 1) for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or (
        world > 1 and not torch.cuda.is_available())


def process_state():
    """accelerate's per-process state (rank, process count, device, barriers), set up as ``TrainingRun``
    sets it up: the first of them to be created decides for the whole process."""
    from accelerate import PartialState

    return PartialState(cpu=cpu_processes())


def _scalars(record: Dict[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and k != "step"}


def _identity(batch):
    return batch


class TrainingRun:
    """Accelerate setup, resume, checkpoints, metrics and trackers of one run (see the module doc).

    ``resume``: True continues from the newest checkpoint in ``out`` (if any), a path from that
    checkpoint, False starts a new run. ``existing``: what a new run does when ``out`` already holds
    checkpoints: "refuse" (FileExistsError) or "restart" (they are deleted: they belong to another run).
    """

    def __init__(self, out: Union[str, Path], *, resume: Union[bool, str, Path] = False, existing: str = "refuse",
                 mixed_precision: str = "no", gradient_accumulation_steps: int = 1, report_to: str = "none",
                 keep_checkpoints: int = 2, legacy_checkpoints: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, GradientAccumulationPlugin

        self.out = Path(out)
        self.report_to = check_report_to(report_to)
        if int(gradient_accumulation_steps) < 1:
            raise ValueError(f"gradient accumulation must be >= 1 batch, got {gradient_accumulation_steps}")
        self.accumulation = int(gradient_accumulation_steps)
        self.keep_checkpoints = int(keep_checkpoints)
        self.accelerator = Accelerator(
            cpu=cpu_processes(), mixed_precision=mixed_precision,
            gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=self.accumulation,
                                                                    sync_with_dataloader=False),
            dataloader_config=DataLoaderConfiguration(split_batches=True),
            log_with=None if self.report_to == "none" else self.report_to, project_dir=str(self.out))
        self._legacy = legacy_checkpoints
        self.resume_from = self._where_to_start(resume, existing)
        self.metrics_path = self.out / "metrics.jsonl"
        self._trackers = False

    # ------------------------------------------------------------------ processes
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ resume
    def _where_to_start(self, resume, existing: str) -> Optional[Path]:
        found = find_checkpoints(self.out, legacy=self._legacy)
        if resume and isinstance(resume, (str, Path)) and not isinstance(resume, bool):
            path = Path(resume)
            if not (path / STATE_JSON).is_file() and not (self._legacy and (path / LEGACY_STATE_FILE).is_file()):
                raise TrainingStateError(f"{path}: not a training checkpoint (no {STATE_JSON})")
            return path
        if resume:
            if not found and self.is_main:
                log.info("no checkpoint in %s: starting from scratch", self.out)
            return found[-1] if found else None
        if found:
            if existing == "refuse":
                raise FileExistsError(f"{self.out}: already holds checkpoints; pass --resume to continue that run "
                                      "or choose a new --out")
            self.wait()   # every process has looked before the main one deletes
            if self.is_main:
                log.warning("%s: starting over; deleting %d checkpoint(s) of an earlier run (pass --resume to "
                            "continue it)", self.out, len(found))
                for path in found:
                    shutil.rmtree(path, ignore_errors=True)
        return None

    def restore_rng(self, step: int, seed: int, generators: Optional[Dict[str, np.random.Generator]] = None) -> None:
        """This process's random streams from the resumed checkpoint (fresh ones if it has none for it)."""
        if self.resume_from is None:
            return
        if not load_rng(self.resume_from, self.rank, generators):
            torch.manual_seed(seed + self.rank + 7919 * step)
            log.warning("%s: no random state for process %d (saved by another process count); resuming with "
                        "fresh random streams", self.resume_from, self.rank)

    # ------------------------------------------------------------------ data
    def loader(self, dataset, batch_sampler, num_workers: int = 0, seed: int = 0):
        """A DataLoader over global batches from ``batch_sampler``; each process gets its slice of each
        batch, moved to its device."""
        import torch.utils.data

        if batch_sampler.batch_size % self.num_processes:
            raise ValueError(f"global batch of {batch_sampler.batch_size} does not split over "
                             f"{self.num_processes} processes")
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=_identity,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            # Worker seeds come from this generator, not from the global torch stream the model uses.
            generator=torch.Generator().manual_seed(int(seed)))
        return self.accelerator.prepare_data_loader(loader)

    # ------------------------------------------------------------------ logging
    def begin(self, start_step: int, hyperparameters: Dict[str, Any], project: str) -> None:
        """metrics.jsonl (kept up to ``start_step`` when resuming) and the trackers."""
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            kept = []
            if self.resume_from is not None and self.metrics_path.is_file():
                kept = [line for line in self.metrics_path.read_text().splitlines()
                        if line.strip() and json.loads(line).get("step", 0) <= start_step]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        if self.report_to != "none":
            config = {k: v for k, v in hyperparameters.items()
                      if isinstance(v, (int, float, str, bool)) and not k.startswith("_")}
            init = {"wandb": {"name": self.out.name, "dir": str(self.out)}} if self.report_to == "wandb" else {}
            self.accelerator.init_trackers("tracking" if self.report_to == "tensorboard" else project,
                                           config=config, init_kwargs=init)
            self._trackers = True
        self.wait()

    def log(self, record: Dict[str, Any]) -> None:
        """One metrics line (main process) and the same scalars to the trackers."""
        if self.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self._trackers:
            self.accelerator.log(_scalars(record), step=int(record["step"]))

    def read_metrics(self):
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    # ------------------------------------------------------------------ steps
    @staticmethod
    def set_lr(optimizer, lr: Union[float, Sequence[float]]) -> None:
        groups = getattr(optimizer, "optimizer", optimizer).param_groups
        lrs = [lr] * len(groups) if isinstance(lr, (int, float)) else list(lr)
        for group, value in zip(groups, lrs):
            group["lr"] = float(value)

    def reduce_sum(self, values: Dict[str, float]) -> Dict[str, float]:
        """Sum of each value over the processes (the same dict on every process)."""
        if self.num_processes == 1 or not values:
            return dict(values)
        keys = sorted(values)
        total = self.accelerator.reduce(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                                                     device=self.device), reduction="sum")
        return dict(zip(keys, total.cpu().tolist()))

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int, model: torch.nn.Module, optimizer, state: Dict[str, Any],
             save_model: Optional[Callable[[Path], Any]] = None,
             generators: Optional[Dict[str, np.random.Generator]] = None) -> Path:
        """``checkpoint-<step>``: weights, optimizer and ``state`` by the main process, each process's RNG."""
        directory = self.out / f"checkpoint-{step}"
        tmp = directory.with_name(directory.name + ".tmp")
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            (save_model or model.save_pretrained)(tmp)
            save_training_state(tmp, model, optimizer, {**state, "step": step, "processes": self.num_processes,
                                                        "accumulation": self.accumulation})
        self.wait()
        save_rng(tmp, self.rank, generators)
        self.wait()
        if self.is_main:
            shutil.rmtree(directory, ignore_errors=True)
            tmp.replace(directory)   # a checkpoint appears complete or not at all
            prune_checkpoints(self.out, self.keep_checkpoints)
        self.wait()
        return directory

    def finish(self) -> None:
        self.wait()
        if self._trackers:
            self.accelerator.end_training()
            self._trackers = False
