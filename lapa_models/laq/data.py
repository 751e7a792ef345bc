"""Frame pairs (x_t, x_{t+k}) for LAQ, on top of the in-RAM ``FrameStore`` (episode datasets and
folders of videos alike; actions are never read here)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from lapa_models.data.frames import FrameStore

from .configuration import LAQConfig


def load_frames(data: Union[str, Path, FrameStore], config: LAQConfig, episodes: Optional[Sequence[int]] = None,
                progress: bool = True) -> FrameStore:
    """All frames of a dataset (or a folder of videos) at the model's image size."""
    if isinstance(data, FrameStore):
        if data.frames.shape[1:3] != tuple(config.image_size):
            raise ValueError(f"frame store holds {data.frames.shape[1]}x{data.frames.shape[2]} frames, "
                             f"the LAQ config takes {config.image_size[0]}x{config.image_size[1]}")
        return data
    return FrameStore(data, image_size=config.image_size, episodes=episodes, progress=progress)


def frame_pairs(store: FrameStore, gap: int, episodes: Optional[Sequence[int]] = None) -> np.ndarray:
    """(P, 2) global frame indices (t, t + gap) inside one episode; a clear error when there are none."""
    pairs = store.pairs(gap, episodes)
    if len(pairs) == 0:
        longest = int(max(store.lengths[e] for e in (episodes if episodes is not None else range(store.num_episodes))))
        raise ValueError(f"{_name(store)}: no frame pairs {gap} frames apart (longest episode has {longest} frames); "
                         "use a smaller frame gap or longer episodes")
    return pairs


def split_episodes(store: FrameStore, val_fraction: float, seed: int = 0) -> Tuple[list, list]:
    """(train, validation) episode positions: a random val_fraction of episodes (at least one when there
    are 4 or more episodes and val_fraction > 0) is held out to monitor reconstruction honestly."""
    n = store.num_episodes
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 4:
        n_val = max(1, n_val)
    n_val = min(n_val, n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def gather(store: FrameStore, pairs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 (B, H, W, 3) frames at t and at t + k of the given pairs."""
    return np.asarray(store.frames[pairs[:, 0]]), np.asarray(store.frames[pairs[:, 1]])


def iter_pair_batches(store: FrameStore, pairs: np.ndarray, batch_size: int
                      ) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(pairs, frames_t, frames_tk) in order, batch_size pairs at a time."""
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        yield (chunk, *gather(store, chunk))


def random_shift(frames_t: np.ndarray, frames_tk: np.ndarray, max_shift: int,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """The same random translation (edge-padded) for both frames of a pair: the motion between them is kept."""
    if max_shift <= 0:
        return frames_t, frames_tk
    b, h, w, _ = frames_t.shape
    pad = ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0))
    padded_t, padded_tk = np.pad(frames_t, pad, mode="edge"), np.pad(frames_tk, pad, mode="edge")
    offsets = rng.integers(0, 2 * max_shift + 1, size=(b, 2))
    out_t, out_tk = np.empty_like(frames_t), np.empty_like(frames_tk)
    for i, (dy, dx) in enumerate(offsets):
        out_t[i] = padded_t[i, dy:dy + h, dx:dx + w]
        out_tk[i] = padded_tk[i, dy:dy + h, dx:dx + w]
    return out_t, out_tk


def _name(store: FrameStore) -> str:
    return str(getattr(store.source, "root", "dataset"))
