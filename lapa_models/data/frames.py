"""All frames of a dataset in one uint8 array, for fast random access while training.

Decoding video costs ~1 ms a frame; training samples frames at random thousands of times a second.
``FrameStore`` decodes every episode once (optionally resized), keeps the frames contiguous in RAM,
and caches them on disk beside the dataset (``<root>/cache/frames_<H>x<W>.npy``) so the next run
memory-maps them instead of decoding again. Works for episode datasets and folders of videos.

A dataset with unreadable episodes (a data or video file missing, corrupt, or a video with fewer frames
than the index says) is refused as a whole: training on the episodes that happen to read would quietly
change what the model learns from, and a missing demonstration is usually a copy or conversion that
went wrong. Every episode is still checked, so the one EpisodeFormatError names all the bad episodes
and their files at once, with how to fix them (re-create them, or drop them from the index). Frames
already in the cache are not decoded again (nor checked: the cache holds them whole).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from .episodes import EpisodeDataset, VideoFolder, open_episodes
from .errors import EpisodeFormatError

T = TypeVar("T")


def _each_episode(source, idx: Sequence[int], read: Callable[[int], T], bar=None) -> List[T]:
    """read(i) for every episode i; one EpisodeFormatError listing every episode that fails."""
    root = getattr(source, "root", "?")
    out, bad = [], []
    for i in idx:
        try:
            out.append(read(i))
        except EpisodeFormatError as e:
            bad.append(str(e).removeprefix(f"{root}: "))
        if bar is not None:
            bar.update()
    if bad:
        fix = ("re-create those episodes (convert or generate them again) or delete their lines from "
               "meta/episodes.jsonl" if isinstance(source, EpisodeDataset) else "re-encode or remove those files")
        raise EpisodeFormatError(f"{root}: {len(bad)} of {len(idx)} episodes cannot be "
                                 f"read, the dataset is refused rather than trained on in part ({fix}): "
                                 + "; ".join(bad))
    return out


def _resize(frame: np.ndarray, size: Optional[Tuple[int, int]]) -> np.ndarray:
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    import cv2

    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


class FrameStore:
    """Frames of all (or selected) episodes, concatenated.

    frames        uint8 (F, H, W, 3)
    starts[e]     index in ``frames`` of episode e's first frame; lengths[e] its frame count
    actions       float32 (F, A) or None;  states float32 (F, S) or None
    instructions, tasks, success: per episode; episode_ids: the dataset's episode_index per episode
    """

    def __init__(self, source, image_size: Optional[Tuple[int, int]] = None,
                 episodes: Optional[Sequence[int]] = None, cache: bool = True, progress: bool = True):
        from tqdm import tqdm

        self.source = open_episodes(source) if isinstance(source, (str, Path)) else source
        self.image_size = tuple(image_size) if image_size is not None else None
        idx = list(range(len(self.source))) if episodes is None else list(episodes)
        if not idx:
            raise ValueError(f"{getattr(self.source, 'root', source)}: no episodes selected")
        self.episode_positions = idx
        entries = [self.source.entries[i] for i in idx]
        self.instructions: List[str] = [e.get("instruction", "") for e in entries]
        self.tasks: List[str] = [e.get("task", "") for e in entries]
        self.success: List[Optional[bool]] = [e.get("success") for e in entries]
        self.episode_ids: List[int] = [int(e["episode_index"]) for e in entries]

        tables = None
        if isinstance(self.source, EpisodeDataset):
            tables = _each_episode(self.source, idx, self.source.read_table)
            self.lengths = np.array([len(t["frame_index"]) for t in tables], dtype=np.int64)
            self.actions = np.concatenate([t["action"] for t in tables]) if "action" in tables[0] else None
            self.states = np.concatenate([t["state"] for t in tables]) if "state" in tables[0] else None
            self.timestamps = np.concatenate([t["timestamp"] for t in tables])
        else:
            self.lengths = None
            self.actions = self.states = None

        cache_path = self._cache_path() if cache and isinstance(self.source, EpisodeDataset) else None
        if cache_path is not None and cache_path.is_file():
            self.frames = np.load(cache_path, mmap_mode="r")
            if len(self.frames) != int(self.lengths.sum()):
                self.frames = None
        else:
            self.frames = None
        if self.frames is None:
            with tqdm(total=len(idx), desc="decode frames", unit="ep", disable=not progress, file=sys.stderr) as bar:
                chunks = _each_episode(self.source, idx, self._decode, bar)
            lengths = [len(c) for c in chunks]
            self.frames = np.concatenate(chunks)
            if self.lengths is None:
                self.lengths = np.array(lengths, dtype=np.int64)
                self.timestamps = np.concatenate([np.arange(n, dtype=np.float64) for n in lengths])
            if cache_path is not None:
                cache_path.parent.mkdir(exist_ok=True)
                tmp = cache_path.with_suffix(".tmp.npy")
                np.save(tmp, self.frames)
                tmp.replace(cache_path)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def _decode(self, i: int) -> np.ndarray:
        return np.stack([_resize(f, self.image_size) for f, _ in self.source.iter_frames(i)])

    def _cache_path(self) -> Path:
        root = Path(self.source.root)
        h, w = self.image_size or (self.source.info.image_height, self.source.info.image_width)
        # The key changes whenever the set of episodes (or their lengths) changes.
        key = hashlib.sha1(json.dumps([[self.source.entries[i]["episode_index"], self.source.entries[i]["length"]]
                                       for i in self.episode_positions]).encode()).hexdigest()[:12]
        return root / "cache" / f"frames_{h}x{w}_{key}.npy"

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_episodes(self) -> int:
        return len(self.lengths)

    def episode_of(self, frame_index: np.ndarray) -> np.ndarray:
        """Episode number (position in this store) of global frame indices."""
        return np.searchsorted(self.starts, frame_index, side="right") - 1

    def pairs(self, gap: int, episodes: Optional[Sequence[int]] = None) -> np.ndarray:
        """(P, 2) global indices (t, t + gap) of every frame pair inside one episode."""
        if gap < 1:
            raise ValueError(f"frame gap must be >= 1, got {gap}")
        eps = range(self.num_episodes) if episodes is None else episodes
        out = [np.stack([np.arange(self.starts[e], self.starts[e] + self.lengths[e] - gap)] * 2, 1) + [0, gap]
               for e in eps if self.lengths[e] > gap]
        return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), np.int64)
