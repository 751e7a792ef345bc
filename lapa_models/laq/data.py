"""Frame pairs (x_t, x_{t+k}) for LAQ, on top of a frame store (lapa_models.data.frames: in RAM or
streamed from shards; episode datasets and folders of videos alike; actions are never read here).

Training reads batches through ``PairSamples`` in DataLoader workers: a batch sampler
(lapa_models.data.sampling.RandomBatches) yields rows (pair, dy, dx) and the workers read the frames
and apply each row's shift."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from lapa_models.data.episodes import open_episodes
from lapa_models.data.errors import FrameSizeError
from lapa_models.data.frame_size import check_frame_size
from lapa_models.data.frames import EpisodeFrames, native_size, open_frames

from .configuration import LAQConfig

log = logging.getLogger(__name__)


def add_allow_squash_argument(p) -> None:
    """--allow-squash, the same for every LAQ command that reads frames."""
    p.add_argument("--allow-squash", action="store_true",
                   help="resize frames of another aspect ratio than the model's input (distorts them; default: refused)")


def check_frames(data, config: LAQConfig, *, model: str, allow_squash: bool = False):
    """The opened source of ``data`` once its frames are known to fit ``config.image_size`` (same aspect
    ratio, or ``allow_squash``); FrameSizeError otherwise (see lapa_models.data.frame_size)."""
    source = open_episodes(data) if isinstance(data, (str, Path)) else data
    note = check_frame_size(native_size(source), config.image_size, data=str(getattr(source, "root", data)),
                            model=model, allow_squash=allow_squash)
    if note:
        log.info(note)
    return source


def load_frames(data: Union[str, Path, EpisodeFrames], config: LAQConfig, episodes: Optional[Sequence[int]] = None,
                progress: bool = True, mode: str = "memory", *, model: str = "the LAQ config",
                allow_squash: bool = False, **options) -> EpisodeFrames:
    """The frames of a dataset (or a folder of videos) at the model's image size, in RAM or streamed
    (``mode`` and ``options``: see lapa_models.data.frames.open_frames). Frames of another aspect ratio
    than the model's input are refused (FrameSizeError) unless ``allow_squash``; ``model`` names the
    model in that message (a checkpoint path, or the config being trained)."""
    if isinstance(data, EpisodeFrames):
        if data.frame_shape[:2] != tuple(config.image_size):
            raise FrameSizeError(f"frame store holds {data.frame_shape[0]}x{data.frame_shape[1]} frames, "
                                 f"the LAQ config takes {config.image_size[0]}x{config.image_size[1]}")
        return data
    source = check_frames(data, config, model=model, allow_squash=allow_squash)
    return open_frames(source, image_size=config.image_size, mode=mode, episodes=episodes, progress=progress,
                       **options)


def frame_pairs(store: EpisodeFrames, gap: int, episodes: Optional[Sequence[int]] = None) -> np.ndarray:
    """(P, 2) global frame indices (t, t + gap) inside one episode; a clear error when there are none."""
    pairs = store.pairs(gap, episodes)
    if len(pairs) == 0:
        longest = int(max(store.lengths[e] for e in (episodes if episodes is not None else range(store.num_episodes))))
        raise ValueError(f"{_name(store)}: no frame pairs {gap} frames apart (longest episode has {longest} frames); "
                         "use a smaller frame gap or longer episodes")
    return pairs


def split_episodes(store: EpisodeFrames, val_fraction: float, seed: int = 0) -> Tuple[list, list]:
    """(train, validation) episode positions: a random val_fraction of episodes (at least one when there
    are 4 or more episodes and val_fraction > 0) is held out to monitor reconstruction honestly."""
    n = store.num_episodes
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 4:
        n_val = max(1, n_val)
    n_val = min(n_val, n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def gather(store: EpisodeFrames, pairs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 (B, H, W, 3) frames at t and at t + k of the given pairs."""
    pairs = np.asarray(pairs, dtype=np.int64)
    frames = store.read(pairs.reshape(-1))   # one read of both frames: a stream store opens each shard once
    frames = frames.reshape(len(pairs), 2, *frames.shape[1:])
    return frames[:, 0], frames[:, 1]


def iter_pair_batches(store: EpisodeFrames, pairs: np.ndarray, batch_size: int
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
    return shift_pairs(frames_t, frames_tk, max_shift, rng.integers(0, 2 * max_shift + 1, size=(len(frames_t), 2)))


def shift_pairs(frames_t: np.ndarray, frames_tk: np.ndarray, max_shift: int,
                offsets: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Translate pair i by offsets[i] = (dy, dx) in [0, 2 * max_shift] (edge-padded), both frames alike."""
    if max_shift <= 0:
        return frames_t, frames_tk
    h, w = frames_t.shape[1:3]
    pad = ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0))
    padded_t, padded_tk = np.pad(frames_t, pad, mode="edge"), np.pad(frames_tk, pad, mode="edge")
    out_t, out_tk = np.empty_like(frames_t), np.empty_like(frames_tk)
    for i, (dy, dx) in enumerate(offsets):
        out_t[i] = padded_t[i, dy:dy + h, dx:dx + w]
        out_tk[i] = padded_tk[i, dy:dy + h, dx:dx + w]
    return out_t, out_tk


class PairSamples:
    """Map-style dataset of frame pairs for a DataLoader: ``__getitems__(rows)`` reads a batch.

    rows: pair indices (B,) or (B, 3) rows (pair, dy, dx) from ``RandomBatches(shift=max_shift)``."""

    def __init__(self, store: EpisodeFrames, pairs: np.ndarray, max_shift: int = 0):
        self.store, self.pairs, self.max_shift = store, np.asarray(pairs, dtype=np.int64), int(max_shift)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitems__(self, rows) -> Dict[str, "torch.Tensor"]:  # noqa: F821 (torch imported here, lazily)
        """{"frames": uint8 (B, 2, H, W, 3)}: frame t and t + k of each pair, in one tensor (a DataLoader
        worker hands each tensor over through its own shared-memory handle: one per batch is cheapest)."""
        import torch

        rows = np.asarray(rows, dtype=np.int64)
        picked = rows if rows.ndim == 1 else rows[:, 0]
        frames = self.store.read(self.pairs[picked].reshape(-1))
        frames = frames.reshape(len(picked), 2, *frames.shape[1:])
        if rows.ndim == 2 and self.max_shift > 0:
            frames = np.stack(shift_pairs(frames[:, 0], frames[:, 1], self.max_shift, rows[:, 1:]), axis=1)
        return {"frames": torch.from_numpy(frames)}

    def __getitem__(self, i: int):
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}


def _name(store: EpisodeFrames) -> str:
    return str(getattr(store.source, "root", "dataset"))
