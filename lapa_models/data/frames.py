"""Frames of a dataset for training: all in RAM (``FrameStore``) or read on the fly (``FrameShards``).

Decoding video costs ~1-2 ms a frame; training samples frames at random thousands of times a second.
Two ways to serve them, chosen by ``open_frames(..., mode=...)``:

- ``memory``: ``FrameStore`` decodes every episode once (optionally resized) into one contiguous uint8
  array, written straight into a cache file beside the dataset (``<root>/cache/frames_<H>x<W>_<key>.npy``)
  and memory-mapped from there, so the next run (and every other process of a multi-process run) maps
  the same file instead of decoding again. Fastest for datasets that fit in RAM; its memory grows with
  the dataset.
- ``stream``: ``FrameShards`` (lapa_models.data.shards) compresses each episode's frames once into a
  small shard file (zstd, lossless, ~2x smaller than raw frames) and reads only the frames a batch
  needs, in DataLoader workers: memory stays flat in dataset size.
- ``auto`` (the default of the training commands) picks memory when the decoded frames fit in
  ``memory_limit`` bytes (default: 2 GiB or a quarter of the RAM, whichever is smaller), else stream,
  and says which and why (``store.mode``, ``store.mode_reason``, logged).

Both serve the same pixels (the same decoder and resize), with the same metadata (``lengths``,
``starts``, ``actions``, ...) and ``read(frame_indices)``; training code reads frames only through them.
Works for any dataset ``lapa_models.data.episodes.open_episodes`` returns (through its public methods
``len``, ``load(i, frames=False)``, ``iter_frames``, ``info``, ``root``) and folders of videos.

A dataset with unreadable episodes (a data or video file missing, corrupt, or a video with fewer frames
than the index says) is refused as a whole: training on the episodes that happen to read would quietly
change what the model learns from, and a missing demonstration is usually a copy or conversion that
went wrong. Every episode is still checked, so the one EpisodeFormatError names all the bad episodes
and their files at once, with how to fix them (re-create them, or drop them from the index). Frames
already in the cache are not decoded again (nor checked: the cache holds them whole).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from .episodes import VideoFolder, open_episodes
from .errors import EpisodeFormatError

T = TypeVar("T")
log = logging.getLogger("lapa_models.data.frames")

MODES = ("auto", "memory", "stream")


def _each_episode(source, idx: Sequence[int], read: Callable[[int], T], bar=None) -> List[T]:
    """read(i) for every episode i; one EpisodeFormatError listing every episode that fails."""
    out, bad = [], []
    for i in idx:
        try:
            out.append(read(i))
        except EpisodeFormatError as e:
            bad.append(_without_root(source, e))
        if bar is not None:
            bar.update()
    if bad:
        raise refused(source, bad, len(idx))
    return out


def _without_root(source, error: Exception) -> str:
    return str(error).removeprefix(f"{getattr(source, 'root', '?')}: ")


def refused(source, bad: Sequence[str], total: int) -> EpisodeFormatError:
    """The one error for a dataset some of whose episodes cannot be read (``bad``: one reason each)."""
    root = getattr(source, "root", "?")
    fix = ("re-encode or remove those files" if isinstance(source, VideoFolder) else
           "re-create those episodes (convert or generate them again) or delete their lines from "
           "meta/episodes.jsonl")
    return EpisodeFormatError(f"{root}: {len(bad)} of {total} episodes cannot be read, the dataset is refused "
                              f"rather than trained on in part ({fix}): " + "; ".join(bad))


def resize_frame(frame: np.ndarray, size: Optional[Tuple[int, int]]) -> np.ndarray:
    """uint8 (H, W, 3) -> (size[0], size[1], 3) with area interpolation (no-op when it already fits)."""
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    import cv2

    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


_resize = resize_frame   # the former private name


def native_size(source) -> Tuple[int, int]:
    """(H, W) of a dataset's frames: from its info, else from the first frame of its first episode."""
    info = getattr(source, "info", None)
    h, w = getattr(info, "image_height", None), getattr(info, "image_width", None)
    if h and w:
        return int(h), int(w)
    for frame, _ in source.iter_frames(0):
        return int(frame.shape[0]), int(frame.shape[1])
    raise EpisodeFormatError(f"{getattr(source, 'root', '?')}: first episode has no frames")


# ============================================================================ metadata shared by both stores
class EpisodeFrames:
    """Episodes of a dataset laid end to end as one sequence of frames (no pixels here).

    starts[e]     index of episode e's first frame; lengths[e] its frame count (None until known for a
                  folder of videos, whose lengths come from decoding)
    actions       float32 (F, A) or None;  states float32 (F, S) or None; timestamps float64 (F,) or None
    instructions, tasks, success: per episode; episode_ids: the dataset's episode_index per episode

    ``tables=False`` skips reading every episode's numeric table (actions, states) when the dataset's
    index already gives lengths: what frame-only training (LAQ) needs on a large corpus.
    """

    mode = "?"
    mode_reason = ""

    def __init__(self, source, image_size: Optional[Tuple[int, int]] = None,
                 episodes: Optional[Sequence[int]] = None, tables: bool = True):
        self.source = open_episodes(source) if isinstance(source, (str, Path)) else source
        self.image_size = tuple(int(s) for s in image_size) if image_size is not None else None
        idx = list(range(len(self.source))) if episodes is None else [int(i) for i in episodes]
        if not idx:
            raise ValueError(f"{getattr(self.source, 'root', source)}: no episodes selected")
        self.episode_positions = idx
        self.lengths: Optional[np.ndarray] = None
        self.actions = self.states = self.timestamps = None
        entries = getattr(self.source, "entries", None)
        if isinstance(self.source, VideoFolder):
            self.instructions = ["" for _ in idx]
            self.tasks = ["" for _ in idx]
            self.success: List[Optional[bool]] = [None for _ in idx]
            self.episode_ids = list(idx)
        elif not tables and entries is not None and all("length" in entries[i] for i in idx):
            chosen = [entries[i] for i in idx]
            self.instructions = [e.get("instruction", "") or "" for e in chosen]
            self.tasks = [e.get("task", "") or "" for e in chosen]
            self.success = [e.get("success") for e in chosen]
            self.episode_ids = [int(e["episode_index"]) for e in chosen]
            self.lengths = np.array([int(e["length"]) for e in chosen], dtype=np.int64)
        else:
            loaded = _each_episode(self.source, idx, lambda i: self.source.load(i, frames=False))
            self.instructions = [e.instruction or "" for e in loaded]
            self.tasks = [e.task or "" for e in loaded]
            self.success = [e.success for e in loaded]
            self.episode_ids = [int(e.index) for e in loaded]
            self.lengths = np.array([len(e.timestamps) for e in loaded], dtype=np.int64)
            self.timestamps = np.concatenate([np.asarray(e.timestamps, np.float64) for e in loaded])
            if loaded[0].actions is not None:
                self.actions = np.concatenate([np.asarray(e.actions, np.float32) for e in loaded])
            if loaded[0].states is not None:
                self.states = np.concatenate([np.asarray(e.states, np.float32) for e in loaded])
        if self.lengths is not None:
            self._set_lengths(self.lengths)

    def _set_lengths(self, lengths: Sequence[int]) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        if self.timestamps is None:
            self.timestamps = np.concatenate([np.arange(n, dtype=np.float64) for n in self.lengths])

    @property
    def frame_size(self) -> Tuple[int, int]:
        """(H, W) of the frames this store serves."""
        return self.image_size or native_size(self.source)

    @property
    def frame_shape(self) -> Tuple[int, int, int]:
        return (*self.frame_size, 3)

    def __len__(self) -> int:
        return int(self.lengths.sum())

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

    def read(self, index) -> np.ndarray:
        """uint8 (B, H, W, 3) frames at global frame indices (any order, repeats allowed)."""
        raise NotImplementedError


# ============================================================================ in RAM (memory-mapped cache)
class FrameStore(EpisodeFrames):
    """Frames of all (or selected) episodes, concatenated in one uint8 (F, H, W, 3) array ``frames``."""

    mode = "memory"

    def __init__(self, source, image_size: Optional[Tuple[int, int]] = None,
                 episodes: Optional[Sequence[int]] = None, cache: bool = True, progress: bool = True,
                 tables: bool = True, cache_dir: Optional[Path] = None):
        from tqdm import tqdm

        super().__init__(source, image_size, episodes, tables)
        idx = self.episode_positions
        video_folder = isinstance(self.source, VideoFolder)
        cache_path = None if (not cache or video_folder) else self._cache_path(cache_dir)
        self.frames = None
        if cache_path is not None and cache_path.is_file():
            frames = np.load(cache_path, mmap_mode="r")
            if len(frames) == len(self) and frames.shape[1:] == self.frame_shape:
                self.frames = frames
        if self.frames is not None:
            return
        with tqdm(total=len(idx), desc="decode frames", unit="ep", disable=not progress, file=sys.stderr) as bar:
            if self.lengths is None:   # a folder of videos: lengths come from decoding
                chunks = _each_episode(self.source, idx, self._decode, bar)
                self.frames = np.concatenate(chunks)
                self._set_lengths([len(c) for c in chunks])
            elif cache_path is None:
                self.frames = np.empty((len(self), *self.frame_shape), np.uint8)
                self._decode_into(self.frames, bar)
            else:
                # Decoded straight into the cache file: no second copy in RAM, and other processes map it.
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_path.with_name(f".{cache_path.stem}.{os.getpid()}.tmp.npy")
                try:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                                    shape=(len(self), *self.frame_shape))
                    self._decode_into(out, bar)
                    out.flush()
                    del out
                    os.replace(tmp, cache_path)
                finally:
                    tmp.unlink(missing_ok=True)
                self.frames = np.load(cache_path, mmap_mode="r")

    def _decode(self, i: int) -> np.ndarray:
        return np.stack([resize_frame(f, self.image_size) for f, _ in self.source.iter_frames(i)])

    def _decode_into(self, out: np.ndarray, bar) -> None:
        episode = iter(range(self.num_episodes))   # _each_episode reads the episodes in order, once each

        def fill(position: int) -> None:
            e = next(episode)
            start, n = int(self.starts[e]), int(self.lengths[e])
            count = 0
            for count, (frame, _) in enumerate(self.source.iter_frames(position), start=1):
                if count > n:
                    break
                out[start + count - 1] = resize_frame(frame, self.image_size)
            if count < n:
                raise EpisodeFormatError(f"episode {self.episode_ids[e]}: video has {count} frames, index says {n}")

        _each_episode(self.source, self.episode_positions, fill, bar)

    def _cache_path(self, cache_dir: Optional[Path] = None) -> Path:
        h, w = self.frame_size
        # The key changes whenever the set of episodes, their lengths or their video files change.
        key = hashlib.sha1(json.dumps([[int(i), int(n), *_file_stamp(self.source, p)] for i, n, p in
                                       zip(self.episode_ids, self.lengths, self.episode_positions)]
                                      ).encode()).hexdigest()[:12]
        return Path(cache_dir or Path(self.source.root) / "cache") / f"frames_{h}x{w}_{key}.npy"

    def read(self, index) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        order = np.argsort(index, kind="stable")   # sorted reads are faster on a memory-mapped array
        out = np.empty((len(index), *self.frames.shape[1:]), np.uint8)
        out[order] = self.frames[index[order]]
        return out


def _file_stamp(source, position: int) -> list:
    """(size, modification time) of an episode's video file: a re-written episode is decoded again."""
    try:
        st = Path(source.video_path(position)).stat()
        return [st.st_size, st.st_mtime_ns]
    except (AttributeError, OSError):
        return []


# ============================================================================ choosing
def _total_ram() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def default_memory_limit() -> int:
    """Decoded frames up to this many bytes are held in RAM by ``mode='auto'``."""
    return min(2 << 30, _total_ram() // 4)


def estimated_frames(source, episodes: Optional[Sequence[int]] = None) -> int:
    """Frame count of a dataset without decoding it: from its index, or for a folder of videos from the
    headers of (up to 256 of) its files."""
    idx = range(len(source)) if episodes is None else episodes
    entries = getattr(source, "entries", None)
    if isinstance(source, VideoFolder):
        from .shards import probe_frame_count

        idx = list(idx)
        sample = idx if len(idx) <= 256 else [idx[k] for k in np.linspace(0, len(idx) - 1, 256).astype(int)]
        counts = []
        for i in sample:   # an unreadable file counts 0 here; reading it is what reports it
            try:
                counts.append(probe_frame_count(source.files[i]))
            except EpisodeFormatError:
                counts.append(0)
        return int(round(sum(counts) * len(idx) / max(1, len(sample))))
    if entries is not None and all("length" in entries[i] for i in idx):
        return sum(int(entries[i]["length"]) for i in idx)
    return sum(len(source.load(i, frames=False).timestamps) for i in idx)


def choose_mode(source, image_size: Optional[Tuple[int, int]], mode: str = "auto",
                episodes: Optional[Sequence[int]] = None, memory_limit: Optional[int] = None) -> Tuple[str, str]:
    """(memory|stream, why) for a dataset: ``mode`` unless it is 'auto'."""
    if mode not in MODES:
        raise ValueError(f"data mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode, "chosen (--data-mode)"
    limit = default_memory_limit() if memory_limit is None else int(memory_limit)
    h, w = image_size or native_size(source)
    size = estimated_frames(source, episodes) * h * w * 3
    gib = lambda b: f"{b / 2 ** 30:.2f} GiB"   # noqa: E731
    if size <= limit:
        return "memory", f"auto: {gib(size)} of {h}x{w} frames fit the {gib(limit)} in-RAM limit"
    return "stream", f"auto: {gib(size)} of {h}x{w} frames exceed the {gib(limit)} in-RAM limit"


def open_frames(source, image_size: Optional[Tuple[int, int]] = None, mode: str = "auto",
                episodes: Optional[Sequence[int]] = None, *, tables: bool = True, cache: bool = True,
                cache_dir: Optional[Path] = None, workers: Optional[int] = None, memory_limit: Optional[int] = None,
                progress: bool = True, distributed=None):
    """The frames of a dataset in RAM (``FrameStore``) or streamed (``FrameShards``); see the module doc.

    ``distributed``: an ``accelerate`` Accelerator or PartialState when several processes open the same
    dataset: the main process builds the in-RAM cache first and the others map it; stream shards are
    built by every process for its share of the episodes. ``workers``: DataLoader workers decoding
    episodes in parallel while stream shards are built (default 2)."""
    source = open_episodes(source) if isinstance(source, (str, Path)) else source
    chosen, why = choose_mode(source, image_size, mode, episodes, memory_limit)
    main = distributed is None or distributed.is_main_process
    if chosen == "memory":
        first = distributed.main_process_first() if distributed is not None else contextlib.nullcontext()
        with first:
            store = FrameStore(source, image_size, episodes, cache=cache, progress=progress and main, tables=tables,
                               cache_dir=cache_dir)
    else:
        from .shards import FrameShards

        store = FrameShards(source, image_size, episodes, tables=tables, cache_dir=cache_dir,
                            workers=2 if workers is None else workers,
                            progress=progress, distributed=distributed)
    store.mode_reason = why
    if main:
        log.info("%s: %s frames in %s mode (%s)", getattr(source, "root", "?"), f"{len(store):,}", store.mode, why)
    return store
