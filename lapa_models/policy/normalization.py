"""Action and state statistics from the data, and the maps between robot units and what the heads predict.

Continuous head: actions are normalized per dimension, ``(a - mean) / std`` (default) or to [-1, 1] by
the data's min/max; the L1 loss is taken in that space and the output is mapped back to robot units.

Bins head (the paper's recipe): each action dimension is cut into ``num_bins`` (256) bins at the data's
quantiles; a value's label is the bin whose midpoint is nearest (so a value that fills many degenerate
bins, such as a gripper that is exactly 0 or 1, decodes back exactly), and a prediction decodes to the
midpoint of its bin.

The statistics are saved with every checkpoint (``normalization.json``) and written into the model card.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

# A dimension that never varies (std 0) maps to 0 instead of dividing by zero.
STD_FLOOR = 1e-3
FILE_NAME = "normalization.json"


@dataclasses.dataclass
class NormalizationStats:
    """Per-dimension statistics: float32 arrays of shape (A,) for actions and (S,) for states."""

    action_mean: np.ndarray
    action_std: np.ndarray
    action_min: np.ndarray
    action_max: np.ndarray
    action_q01: np.ndarray
    action_q99: np.ndarray
    bin_edges: np.ndarray                    # (A, num_bins + 1) quantile edges
    state_mean: Optional[np.ndarray] = None
    state_std: Optional[np.ndarray] = None
    state_min: Optional[np.ndarray] = None
    state_max: Optional[np.ndarray] = None
    num_samples: int = 0

    @classmethod
    def from_data(cls, actions: np.ndarray, states: Optional[np.ndarray] = None,
                  num_bins: int = 256) -> "NormalizationStats":
        """Statistics of (N, A) actions and optional (N, S) states."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"actions must be a non-empty (N, A) array, got shape {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("actions contain NaN or Inf")
        f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
        kw: Dict[str, Any] = {}
        if states is not None:
            states = np.asarray(states, dtype=np.float64)
            if states.ndim != 2 or len(states) != len(actions):
                raise ValueError(f"states must be ({len(actions)}, S), got {states.shape}")
            kw = dict(state_mean=f32(states.mean(0)), state_std=f32(np.maximum(states.std(0), STD_FLOOR)),
                      state_min=f32(states.min(0)), state_max=f32(states.max(0)))
        edges = np.quantile(actions, np.linspace(0.0, 1.0, num_bins + 1), axis=0).T
        return cls(action_mean=f32(actions.mean(0)), action_std=f32(np.maximum(actions.std(0), STD_FLOOR)),
                   action_min=f32(actions.min(0)), action_max=f32(actions.max(0)),
                   action_q01=f32(np.quantile(actions, 0.01, axis=0)),
                   action_q99=f32(np.quantile(actions, 0.99, axis=0)),
                   bin_edges=f32(edges), num_samples=int(len(actions)), **kw)

    # ------------------------------------------------------------------ derived
    @property
    def action_dim(self) -> int:
        return int(len(self.action_mean))

    @property
    def state_dim(self) -> int:
        return 0 if self.state_mean is None else int(len(self.state_mean))

    @property
    def num_bins(self) -> int:
        return int(self.bin_edges.shape[1] - 1)

    @property
    def bin_centers(self) -> np.ndarray:
        """(A, num_bins) midpoints: what a predicted bin decodes to."""
        return ((self.bin_edges[:, :-1] + self.bin_edges[:, 1:]) / 2).astype(np.float32)

    def action_scale_offset(self, mode: str) -> tuple:
        """(scale, offset) such that robot units = normalized * scale + offset."""
        if mode == "mean_std":
            return self.action_std, self.action_mean
        if mode == "min_max":
            half_range = np.maximum((self.action_max - self.action_min) / 2, STD_FLOOR)
            return half_range.astype(np.float32), ((self.action_max + self.action_min) / 2).astype(np.float32)
        raise ValueError(f"unknown action normalization {mode!r}")

    # ------------------------------------------------------------------ (de)serialization
    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"num_samples": self.num_samples}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                out[f.name] = v.tolist()
        return out

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "NormalizationStats":
        arrays = {}
        for f in dataclasses.fields(cls):
            if f.name == "num_samples":
                continue
            v = d.get(f.name)
            arrays[f.name] = None if v is None else np.asarray(v, dtype=np.float32)
        missing = [k for k in ("action_mean", "action_std", "action_min", "action_max", "bin_edges")
                   if arrays.get(k) is None]
        if missing:
            raise ValueError(f"normalization stats: missing {missing}")
        return cls(num_samples=int(d.get("num_samples", 0)), **arrays)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> "NormalizationStats":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: normalization statistics are missing")
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: corrupt normalization statistics ({e})") from e
