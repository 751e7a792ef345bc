"""Episodes on disk: the one format that simulated rollouts, plain videos and recorded bags become.

Layout (after the LeRobotDataset layout: parquet for numbers, mp4 for frames, JSON for metadata)::

    <root>/
      meta/info.json            dataset-wide: format version, fps, image size, action/state names, codec
      meta/episodes.jsonl       one line per finished episode: index, task, instruction, length, success, ...
      data/episode_000000.parquet   one row per frame: frame_index, timestamp [s], action[A], state[S]
      videos/episode_000000.mp4     the frames, RGB (lossless H.264 by default)
      latents/<name>/...        written later by the LAQ labelling stage

Conventions: an episode of N frames has N rows; ``action[i]`` is the command issued after seeing
frame i (so the last row holds the command the operator would have sent next). Unlabelled datasets
(video only) have no action column. Timestamps are seconds since the first frame.

An episode counts as written only once its line is in ``episodes.jsonl`` (appended last, after the
data and video files are complete), so a crash never leaves a half episode in the index and a
generator can resume from the index. A line torn by a crash is ignored when reading and cut off before
the next append. Writers keep the committed set in memory (one parse of the index, then one appended
line per episode).

LeRobotDataset v3 directories (meta/info.json with ``codebase_version`` v3.x) are read through the same
interface by ``open_episodes`` and ``EpisodeDataset`` (see lapa_models.data.lerobot, which also exports
this format to v3).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import EpisodeFormatError
from .video import CODECS, VIDEO_SUFFIXES, VideoWriter, iter_video, read_video, video_fps

FORMAT_NAME = "lapa-episodes"
FORMAT_VERSION = 1


@dataclasses.dataclass
class Episode:
    frames: np.ndarray                     # uint8 (N, H, W, 3) RGB
    timestamps: np.ndarray                 # float64 (N,) seconds since the first frame
    actions: Optional[np.ndarray] = None   # float32 (N, A), None when unlabelled
    states: Optional[np.ndarray] = None    # float32 (N, S)
    instruction: str = ""
    task: str = ""
    success: Optional[bool] = None
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)
    index: int = -1

    def __len__(self) -> int:
        return len(self.frames)

    def validate(self, where: str = "episode") -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            got = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
            raise ValueError(f"{where}: frames must be uint8 (N, H, W, 3) RGB, got {got}")
        n = len(f)
        if n == 0:
            raise ValueError(f"{where}: has no frames")
        ts = np.asarray(self.timestamps)
        if ts.shape != (n,):
            raise ValueError(f"{where}: {n} frames but timestamps of shape {ts.shape}")
        if n > 1 and np.any(np.diff(ts) < 0):
            raise ValueError(f"{where}: timestamps go backwards")
        for name in ("actions", "states"):
            a = getattr(self, name)
            if a is None:
                continue
            a = np.asarray(a)
            if a.ndim != 2 or len(a) != n:
                raise ValueError(f"{where}: {name} must be ({n}, D), got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{where}: {name} contain NaN or Inf")


@dataclasses.dataclass
class DatasetInfo:
    fps: float
    image_height: int
    image_width: int
    action_names: Optional[List[str]] = None   # None: unlabelled dataset
    state_names: Optional[List[str]] = None
    video_codec: str = "lossless"
    source: str = ""                           # "sim", "video", "bags", ...
    gripper: Optional[Dict[str, Any]] = None   # how the "gripper" state came from joint_states
                                               #   (lapa_models.data.robot_state.GripperMapping.to_json)
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, d: dict, where: str) -> "DatasetInfo":
        if d.get("format") != FORMAT_NAME and str(d.get("codebase_version", "")).startswith("v"):
            raise EpisodeFormatError(f"{where}: a LeRobotDataset {d['codebase_version']}, not a {FORMAT_NAME} dataset "
                                     "(read it with open_episodes / LeRobotV3Dataset; it cannot be appended to)")
        if d.get("format") != FORMAT_NAME:
            raise EpisodeFormatError(f"{where}: not a {FORMAT_NAME} dataset (format={d.get('format')!r})")
        if d.get("version") != FORMAT_VERSION:
            raise EpisodeFormatError(f"{where}: format version {d.get('version')} is not supported "
                                     f"(this code reads version {FORMAT_VERSION})")
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in fields})
        except TypeError as e:
            raise EpisodeFormatError(f"{where}: malformed info ({e})") from e

    @property
    def has_actions(self) -> bool:
        return self.action_names is not None


def _episode_stem(index: int) -> str:
    return f"episode_{index:06d}"


class EpisodeWriter:
    """Creates (or appends to) a dataset directory.

    ``write(episode)`` does everything in one process. For parallel generation a worker calls
    ``write_files(episode, index)`` and the single parent process calls ``commit(entry)``.

    The index is parsed at most once per writer (lazily: workers that only write files never read it);
    from then on the set of committed episodes lives in memory and ``commit`` appends one line, so
    writing N episodes costs O(N), not O(N^2). Only the process that commits should read that state.
    """

    def __init__(self, root: str | Path, info: DatasetInfo):
        if info.video_codec not in CODECS:
            raise ValueError(f"unknown video codec '{info.video_codec}'; choose one of {sorted(CODECS)}")
        self.root = Path(root)
        self.info = info
        self.index_path = self.root / "meta" / "episodes.jsonl"
        self._done: Optional[set] = None       # committed episode indices, loaded on first use
        self._max_index = -1
        self._tail_checked = False
        info_path = self.root / "meta" / "info.json"
        if info_path.exists():
            existing = DatasetInfo.from_json(_read_json(info_path), str(info_path))
            mismatched = [k for k in ("fps", "image_height", "image_width", "action_names", "state_names")
                          if getattr(existing, k) != getattr(info, k)]
            if mismatched:
                raise ValueError(f"{self.root}: exists with different {', '.join(mismatched)}; "
                                 "write to a new directory or delete it")
        else:
            (self.root / "meta").mkdir(parents=True, exist_ok=True)
            _atomic_write_text(info_path, json.dumps(info.to_json(), indent=2))
        (self.root / "data").mkdir(exist_ok=True)
        (self.root / "videos").mkdir(exist_ok=True)

    def _load(self) -> set:
        if self._done is None:
            self._done = {int(e["episode_index"]) for e in _read_index(self.index_path)}
            self._max_index = max(self._done, default=-1)
        return self._done

    def completed_indices(self) -> set:
        return set(self._load())

    def completed(self, field: str) -> set:
        """Values of ``field`` over the committed episodes (one pass over the index: call it once, at start)."""
        return {e.get(field) for e in _read_index(self.index_path)}

    def next_index(self) -> int:
        self._load()
        return self._max_index + 1

    def remove_partial_files(self) -> List[Path]:
        """Delete the temporary files an interrupted write left behind (call before workers start)."""
        removed = []
        for pattern in ("data/*.parquet.tmp", "videos/*.tmp.mp4"):
            for path in self.root.glob(pattern):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def write_files(self, episode: Episode, index: int) -> dict:
        """Write the parquet and video files of one episode; returns its index entry (not yet committed)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        where = f"{self.root} episode {index}"
        episode.validate(where)
        n, h, w, _ = episode.frames.shape
        if (h, w) != (self.info.image_height, self.info.image_width):
            raise ValueError(f"{where}: frames are {h}x{w}, dataset is "
                             f"{self.info.image_height}x{self.info.image_width}")
        cols = {"frame_index": pa.array(np.arange(n, dtype=np.int32)),
                "timestamp": pa.array(np.asarray(episode.timestamps, dtype=np.float64))}
        for col, arr, names in (("action", episode.actions, self.info.action_names),
                                ("state", episode.states, self.info.state_names)):
            if names is None:
                if arr is not None and col == "action":
                    raise ValueError(f"{where}: dataset is unlabelled but the episode has actions")
                continue
            if arr is None:
                raise ValueError(f"{where}: dataset has {col}s {names} but the episode has none")
            arr = np.asarray(arr, dtype=np.float32)
            if arr.shape[1] != len(names):
                raise ValueError(f"{where}: {col} has {arr.shape[1]} values, dataset names {len(names)}")
            cols[col] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), len(names))
        entry = {"episode_index": index, "task": episode.task, "instruction": episode.instruction,
                 "length": int(n), "success": episode.success,
                 "duration": float(episode.timestamps[-1] - episode.timestamps[0]),
                 **{k: v for k, v in episode.metadata.items() if k not in ("episode_index", "length")}}
        table = pa.table(cols).replace_schema_metadata({"lapa_episode": json.dumps(entry)})
        stem = _episode_stem(index)
        data_path = self.root / "data" / f"{stem}.parquet"
        video_path = self.root / "videos" / f"{stem}.mp4"
        tmp_data = data_path.with_suffix(".parquet.tmp")
        tmp_video = video_path.with_name(f"{stem}.tmp.mp4")
        try:
            pq.write_table(table, tmp_data)
            with VideoWriter(tmp_video, self.info.fps, w, h, self.info.video_codec) as vw:
                for frame in episode.frames:
                    vw.write(frame)
        except BaseException:  # nothing of a failed episode stays behind
            for tmp in (tmp_data, tmp_video):
                tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp_data, data_path)
        os.replace(tmp_video, video_path)
        return entry

    def commit(self, entry: dict) -> None:
        """Append the episode's line to the index: from now on it is part of the dataset."""
        done = self._load()
        if not self._tail_checked:
            _truncate_torn_line(self.index_path)   # a crash mid-append must not glue onto this line
            self._tail_checked = True
        with open(self.index_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        index = int(entry["episode_index"])
        done.add(index)
        self._max_index = max(self._max_index, index)

    def write(self, episode: Episode, index: Optional[int] = None) -> int:
        index = self.next_index() if index is None else index
        self.commit(self.write_files(episode, index))
        return index


class EpisodeDataset:
    """Reads a dataset directory. Episodes load lazily; ``iter_frames`` streams one at a time.

    ``EpisodeDataset(root)`` on a LeRobotDataset v3 directory gives a ``LeRobotV3Dataset`` (a subclass with
    the same interface, lapa_models.data.lerobot), so every reader of episodes reads both formats."""

    def __new__(cls, root: Optional[str | Path] = None, *args, **kwargs):
        if cls is EpisodeDataset and root is not None and is_lerobot_v3(root):   # (None: unpickling)
            from .lerobot import LeRobotV3Dataset

            return super().__new__(LeRobotV3Dataset)
        return super().__new__(cls)

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise EpisodeFormatError(f"{self.root}: not an episode dataset (no meta/info.json)")
        self.info = DatasetInfo.from_json(_read_json(info_path), str(info_path))
        entries = _read_index(self.root / "meta" / "episodes.jsonl")
        self.entries: List[dict] = sorted(entries, key=lambda e: e["episode_index"])

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> Episode:
        return self.load(i)

    def data_path(self, i: int) -> Path:
        return self.root / "data" / f"{_episode_stem(self.entries[i]['episode_index'])}.parquet"

    def video_path(self, i: int) -> Path:
        return self.root / "videos" / f"{_episode_stem(self.entries[i]['episode_index'])}.mp4"

    def read_table(self, i: int) -> Dict[str, np.ndarray]:
        """The numeric columns of episode i (no frames): frame_index, timestamp, action?, state?."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.data_path(i)
        if not path.is_file():
            raise EpisodeFormatError(f"{path}: episode data file is missing")
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise EpisodeFormatError(f"{path}: corrupt or truncated parquet file ({e})") from e
        out: Dict[str, np.ndarray] = {}
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(col.type):
                out[name] = col.flatten().to_numpy().reshape(len(col), col.type.list_size).astype(np.float32)
            else:
                out[name] = col.to_numpy()
        expected = self.entries[i]["length"]
        if len(out.get("frame_index", ())) != expected:
            raise EpisodeFormatError(f"{path}: has {len(out.get('frame_index', ()))} rows, index says {expected}")
        return out

    def _video_frames(self, i: int) -> Iterator[np.ndarray]:
        """Every frame of episode i's video; EpisodeFormatError naming the episode and the file when the
        video is missing, unreadable or has fewer frames than the index says."""
        entry, video = self.entries[i], self.video_path(i)
        where = f"{self.root}: episode {entry['episode_index']}"
        count = 0
        try:
            for count, frame in enumerate(iter_video(video), start=1):  # noqa: B007 (count is read below)
                yield frame
        except EpisodeFormatError as e:
            raise EpisodeFormatError(f"{where}: {e}") from e
        if count < entry["length"]:
            raise EpisodeFormatError(f"{where}: {video} has {count} frames, index says {entry['length']} "
                                     "(truncated or corrupt video)")

    def load(self, i: int, frames: bool = True) -> Episode:
        entry = self.entries[i]
        cols = self.read_table(i)
        n = entry["length"]
        if frames:
            imgs = np.stack(list(self._video_frames(i)))
            if len(imgs) != n:
                raise EpisodeFormatError(f"{self.root}: episode {entry['episode_index']}: {self.video_path(i)} has "
                                         f"{len(imgs)} frames, index says {n}")
        else:
            imgs = np.zeros((n, 0, 0, 3), dtype=np.uint8)
        meta = {k: v for k, v in entry.items()
                if k not in ("episode_index", "task", "instruction", "length", "success")}
        return Episode(frames=imgs, timestamps=cols["timestamp"].astype(np.float64),
                       actions=cols.get("action"), states=cols.get("state"),
                       instruction=entry.get("instruction", ""), task=entry.get("task", ""),
                       success=entry.get("success"), metadata=meta, index=entry["episode_index"])

    def iter_frames(self, i: int) -> Iterator[Tuple[np.ndarray, Dict[str, Any]]]:
        """Stream (frame, row) pairs of episode i without holding the whole video in memory."""
        cols = self.read_table(i)
        n = self.entries[i]["length"]
        for k, frame in enumerate(self._video_frames(i)):
            if k >= n:
                break
            yield frame, {name: col[k] for name, col in cols.items()}

    def latents_dir(self, name: str) -> Path:
        return self.root / "latents" / name


class VideoFolder:
    """A folder of plain video files read as unlabelled episodes (one file = one episode)."""

    def __init__(self, root: str | Path, size: Optional[Tuple[int, int]] = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise EpisodeFormatError(f"{self.root}: not a directory")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if not self.files:
            raise EpisodeFormatError(f"{self.root}: no video files ({', '.join(VIDEO_SUFFIXES)})")
        self.size = size
        self.entries = [{"episode_index": i, "task": "", "instruction": "", "source_file": str(p)}
                        for i, p in enumerate(self.files)]

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> Episode:
        return self.load(i)

    def load(self, i: int, frames: bool = True) -> Episode:
        path = self.files[i]
        imgs = read_video(path, self.size)
        fps = video_fps(path)
        return Episode(frames=imgs, timestamps=np.arange(len(imgs), dtype=np.float64) / fps,
                       metadata={"source_file": str(path), "fps": fps}, index=i)

    def iter_frames(self, i: int) -> Iterator[Tuple[np.ndarray, Dict[str, Any]]]:
        fps = video_fps(self.files[i])
        for k, frame in enumerate(iter_video(self.files[i], self.size)):
            yield frame, {"frame_index": k, "timestamp": k / fps}


def is_lerobot_v3(path: str | Path) -> bool:
    """Whether ``path`` holds a LeRobotDataset v3.x (meta/info.json with codebase_version "v3.*")."""
    info_path = Path(path) / "meta" / "info.json"
    if not info_path.is_file():
        return False
    try:
        version = json.loads(info_path.read_text()).get("codebase_version")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError):
        return False
    return isinstance(version, str) and version.startswith("v3.")


def open_episodes(path: str | Path, size: Optional[Tuple[int, int]] = None):
    """An episode dataset directory, a LeRobotDataset v3 directory (read as episodes; ``size`` resizes its
    frames), or a folder of video files read as unlabelled episodes."""
    path = Path(path)
    if is_lerobot_v3(path):
        from .lerobot import LeRobotV3Dataset

        return LeRobotV3Dataset(path, size)
    if (path / "meta" / "info.json").is_file():
        return EpisodeDataset(path)
    if not path.exists():
        raise EpisodeFormatError(f"{path}: does not exist")
    return VideoFolder(path, size)


# ---------------------------------------------------------------------------- helpers
def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise EpisodeFormatError(f"{path}: corrupt JSON ({e})") from e


def _read_index(path: Path) -> List[dict]:
    if not path.exists():
        return []
    entries = []
    with open(path) as f:
        lines = f.read().split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
            int(e["episode_index"]), int(e["length"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            if lineno == len(lines):  # a crash mid-append leaves a partial last line: that episode never committed
                break
            raise EpisodeFormatError(f"{path}:{lineno}: corrupt index line ({err})") from err
        entries.append(e)
    return entries


def _truncate_torn_line(path: Path) -> None:
    """Cut a partial last line (no newline: a crash mid-append) off the index file."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block, pos = 65536, size
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            pos = start
        f.truncate(0)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def summarize(dataset: EpisodeDataset) -> dict:
    """Counts per task and success rate: what `lapa data info` prints."""
    by_task: Dict[str, dict] = {}
    for e in dataset.entries:
        t = by_task.setdefault(e.get("task") or "?", {"episodes": 0, "frames": 0, "successes": 0})
        t["episodes"] += 1
        t["frames"] += e["length"]
        t["successes"] += bool(e.get("success"))
    return {"root": str(dataset.root), "episodes": len(dataset), "frames": sum(e["length"] for e in dataset.entries),
            "fps": dataset.info.fps, "image": [dataset.info.image_height, dataset.info.image_width],
            "actions": dataset.info.action_names, "states": dataset.info.state_names, "tasks": by_task}


__all__: Sequence[str] = ["Episode", "DatasetInfo", "EpisodeWriter", "EpisodeDataset", "VideoFolder",
                          "open_episodes", "is_lerobot_v3", "EpisodeFormatError", "summarize"]
