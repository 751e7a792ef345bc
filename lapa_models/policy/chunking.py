"""Action chunking: turn the policy's overlapping action chunks into one action per control tick.

For a camera frame stamped t0 the policy predicts a chunk of H actions at the control period dt:
action k is meant for time t0 + k * dt. Inference takes longer than one period and a new chunk
starts before the previous one ends, so at a given time several chunks cover it. The policy node
(lapa_ros.nodes.policy, on the ROS clock) and the in-process evaluator (lapa_sim.evaluate, through
ChunkExecutor below, on the simulator's step clock) both add every chunk with `add(t0, chunk)` and take `action_at(now)`
at the control rate, so evaluating a policy in process predicts what it does through ROS:

  "latest"    the newest chunk (largest t0) that covers t;
  "ensemble"  temporal ensembling as in ACT (Zhao et al., "Learning Fine-Grained Bimanual
              Manipulation with Low-Cost Hardware", RSS 2023): every live chunk covering t
              contributes with weight w_i = exp(-m * i), i = 0 for the OLDEST contributing chunk,
              1 for the next, ... So with m > 0 (ACT's default m = 0.01) older predictions weigh
              slightly more, which smooths motion; m < 0 favours the newest chunk; m = 0 is uniform.
              m is `ensemble_decay`.
  "average"   uniform mean of the covering chunks (ensemble with m = 0).

Between two steps of a chunk (``interpolation``):

  "hold"    (default) action k holds over its whole control period [t0 + k dt, t0 + (k + 1) dt), as
            it did when the demonstration was recorded (the command held until the next frame); the
            chunk covers [t0, t0 + H dt). A controller ticking at any phase of the camera's period
            then sends the action of the period it is in: the same one a lockstep or in-process run
            sends. Measured on the simulated Sawyer in real time (the policy timer free-running
            against the simulator's 20 Hz): "linear" sent up to one step ahead of the frame, by a
            phase that changes from run to run (see the README's demo policy section).
  "linear"  action k is a sample at t0 + k dt and times between are interpolated (t0 + 2.5 dt gives
            the mean of actions 2 and 3); the chunk covers [t0, t0 + (H - 1) dt].

A chunk counts only while t - t0 <= max_chunk_age. `action_at` returns None when no chunk qualifies:
the caller then holds (sends zero velocity / the last safe target), it does not extrapolate.

Chunks are kept sorted by t0 and discarded once they can no longer cover any future query, so each
call costs O(live chunks) and memory is bounded (at most `max_chunks` chunks are kept).
"""
from __future__ import annotations

import bisect
import math
import threading
from typing import List, Optional

import numpy as np

MODES = ("latest", "ensemble", "average")
INTERPOLATIONS = ("hold", "linear")


class ChunkBlender:
    """Blends overlapping action chunks; times in float seconds of one clock (the node clock).

    action_dim: length of one action. period: control period dt [s] between chunk steps.
    max_chunk_age: a chunk stops contributing once t - t0 exceeds this [s].
    mode: "latest" | "ensemble" | "average". ensemble_decay: m in w_i = exp(-m * i) (ensemble mode).
    max_chunks: hard cap on stored chunks (the oldest are dropped first).
    interpolation: "hold" | "linear", what a chunk gives between its steps (module docstring).
    """

    def __init__(self, action_dim: int, period: float, max_chunk_age: float, mode: str = "ensemble",
                 ensemble_decay: float = 0.01, max_chunks: int = 64, interpolation: str = "hold"):
        if int(action_dim) != action_dim or action_dim < 1:
            raise ValueError(f"action_dim must be a positive integer, got {action_dim!r}")
        if not (period > 0 and math.isfinite(period)):
            raise ValueError(f"period must be a positive number of seconds, got {period!r}")
        if not (max_chunk_age > 0 and math.isfinite(max_chunk_age)):
            raise ValueError(f"max_chunk_age must be a positive number of seconds, got {max_chunk_age!r}")
        if mode not in MODES:
            raise ValueError(f"unknown chunk blending mode '{mode}'; one of: {', '.join(MODES)}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation '{interpolation}'; one of: {', '.join(INTERPOLATIONS)}")
        if not math.isfinite(ensemble_decay):
            raise ValueError(f"ensemble_decay must be finite, got {ensemble_decay!r}")
        if int(max_chunks) != max_chunks or max_chunks < 1:
            raise ValueError(f"max_chunks must be a positive integer, got {max_chunks!r}")
        self.action_dim = int(action_dim)
        self.period = float(period)
        self.max_chunk_age = float(max_chunk_age)
        self.mode = mode
        self.ensemble_decay = float(ensemble_decay)
        self.max_chunks = int(max_chunks)
        self.interpolation = interpolation
        self._hold = interpolation == "hold"
        self._t0: List[float] = []
        self._chunks: List[np.ndarray] = []
        self._latest_query = -math.inf
        self._lock = threading.Lock()  # inference thread adds while the control timer queries

    def __len__(self) -> int:
        return len(self._chunks)

    def reset(self) -> None:
        """Forget every chunk (new episode, or after a hold long enough that old plans are void)."""
        with self._lock:
            self._t0.clear()
            self._chunks.clear()
            self._latest_query = -math.inf

    def _span(self, chunk_len: int) -> float:
        """How long after its stamp a chunk of chunk_len steps covers [s] (the end is excluded for "hold")."""
        return (chunk_len if self._hold else chunk_len - 1) * self.period

    def _end(self, i: int) -> float:
        return self._t0[i] + self._span(len(self._chunks[i]))

    def _usable_after(self, t0: float, chunk_len: int, t: float) -> bool:
        """Can a chunk still cover some time >= t?"""
        end = t0 + self._span(chunk_len)
        covers = end > t + 1e-9 if self._hold else end >= t - 1e-9   # a held chunk's end is excluded
        return covers and t - t0 <= self.max_chunk_age

    def add(self, t0: float, chunk) -> bool:
        """Store the chunk predicted from the frame stamped t0 [s]; shape (H, action_dim), H >= 1.

        Returns False when it can no longer be used (it ends, or is too old, before the latest
        queried time). A chunk with the same t0 as a stored one replaces it. Raises ValueError for a
        non-finite t0, a wrong shape, or NaN/Inf in the chunk.
        """
        t0 = float(t0)
        if not math.isfinite(t0):
            raise ValueError(f"chunk stamp t0 must be finite, got {t0}")
        arr = np.array(chunk, dtype=float)  # a copy: the caller may reuse its buffer
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != self.action_dim:
            raise ValueError(f"a chunk must have shape (H, {self.action_dim}) with H >= 1, got {arr.shape}")
        bad = ~np.isfinite(arr)
        if bad.any():
            step, dim = np.argwhere(bad)[0]
            raise ValueError(f"chunk stamped {t0:.6f} has NaN/Inf (first at step {step}, dimension {dim}); "
                             "refusing it: the previous chunks stay in use")
        with self._lock:
            if not self._usable_after(t0, len(arr), self._latest_query):
                return False
            i = bisect.bisect_left(self._t0, t0)
            if i < len(self._t0) and self._t0[i] == t0:
                self._chunks[i] = arr
            else:
                self._t0.insert(i, t0)
                self._chunks.insert(i, arr)
            while len(self._chunks) > self.max_chunks:
                del self._t0[0], self._chunks[0]
            return True

    def _prune(self, t: float) -> None:
        keep = [i for i in range(len(self._t0)) if self._usable_after(self._t0[i], len(self._chunks[i]), t)]
        if len(keep) != len(self._t0):
            self._t0 = [self._t0[i] for i in keep]
            self._chunks = [self._chunks[i] for i in keep]

    def _sample(self, i: int, t: float) -> Optional[np.ndarray]:
        """Chunk i at time t, linearly interpolated between steps; None outside its span or age."""
        t0, chunk = self._t0[i], self._chunks[i]
        if t - t0 > self.max_chunk_age:
            return None
        x = (t - t0) / self.period
        last = len(chunk) - 1
        tol = 1e-6  # in steps: float error in t - t0 must not uncover a chunk's first or last step
        if self._hold:
            # the period that t is in; a t a rounding error before a period's start counts as in it
            k = int(math.floor(x + tol))
            return chunk[k].copy() if 0 <= k <= last else None
        if x < -tol or x > last + tol:
            return None
        x = min(max(x, 0.0), float(last))
        k = int(math.floor(x))
        frac = x - k
        if k >= last or frac < 1e-12:
            return chunk[k].copy()
        return (1.0 - frac) * chunk[k] + frac * chunk[k + 1]

    def action_at(self, t: float) -> Optional[np.ndarray]:
        """The blended action for time t [s] (shape (action_dim,)), or None: no chunk covers t.

        Queries are expected in non-decreasing t: chunks that cannot cover the latest queried time
        are discarded, so asking again for an earlier time may return None.
        """
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"query time must be finite, got {t}")
        with self._lock:
            self._latest_query = max(self._latest_query, t)
            self._prune(self._latest_query)
            samples = [a for a in (self._sample(i, t) for i in range(len(self._t0))) if a is not None]
        if not samples:
            return None
        if self.mode == "latest":
            return samples[-1]
        stacked = np.stack(samples)  # oldest first (sorted by t0)
        if self.mode == "average":
            return stacked.mean(axis=0)
        ranks = np.arange(len(samples), dtype=float)
        # exp(-m i) normalised; shifting the exponent by its max keeps it finite for any m.
        logits = -self.ensemble_decay * ranks
        weights = np.exp(logits - logits.max())
        return (weights / weights.sum()) @ stacked

    def covered_until(self) -> Optional[float]:
        """The last time [s] any stored chunk covers (ignoring max_chunk_age), None when empty."""
        with self._lock:
            if not self._chunks:
                return None
            return max(self._end(i) for i in range(len(self._chunks)))


class ChunkExecutor:
    """Chunks -> one action per control step: lapa_models.policy.chunking.ChunkBlender on a step clock
    (step k is time k * period), plus when to predict (every step, or every N for open-loop:N)."""

    def __init__(self, mode: str = "ensemble", ensemble_decay: float = 0.01, period: float = 0.05,
                 max_chunk_age: float = 1.0):
        self.open_loop = int(mode.split(":")[1]) if mode.startswith("open-loop:") else 0
        blend = "latest" if self.open_loop or mode == "first" else mode
        if blend not in MODES:
            raise ValueError(f"unknown execution mode {mode!r}: {', '.join(MODES)}, first or open-loop:N")
        self.mode, self.blend, self.decay = mode, blend, float(ensemble_decay)
        self.period, self.max_chunk_age = float(period), float(max_chunk_age)
        self.reset()

    def reset(self) -> None:
        self.blender: Optional[ChunkBlender] = None
        self.step = 0
        self.next_prediction = 0

    def needs_prediction(self) -> bool:
        return self.step >= self.next_prediction

    def push(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk)
        if self.blender is None:
            self.blender = ChunkBlender(chunk.shape[1], self.period, self.max_chunk_age, self.blend, self.decay)
        self.blender.add(self.step * self.period, chunk)
        self.next_prediction = self.step + (self.open_loop or 1)

    def next_action(self) -> np.ndarray:
        action = self.blender.action_at(self.step * self.period) if self.blender is not None else None
        self.step += 1
        if action is None:   # no chunk covers this step (open-loop N longer than a chunk): hold
            return np.zeros(self.blender.action_dim if self.blender is not None else 0, np.float32)
        return np.asarray(action, np.float32)
