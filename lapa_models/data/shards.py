"""Streaming frames: each episode's frames compressed once into a shard file, read a few at a time.

``FrameShards`` serves the same frames as the in-RAM ``FrameStore`` (same decoder, same resize) with
memory flat in the dataset's size: a read opens the shards of the episodes it needs and decompresses
only the requested frames (zstd, lossless; ~20 us for a 64x64 frame, against ~1-2 ms to decode it from
the episode's H.264 video, whose keyframes are too far apart for random access). Training reads them in
DataLoader workers, a batch at a time.

Shards live in ``<root>/cache/shards_<H>x<W>/`` (or ``cache_dir``), one file per episode::

    b"LAPAFRM1"                       magic
    frame 0 .. frame N-1              zstd frames of H*W*3 uint8 bytes each
    uint64 offsets[N + 1]             frame k is bytes offsets[k]:offsets[k+1] of the file
    JSON footer                       {"frames": N, "shape": [H, W, 3], "codec": "zstd", "source": <key>}
    uint32 footer length, b"LAPAFRM1"

Written once (to a temporary name, renamed when complete) by whichever process builds that episode;
``source`` (the episode's video file size and modification time, and its index length) tells when the
episode changed and its shard must be rebuilt. A multi-process run builds each process's share of the
missing shards, in parallel DataLoader workers, then waits for the others. An episode that cannot be
decoded leaves an ``.error`` note beside its shard, so that every process refuses the dataset with the
same message naming every bad episode.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import struct
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .episodes import VideoFolder
from .errors import EpisodeFormatError
from .frames import EpisodeFrames, refused, resize_frame

MAGIC = b"LAPAFRM1"
FORMAT_VERSION = 1
_TAIL = struct.Struct("<I8s")
_ZSTD_LEVEL = 3
_OFFSET_CACHE = 1024    # episodes whose offset tables a reader keeps (bounded: memory stays flat)


def probe_frame_count(path: Path) -> int:
    """Frames of a video from its container header (duration x rate when the header has no count)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = stream.average_rate or stream.guessed_rate or 30
            duration = (float(stream.duration * stream.time_base) if stream.duration is not None
                        else (container.duration or 0) / 1e6)
            return max(1, int(round(duration * float(rate))))
    except (av.error.FFmpegError, OSError, IndexError) as e:
        raise EpisodeFormatError(f"{path}: not a readable video ({e})") from e


# ============================================================================ one shard file
def write_shard(path: Path, frames, shape: Tuple[int, int, int], source_key: str) -> int:
    """Compress an iterable of uint8 frames into ``path`` (atomically); returns the frame count."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    offsets = [len(MAGIC)]
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            for frame in frames:
                if frame.shape != shape or frame.dtype != np.uint8:
                    raise ValueError(f"{path}: frame of {frame.dtype} {frame.shape}, expected uint8 {shape}")
                blob = compressor.compress(np.ascontiguousarray(frame).tobytes())
                f.write(blob)
                offsets.append(offsets[-1] + len(blob))
            footer = json.dumps({"format": "lapa-frame-shard", "version": FORMAT_VERSION, "frames": len(offsets) - 1,
                                 "shape": list(shape), "codec": "zstd", "source": source_key}).encode()
            f.write(np.asarray(offsets, dtype="<u8").tobytes())
            f.write(footer)
            f.write(_TAIL.pack(len(footer), MAGIC))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(offsets) - 1


def read_footer(path: Path) -> Optional[dict]:
    """A shard's footer (with ``offsets_at``: where its offset table starts), None if absent or incomplete."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < len(MAGIC) + _TAIL.size:
                return None
            f.seek(size - _TAIL.size)
            length, magic = _TAIL.unpack(f.read(_TAIL.size))
            if magic != MAGIC or length > size:
                return None
            f.seek(size - _TAIL.size - length)
            footer = json.loads(f.read(length))
    except (OSError, ValueError):
        return None
    footer["offsets_at"] = size - _TAIL.size - length - 8 * (int(footer["frames"]) + 1)
    return footer


# ============================================================================ building
def _source_key(source, position: int, expected: Optional[int]) -> str:
    path = Path(source.files[position]) if isinstance(source, VideoFolder) else Path(source.video_path(position))
    try:
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
    except OSError:
        stamp = None
    return json.dumps({"video": path.name, "stat": stamp, "length": expected}, sort_keys=True)


class _ShardJob:
    """Item k: decode episode ``positions[k]`` and write its shard; returns (k, frames or None, error)."""

    def __init__(self, source, positions: Sequence[int], paths: Sequence[Path], keys: Sequence[str],
                 expected: Sequence[Optional[int]], shape: Tuple[int, int, int], resize: Optional[Tuple[int, int]]):
        self.source, self.positions, self.paths, self.keys = source, list(positions), list(paths), list(keys)
        self.expected, self.shape, self.resize = list(expected), shape, resize

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int):
        path, n = self.paths[k], self.expected[k]
        note = path.with_name(path.name + ".error")

        def frames():
            count = 0
            for count, (frame, _) in enumerate(self.source.iter_frames(self.positions[k]), start=1):
                if n is not None and count > n:
                    return
                yield resize_frame(frame, self.resize)
            if n is not None and count < n:
                raise EpisodeFormatError(f"video has {count} frames, index says {n}")
            if count == 0:
                raise EpisodeFormatError("video has no decodable frames")

        try:
            written = write_shard(path, frames(), self.shape, self.keys[k])
        except EpisodeFormatError as e:
            note.write_text(str(e))
            return k, None, str(e)
        note.unlink(missing_ok=True)
        return k, written, None


def _first(batch):
    return batch


# ============================================================================ reading
class FrameShards(EpisodeFrames):
    """Frames of all (or selected) episodes, read from per-episode shards on demand (see module doc)."""

    mode = "stream"

    def __init__(self, source, image_size: Optional[Tuple[int, int]] = None,
                 episodes: Optional[Sequence[int]] = None, *, tables: bool = True, cache_dir: Optional[Path] = None,
                 workers: int = 0, progress: bool = True, distributed=None):
        super().__init__(source, image_size, episodes, tables)
        h, w = self.frame_size
        self.directory = Path(cache_dir or Path(self.source.root) / "cache") / f"shards_{h}x{w}"
        self.directory.mkdir(parents=True, exist_ok=True)
        n = len(self.episode_positions)
        expected = [None] * n if self.lengths is None else [int(x) for x in self.lengths]
        self.paths = [self.directory / self._file_name(e) for e in range(n)]
        keys = [_source_key(self.source, p, x) for p, x in zip(self.episode_positions, expected)]

        def stale() -> List[int]:
            out = []
            for e, (path, key) in enumerate(zip(self.paths, keys)):
                footer = read_footer(path)
                if (footer is None or footer.get("source") != key or tuple(footer["shape"]) != self.frame_shape
                        or (expected[e] is not None and int(footer["frames"]) != expected[e])):
                    out.append(e)
            return out

        rank = 0 if distributed is None else distributed.process_index
        count = 1 if distributed is None else distributed.num_processes
        missing = stale()
        if distributed is not None and count > 1:
            distributed.wait_for_everyone()   # every process splits the same list before any shard is written
        mine = missing[rank::count]
        if mine:
            job = _ShardJob(self.source, [self.episode_positions[e] for e in mine], [self.paths[e] for e in mine],
                            [keys[e] for e in mine], [expected[e] for e in mine], self.frame_shape, self.image_size)
            self._build(job, workers, progress and rank == 0, len(missing))
        if distributed is not None and count > 1:
            distributed.wait_for_everyone()
        if missing:
            still = stale()
            if still:
                reasons = []
                for e in still:
                    note = self.paths[e].with_name(self.paths[e].name + ".error")
                    why = note.read_text() if note.is_file() else "shard was not written"
                    reasons.append(f"episode {self.episode_ids[e]}: {why.removeprefix(f'{self.source.root}: ')}")
                raise refused(self.source, reasons, n)
        if self.lengths is None:
            self._set_lengths([int(read_footer(p)["frames"]) for p in self.paths])
        self._offsets: "collections.OrderedDict[int, np.ndarray]" = collections.OrderedDict()
        self._decompressor = None

    def _file_name(self, e: int) -> str:
        if isinstance(self.source, VideoFolder):
            relative = str(Path(self.source.files[self.episode_positions[e]]).relative_to(self.source.root))
            return f"video_{hashlib.sha1(relative.encode()).hexdigest()[:16]}.zfr"
        return f"episode_{self.episode_ids[e]:06d}.zfr"

    @staticmethod
    def _build(job: _ShardJob, workers: int, progress: bool, total: int) -> None:
        import torch
        from tqdm import tqdm

        loader = torch.utils.data.DataLoader(job, batch_size=None, num_workers=max(0, int(workers)),
                                             collate_fn=_first)
        with tqdm(total=len(job), desc=f"stream shards ({total} episodes to compress)", unit="ep",
                  disable=not progress, file=sys.stderr) as bar:
            for _ in loader:
                bar.update()

    # ------------------------------------------------------------------ reading
    def __getstate__(self) -> dict:   # DataLoader workers (spawn) get no open handles or caches
        state = dict(self.__dict__)
        state["_offsets"], state["_decompressor"] = collections.OrderedDict(), None
        return state

    def _offset_table(self, e: int, fd: int) -> np.ndarray:
        table = self._offsets.get(e)
        if table is None:
            footer = read_footer(self.paths[e])
            if footer is None:
                raise EpisodeFormatError(f"{self.paths[e]}: stream shard is missing or incomplete (deleted while "
                                         "training?); run again to rebuild it")
            n = int(footer["frames"])
            table = np.frombuffer(os.pread(fd, 8 * (n + 1), footer["offsets_at"]), dtype="<u8").astype(np.int64)
            self._offsets[e] = table
            if len(self._offsets) > _OFFSET_CACHE:
                self._offsets.popitem(last=False)
        else:
            self._offsets.move_to_end(e)
        return table

    def read(self, index) -> np.ndarray:
        import zstandard

        if self._decompressor is None:
            self._decompressor = zstandard.ZstdDecompressor()
        index = np.asarray(index, dtype=np.int64)
        shape = self.frame_shape
        size = int(np.prod(shape))
        out = np.empty((len(index), *shape), np.uint8)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"frame index out of range [0, {len(self)})")
        episodes = self.episode_of(index)
        for e in np.unique(episodes):
            chosen = np.flatnonzero(episodes == e)
            fd = os.open(self.paths[e], os.O_RDONLY)
            try:
                table = self._offset_table(int(e), fd)
                for j, k in zip(chosen, index[chosen] - self.starts[e]):
                    blob = os.pread(fd, int(table[k + 1] - table[k]), int(table[k]))
                    try:
                        out[j] = np.frombuffer(self._decompressor.decompress(blob, max_output_size=size),
                                               np.uint8).reshape(shape)
                    except (zstandard.ZstdError, ValueError) as err:   # changed on disk after it was written
                        raise EpisodeFormatError(f"{self.paths[e]}: stream shard is corrupt (frame {k}: {err}); "
                                                 "delete it and run again to rebuild it") from err
            finally:
                os.close(fd)
        return out

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths)


__all__: Sequence[str] = ["FrameShards", "probe_frame_count", "read_footer", "write_shard"]
