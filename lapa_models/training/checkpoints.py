"""Training checkpoints shared by LAQ and the policy: safetensors + JSON, never pickles.

A run directory holds ``checkpoint-<step>/`` folders, each complete or absent (written under a
temporary name by the main process, renamed when every process has added its part)::

    checkpoint-<step>/
      <the model's own files>         save_pretrained of the model (config.json, model.safetensors, ...)
      training_state.json             step, data position, schedule, counters of the trainer, optimizer
                                      hyper-parameters (param_groups), process count and batch sizes
      training_state.safetensors      optimizer moments, keyed "<name>/<parameter name>" (e.g. exp_avg/...)
      rng_<rank>.json/.safetensors    each process's random streams (torch CPU/CUDA, numpy generators)

Keying the optimizer state by parameter name (not by position) makes a checkpoint readable after
parameters are added to or frozen in the model, and readable by a person.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

STATE_JSON = "training_state.json"
STATE_TENSORS = "training_state.safetensors"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# The policy's former checkpoint files: weights and optimizer only (read for resuming old runs).
LEGACY_OPTIMIZER_FILE = "optimizer.safetensors"
LEGACY_STATE_FILE = "trainer_state.json"


class TrainingStateError(ValueError):
    """A training checkpoint that is missing, corrupt or does not fit this run (the message says which)."""


def read_safetensors(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise TrainingStateError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise TrainingStateError(f"{path}: corrupt or truncated safetensors file ({e})") from e


def checkpoint_step(path: Path) -> Optional[int]:
    m = CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def find_checkpoints(out: Union[str, Path], legacy: bool = False) -> List[Path]:
    """``checkpoint-<step>`` directories of a run that hold a complete training state, oldest first
    (``legacy``: also the policy's former weights + optimizer checkpoints)."""
    out = Path(out)
    if not out.is_dir():
        return []
    names = (STATE_JSON, LEGACY_STATE_FILE) if legacy else (STATE_JSON,)
    found = [(checkpoint_step(p), p) for p in out.iterdir()
             if checkpoint_step(p) is not None and any((p / n).is_file() for n in names)]
    return [p for _, p in sorted(found)]


def prune_checkpoints(out: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (0: keep all)."""
    if keep > 0:
        for old in find_checkpoints(out, legacy=True)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


# ============================================================================ optimizer + counters
def _torch_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)   # accelerate's wrapper -> the torch optimizer


def save_training_state(directory: Path, model: torch.nn.Module, optimizer, state: Dict[str, Any]) -> None:
    """Optimizer moments as safetensors (keyed by parameter name) and counters/hyper-parameters as JSON."""
    from safetensors.torch import save_file

    optimizer = _torch_optimizer(optimizer)
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


def load_training_state(directory: Path, model: torch.nn.Module, optimizer) -> Dict[str, Any]:
    """Restore the optimizer saved by ``save_training_state``; returns the saved counters."""
    path = directory / STATE_JSON
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrainingStateError(f"{path}: unreadable training state ({e})") from e
    optimizer = _torch_optimizer(optimizer)
    tensors = read_safetensors(directory / STATE_TENSORS)
    params = dict(model.named_parameters())
    by_param: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        kind, name = key.split("/", 1)
        if name not in params:
            raise TrainingStateError(f"{directory / STATE_TENSORS}: optimizer state for unknown parameter {name}")
        by_param.setdefault(name, {})[kind] = value
    index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    missing = [n for n in by_param if id(params[n]) not in index]
    if missing:
        raise TrainingStateError(f"{directory / STATE_TENSORS}: optimizer state for parameters this run does not "
                                 f"train ({', '.join(missing[:5])}); resume with the same frozen parts")
    groups = state["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise TrainingStateError(f"{path}: {len(groups)} optimizer parameter groups, this run has "
                                 f"{len(optimizer.param_groups)}")
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({
        "state": {index[id(params[n])]: v for n, v in by_param.items()},
        "param_groups": [{**g, "params": [index[id(p)] for p in og["params"]]}
                         for g, og in zip(groups, optimizer.param_groups)]})
    return state


def load_legacy_optimizer(directory: Path, optimizer) -> int:
    """The policy's former optimizer checkpoint (positional keys); returns its step."""
    meta = json.loads((directory / LEGACY_STATE_FILE).read_text())
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in read_safetensors(directory / LEGACY_OPTIMIZER_FILE).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    _torch_optimizer(optimizer).load_state_dict({"state": state, "param_groups": groups})
    return int(meta["step"])


# ============================================================================ random streams
def _rng_files(rank: int):
    return f"rng_{rank}.json", f"rng_{rank}.safetensors"


def save_rng(directory: Path, rank: int, generators: Optional[Dict[str, np.random.Generator]] = None) -> None:
    """This process's torch (CPU, CUDA) random state and named numpy generators."""
    from safetensors.torch import save_file

    json_name, tensor_name = _rng_files(rank)
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(directory / tensor_name))
    (directory / json_name).write_text(json.dumps({"numpy": {k: g.bit_generator.state
                                                             for k, g in (generators or {}).items()}}))


def load_rng(directory: Path, rank: int, generators: Optional[Dict[str, np.random.Generator]] = None) -> bool:
    """Restore what ``save_rng`` saved; False when this process has no saved state (another process count)."""
    json_name, tensor_name = _rng_files(rank)
    if not (directory / json_name).is_file():
        return False
    tensors = read_safetensors(directory / tensor_name)
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    saved = json.loads((directory / json_name).read_text())
    numpy_states = saved.get("numpy", {}) if isinstance(saved, dict) and "numpy" in saved else {}
    for name, generator in (generators or {}).items():
        if name in numpy_states:
            generator.bit_generator.state = numpy_states[name]
    return True
